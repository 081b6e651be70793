"""The two-stream search: the space's architecture files, the weight-sharing supernet's
exactness (kernel and channel sharing), every stage of the progressive search through the
real Trainer handing a valid result to the next, resumption, determinism, the searched
network in retrain, and bad input refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from datamodules.synth import ensure_synthetic
from supernet import create_backbone
from supernet.app.cli import main as attnas
from supernet.backbones import FUSION_SITES
from supernet.costmodel import TwoStreamBudget, parse_twostream_target, twostream_costs
from supernet.counting import count_flops
from supernet.twostream import VARIABLES, TwoStreamArch, load_arch
from supernet.twostream.elastic import _ElasticTemporalConv
from supernet.twostream.search import TwoStreamSearch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_architecture_file_round_trip_and_refusals(tmp_path: Path) -> None:
    arch = TwoStreamArch.create({"frame_ratio": 8, "fusion": "sum"}, "fusion",
                                ["frame_ratio", "beta_inv", "slow_kt", "fast_kt", "fusion",
                                 "fusion_at"])
    path = arch.save(tmp_path / "a.json")
    back = load_arch(path)
    assert back.values == arch.values and back.decided == arch.decided
    doc = json.loads(path.read_text())
    doc["values"]["fusion"] = "mean"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="fusion: 'mean' is not one of tconv, tsample"):
        load_arch(tmp_path / "bad.json")
    doc["values"]["fusion"], doc["version"] = "sum", 9
    (tmp_path / "v9.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="version 9"):
        load_arch(tmp_path / "v9.json")
    with pytest.raises(ValueError, match="needs the cell's genotype"):
        TwoStreamArch.create({"attention": "cell"})


def test_every_value_of_the_space_has_its_own_cost(capsys: pytest.CaptureFixture) -> None:
    """The cost model of the space: each value of each variable changes the MACs or the
    params of SlowFast's point (the values were chosen so that costs differ), and the
    table agrees with counting the built network; `attnas cost --space` prints it."""
    rows = twostream_costs((16, 24, 24), 8, (1, 1, 1, 1), 5)
    for var in VARIABLES:
        mine = [r for r in rows if r["variable"] == var.name]
        assert {r["value"] for r in mine} == set(var.values) - {"cell"}
        default = next(r for r in mine if r["default"])
        for r in mine:
            assert r["default"] or (r["macs"], r["params"]) != (default["macs"],
                                                                  default["params"]), r
    r = next(r for r in rows if r["variable"] == "fusion" and r["value"] == "sum")
    net = create_backbone("twostream", 5, arch=TwoStreamArch.create({"fusion": "sum"}))
    assert r["macs"] == count_flops(net, (1, 3, 16, 24, 24))["macs"]
    assert attnas(["cost", "--space", "--backbone", "twostream", "--frames", "16"]) == 0
    assert "beta_inv       2" in capsys.readouterr().out
    # at the searched network's size: without the stems' max-pool, 4x the positions
    nopool = twostream_costs((16, 24, 24), 8, (1, 1, 1, 1), 5, stem_pool=False)
    assert nopool[0]["macs"] > 1.5 * rows[0]["macs"]
    assert attnas(["cost", "--space", "--backbone", "twostream", "--frames", "16",
                   "--num-classes", "5", "--backbone-kwargs", '{"stem_pool": false}']) == 0
    out = capsys.readouterr().out
    assert "no stem pool" in out and f"{nopool[0]['macs'] / 1e6:10.3f}" in out
    assert attnas(["cost", "--space", "--backbone", "twostream",
                   "--backbone-kwargs", '{"frame_ratio": 2}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key(s) ['frame_ratio']" in err[0]


def test_kernel_sharing_is_exact() -> None:
    """A 5-tap temporal conv pinned to kernel 3 is exactly the 3-tap conv of its centre."""
    conv = torch.nn.Conv3d(4, 6, (5, 1, 1), padding=(2, 0, 0), bias=False)
    x = torch.randn(2, 4, 7, 3, 3)
    mask = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0])
    elastic = _ElasticTemporalConv(conv, lambda device: mask)
    ref = F.conv3d(x, conv.weight[:, :, 1:4], None, 1, (1, 0, 0))
    torch.testing.assert_close(elastic(x), ref)


def test_pinned_width_zeroes_and_freezes_the_unused_fast_channels() -> None:
    """beta_inv pinned to 8 in a fast stream built at 1/2: only the first quarter of each
    fast layer's channels carries signal and gets gradient."""
    m = TwoStreamSearch(5, stage="streams")
    m.choices.restrict("beta_inv", [8])
    m.train()
    block = m.model.net.stages["fast_res3"].blocks[0]
    seen = {}
    hook = block.register_forward_hook(lambda mod, i, o: seen.setdefault("out", o))
    m(torch.randn(2, 3, 16, 24, 24)).sum().backward()
    hook.remove()
    conv = block.shortcut[0]  # the residual branch starts at 0 (last BN gamma = 0)
    active = conv.out_channels * 2 // 8
    assert seen["out"][:, active:].abs().sum() == 0
    assert seen["out"][:, :active].abs().sum() > 0
    assert conv.weight.grad[active:].abs().sum() == 0
    assert conv.weight.grad[:active].abs().sum() > 0


def _data(tmp_path: Path) -> Path:
    return ensure_synthetic(tmp_path / "data", classes=2, videos_per_class=6, frames=8,
                            size=16, seed=2, workers=1)


def _argv(root: Path, out: Path, *extra: str) -> list[str]:
    return ["search", "twostream", "-c", "configs/search/twostream.yaml", f"--out={out}",
            f"--data.root={root}", "--data.synthetic=false", "--data.num_frames=8",
            "--data.crop_size=16", "--data.batch_size=4", "--data.num_workers=0",
            "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--model.select_val_batches=2", *extra]


def test_progressive_search_runs_every_stage_resumes_and_repeats(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _data(tmp_path)
    out = tmp_path / "ts"
    assert attnas(_argv(root, out)) == 0
    results = {s: load_arch(out / f"{s}.json") for s in ("streams", "fusion", "attention")}
    assert results["streams"].decided == ("frame_ratio", "beta_inv", "slow_kt", "fast_kt")
    # the config searches streams and fusion with a non-local block in the slow pathway,
    # and the file records the network it evaluated and the size it was searched at
    assert results["streams"].values["attention"] == "nonlocal"
    assert results["streams"].network == {"width_div": 8, "depths": [1, 1, 1, 1],
                                          "stem_pool": False}
    assert set(results["attention"].decided) == {v.name for v in VARIABLES}
    for earlier, later in (("streams", "fusion"), ("fusion", "attention")):
        for name in results[earlier].decided:  # each stage keeps what the previous decided
            assert results[later].values[name] == results[earlier].values[name]
    final = results["attention"]
    assert set(final.provenance) == {"streams", "fusion", "attention"}
    assert final.provenance["attention"]["cost"]["macs"] > 0
    assert (out / "attention.png").stat().st_size > 0
    # resumable: every stage is done, nothing trains again
    capsys.readouterr()
    assert attnas(_argv(root, out)) == 0
    assert capsys.readouterr().out.count("skipped") == 3
    # the same seed gives the same architecture
    again = tmp_path / "again"
    assert attnas(_argv(root, again, "--stage=streams")) == 0
    assert load_arch(again / "streams.json").values == results["streams"].values
    # the searched network trains in retrain
    net = create_backbone("twostream", 2, arch=str(out / "attention.json"))
    frame_ratio = final.values["frame_ratio"]
    assert net.eval()(torch.randn(1, 3, 8, 16, 16)).shape == (1, 2)
    sites = FUSION_SITES[final.values["fusion_at"]]
    assert sorted(int(k) for k in net.laterals) == list(sites)
    assert net.frame_ratio == frame_ratio
    assert not any(isinstance(m, torch.nn.MaxPool3d) for m in net.slow_stem)  # from the file


def test_bad_input_is_refused_before_training(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    root = _data(tmp_path)
    out = tmp_path / "ts"
    assert attnas(_argv(root, out, "--stage=fusion")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs the previous stage's result" in err[0]
    assert attnas(_argv(root, out, "--data.num_frames=6")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a multiple of the fast/slow frame ratio" in err[0]
    assert not list(out.glob("*/version_*/checkpoints/*.ckpt"))  # nothing trained
    bad = TwoStreamArch.create(stage="streams",
                               decided=["frame_ratio", "beta_inv", "slow_kt", "fast_kt"]).to_dict()
    bad["values"]["fusion"] = "mean"
    out.mkdir(parents=True, exist_ok=True)
    (out / "streams.json").write_text(json.dumps(bad))
    assert attnas(_argv(root, out, "--stage=fusion")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'mean' is not one of" in err[0]
    assert attnas(_argv(root, out, "--stage=wide")) == 2
    assert attnas(_argv(root, tmp_path / "b", "--model.base_attention=cell")) == 2
    assert "unknown base_attention 'cell'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="leave block at 'none'"):
        create_backbone("twostream", 2, block="nonlocal")


@pytest.mark.parametrize("mode,rule", [("darts", "argmax"), ("single_path", "perturb")])
def test_a_stage_runs_in_every_supernet_mode(tmp_path: Path, mode: str, rule: str) -> None:
    root = _data(tmp_path)
    out = tmp_path / mode
    assert attnas(_argv(root, out, "--stage=streams", f"--model.supernet={mode}",
                        f"--model.select={rule}")) == 0
    arch = load_arch(out / "streams.json")
    record = arch.provenance["streams"]
    assert record["supernet"] == mode and record["selection"]["rule"] == rule
    assert len(record["selection"]["decisions"]) == 4


def test_frame_ratio_draws_follow_the_step_not_the_process() -> None:
    """In training, frame_ratio is drawn from a stream seeded by (seed, step): two modules (two
    DDP ranks, or a resumed run) draw the same values at the same steps."""
    draws = []
    for _ in range(2):
        m = TwoStreamSearch(5, stage="streams", base_attention="none")
        torch.manual_seed(len(draws))  # a different global RNG each time
        seq = []
        for step in range(12):
            m.model.generator = m._generator(step, 1)
            seq.append(m.choices.sample("frame_ratio", m.model.generator)[0])
        draws.append(seq)
    assert draws[0] == draws[1] and len(set(draws[0])) > 1


def test_budget_counts_the_built_network_and_refuses_bad_targets() -> None:
    net_cfg = {"width_div": 8, "depths": [1, 1, 1, 1], "stem_pool": False}
    budget = TwoStreamBudget("1x", net_cfg, (8, 16, 16), 5)
    point = {**TwoStreamArch.create().values, "frame_ratio": 2, "attention": "nonlocal"}
    built = create_backbone("twostream", 5, arch=TwoStreamArch.create(point, network=net_cfg))
    assert budget.macs(point) == count_flops(built, (1, 3, 8, 16, 16))["macs"]
    assert budget.target == budget.anchor == budget.macs(TwoStreamArch.create().values)
    assert TwoStreamBudget(0.001, net_cfg, (8, 16, 16), 5).target == 1_000_000
    assert parse_twostream_target("slowfast") == ("ratio", 1.0)
    assert parse_twostream_target("0.5x") == ("ratio", 0.5)
    for bad in (0, -1, "0x", "wide", "2xnonlocal", True):
        with pytest.raises(ValueError, match="expected a positive number of GMACs"):
            parse_twostream_target(bad)
    # frame_ratio 2 reads 4x the anchor's slow frames: no choice of the other stream variables
    # brings it back under SlowFast's point, so it is excluded; frame_ratio 8 always fits
    free = {v.name: v.values for v in VARIABLES if v.stage == "streams"}
    assert budget.admissible("frame_ratio", (2, 4, 8), point, free) in ([4, 8], [8])
    with pytest.raises(ValueError, match=r"below the cheapest network this stage can reach: "
                                         r"[\d.]+ MMACs \(frame_ratio 8, beta_inv 8, slow_kt 1"):
        TwoStreamBudget("0.1x", net_cfg, (8, 16, 16), 5).check(point, free)


def test_expected_cost_term_moves_darts_logits_to_cheaper_values() -> None:
    """Where accuracy is indifferent (the cost term alone), the darts objective's
    expected-cost term is differentiable and its steps lower the expected MACs below the
    target, favouring the cheap values (frame_ratio 8, beta_inv 8)."""
    m = TwoStreamSearch(5, stage="streams", supernet="darts", cost_target="0.8x",
                        stem_pool=False)
    m.clip = (8, 16, 16)
    term = m.cost_term()
    assert term.requires_grad and float(term.detach()) > 0  # uniform weights: over the budget
    opt = torch.optim.Adam(m.model.arch_parameters(), lr=0.1)
    for _ in range(40):
        opt.zero_grad()
        loss = m.cost_term()
        if float(loss.detach()) == 0:
            break
        loss.backward()
        opt.step()
    assert float(m.cost_term().detach()) == 0.0  # the expected network is within the budget
    for name, cheap in (("frame_ratio", 8), ("beta_inv", 8)):
        w = m.choices.weights(name)
        assert int(w.argmax()) == m.choices.candidates(name).index(cheap), (name, w)
    off = TwoStreamSearch(5, stage="streams", supernet="darts", cost_target="0.8x",
                          cost_weight=0.0)
    assert float(off.cost_term()) == 0.0 and not off.cost_term().requires_grad


def test_a_budgeted_stage_keeps_the_network_within_it(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    root = _data(tmp_path)
    out = tmp_path / "budget"
    assert attnas(_argv(root, out, "--stage=streams", "--model.cost_target=0.8x")) == 0
    arch = load_arch(out / "streams.json")
    record = arch.provenance["streams"]
    budget = record["selection"]["budget"]
    assert budget["target"] == "0.8x" and budget["target_macs"] == int(0.8 * budget["anchor_macs"])
    assert record["cost"]["macs"] == budget["macs"] <= budget["target_macs"]
    assert budget["excluded"]["frame_ratio"] and 8 not in budget["excluded"]["frame_ratio"]
    assert "excluded by the budget" in capsys.readouterr().out
    # refused before training: a target below the cheapest network, or not a target
    for bad, msg in (("0.05x", "below the cheapest network"), ("0", "must be > 0"),
                     ("nonlocal", "expected a positive number")):
        assert attnas(_argv(root, tmp_path / "bad", f"--model.cost_target={bad}")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    assert not list((tmp_path / "bad").glob("*/version_*/checkpoints/*.ckpt"))


def test_derive_points_a_stage_checkpoint_to_its_result(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "attnas_kind": "search", "attnas_stage": "fusion"}, ckpt)
    assert attnas(["derive", str(ckpt), "-o", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "twostream_fusion.json" in err[0] and "--stage fusion" in err[0]
    assert not (tmp_path / "g.json").exists()


def test_cost_of_a_searched_network_file(tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    """``attnas cost`` on an architecture file: the network the file describes (at its
    ``network`` size), named by the attention it inserts."""
    arch = TwoStreamArch.create({"frame_ratio": 8, "attention": "nonlocal"},
                                network={"width_div": 8, "depths": [1, 1, 1, 1],
                                         "stem_pool": False})
    path = arch.save(tmp_path / "a.json")
    assert attnas(["cost", "--backbone", "twostream", "--frames", "8", "--size", "16",
                   "--num-classes", "5", "--no-latency", "--json",
                   "--backbone-kwargs", json.dumps({"arch": str(path)})]) == 0
    res = json.loads(capsys.readouterr().out)
    net = create_backbone("twostream", 5, arch=str(path))
    assert res["block"] == "nonlocal" and res["block_params"] > 0
    assert res["macs"] == count_flops(net, (1, 3, 8, 16, 16))["macs"]
    assert attnas(["cost", "--backbone", "twostream", "--backbone-kwargs", "[1]"]) == 2
    assert "--backbone-kwargs must be a JSON object" in capsys.readouterr().err
