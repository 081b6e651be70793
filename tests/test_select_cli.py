"""Selection end to end: the same seed gives the same cell in every supernet mode, bad
selection input is refused by the CLI with one line (exit 2, nothing written), and
``attnas derive CKPT --select RULE`` re-runs a selection from a real search checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from cliargs import search_argv

from datamodules import VideoDataModule
from datamodules.synth import ensure_synthetic
from derive import load_genotype
from derive.callbacks import GenotypeWriter
from supernet.app.cli import main as attnas
from supernet.search import SearchModule
from supernet.space import NUM_OPS

# tiny everything: 2 classes, 16 px, 8 frames, a 1-stage-per-width proxy
PROXY = {"widths": [8, 16, 32], "depths": [1, 1, 1], "stem_width": 8}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "data", classes=2,
                            videos_per_class=12, frames=8, size=16, seed=3, workers=1)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ------------------------------------------------- same seed -> same genotype, every mode
def _search_and_select(root: Path, out: Path, supernet: str, select: str) -> dict:
    """A tiny seeded search (3 steps) whose GenotypeWriter runs the selection rule at the
    end of fit; returns the genotype JSON it wrote and the final alpha/beta."""
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    dm = VideoDataModule(root=str(root), num_frames=8, crop_size=16, batch_size=4,
                         num_workers=0, search=True, cache="memory")
    module = SearchModule(num_classes=dm.num_classes, backbone_kwargs=PROXY, num_nodes=2,
                          optimizer="adamw", lr=0.01, weight_decay=0.0, arch_lr=0.05,
                          supernet=supernet, select=select, select_val_batches=1,
                          select_calib_batches=1)
    init = module.arch.alpha.detach().clone()
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(out),
                         callbacks=[GenotypeWriter(draw=False)])
    trainer.fit(module, datamodule=dm)
    doc = json.loads((out / "genotype.json").read_text())
    doc["_arch"] = (module.arch.alpha.detach().clone(), module.arch.beta.detach().clone())
    doc["_moved"] = not torch.equal(init, module.arch.alpha.detach())
    return doc


@pytest.mark.parametrize(("supernet", "select"), [("darts", "argmax"),
                                                  ("uniform", "perturb"),
                                                  ("single_path", "perturb")])
def test_same_seed_gives_the_same_genotype_for_every_mode(supernet: str, select: str,
                                                          synth: Path,
                                                          tmp_path: Path) -> None:
    first = _search_and_select(synth, tmp_path / "a", supernet, select)
    second = _search_and_select(synth, tmp_path / "b", supernet, select)
    for a, b in zip(first.pop("_arch"), second.pop("_arch")):
        assert torch.equal(a, b)
    # darts learns alpha; uniform / single_path keep it frozen at exactly uniform
    assert first.pop("_moved") == second.pop("_moved") == (supernet == "darts")
    assert first["nodes"] == second["nodes"] and len(first["nodes"]) == 2
    sel_a, sel_b = first["provenance"]["selection"], second["provenance"]["selection"]
    assert sel_a["rule"] == sel_b["rule"] == select
    assert first["provenance"]["supernet"] == supernet
    # every decision: same choice, runner-up, margin, interval and per-candidate scores
    assert sel_a["decisions"] == sel_b["decisions"]
    assert [d["what"] for d in sel_a["decisions"]] == ["op", "input", "op", "input"]
    assert len(sel_a["decisions"][0]["scores"]) == NUM_OPS
    if select == "perturb":  # a real, data-driven selection: clips scored, intervals given
        assert sel_a["clips"] > 0
        assert all(d["ci"] is not None for d in sel_a["decisions"] if d["runner_up"])
        assert len(set(sel_a["decisions"][0]["scores"].values())) > 1
    else:
        assert sel_a["clips"] == 0


# ------------------------------------------------------------------ the CLI, real runs
def _search_args(root: Path, out: Path, *extra: str) -> list[str]:
    return search_argv(root, out, PROXY, *extra)


@pytest.fixture(scope="module")
def searched(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a tiny real darts search (1 epoch, 2 batches; round 1's rule)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs")
    assert attnas(_search_args(synth, out, "--model.strategy=darts",
                               "--model.select=argmax")) == 0
    return sorted((out / "search").glob("version_*"))[-1]


def _one_error_line(capsys: pytest.CaptureFixture, prog: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"attnas {prog}: error: "), err
    return lines[0]


def _bad_search(case: str, synth: Path, ckpt: Path, out: Path) -> tuple[list[str], list[str]]:
    """argv of a search that must be refused, and what its error line must say."""
    if case == "unknown_mode":
        return (_search_args(synth, out, "--model.strategy=spos"),
                ["'spos'", "darts, single_path, uniform"])
    if case == "unknown_rule":
        return (_search_args(synth, out, "--model.select=best"),
                ["'best'", "alone, argmax, perturb, perturb_factors"])
    if case == "no_val_split":  # a training list only: the root given holds no val.txt
        return (_search_args(out.parent / "noval", out, f"--data.train_list={synth}/train.txt",
                             "--model.select=perturb"),
                ["'perturb'", "no validation split"])
    assert case == "resume_other_mode"  # a darts checkpoint resumed as a uniform search
    return (_search_args(synth, out, f"--ckpt_path={ckpt}", "--model.strategy=uniform"),
            ["darts supernet", "--model.strategy darts"])


@pytest.mark.parametrize("case", ["unknown_mode", "unknown_rule", "no_val_split",
                                  "resume_other_mode"])
def test_bad_search_input_exits_2_with_one_line_and_writes_nothing(
        case: str, synth: Path, searched: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    ckpt = searched / "checkpoints" / "last.ckpt"
    argv, needles = _bad_search(case, synth, ckpt, tmp_path / "out")
    before = _files(searched)
    capsys.readouterr()
    assert attnas(argv) == 2
    line = _one_error_line(capsys, "search")
    for needle in needles:
        assert needle in line, (needle, line)
    assert _files(tmp_path / "out") == []  # no genotype, no config, no checkpoint
    assert _files(searched) == before


def test_derive_unknown_rule_exits_2_and_writes_nothing(searched: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    ckpt = searched / "checkpoints" / "last.ckpt"
    before = _files(searched)
    capsys.readouterr()
    assert attnas(["derive", str(ckpt), "--select", "best", "-o",
                   str(tmp_path / "cell.json")]) == 2
    line = _one_error_line(capsys, "derive")
    assert "'best'" in line and "alone, argmax, perturb, perturb_factors" in line
    assert _files(tmp_path) == []
    assert _files(searched) == before  # no derived.json next to the run either
    # the options are parsed by jsonargparse: --data.KEY VALUE overrides reach the data,
    # and a bad flag or value is one line naming it
    for argv, says in ((["--select", "perturb", "--data.root", str(tmp_path / "nowhere"),
                         "--data.num_workers", "0"], str(tmp_path / "nowhere")),
                       (["--val-batches", "x"], "--val-batches: 'x' is not valid"),
                       (["--frobnicate", "1"], "unrecognized arguments: --frobnicate 1")):
        assert attnas(["derive", str(ckpt), *argv, "-o", str(tmp_path / "cell.json")]) == 2
        assert says in _one_error_line(capsys, "derive")
    assert _files(tmp_path) == [] and _files(searched) == before


def test_derive_reruns_perturb_selection_from_a_checkpoint(
        searched: Path, synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = searched / "checkpoints" / "last.ckpt"
    cell = tmp_path / "cell.json"
    torch.set_num_threads(1)
    code = attnas(["derive", str(ckpt), "--select", "perturb", "--val-batches", "1",
                   "--calib-batches", "1", "-o", str(cell), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert cell.is_file() and cell.with_suffix(".png").stat().st_size > 0
    g = load_genotype(cell)
    assert g.num_nodes == 2
    prov = g.provenance
    # the data came from the run's saved settings (no --data.* given)
    assert prov["dataset"] == str(synth) and prov["checkpoint"] == str(ckpt)
    sel = prov["selection"]
    assert sel["rule"] == "perturb" and prov["select"] == "perturb"
    assert sel["clips"] > 0
    assert [d["what"] for d in sel["decisions"]] == ["op", "input", "op", "input"]
    decided = [d for d in sel["decisions"] if d["runner_up"] is not None]
    assert len(decided) == 3  # node 0's input has no alternative
    for d in decided:
        lo, hi = d["ci"]
        assert lo <= d["margin"] <= hi
        assert isinstance(d["significant"], bool)
        assert d["margin"] >= 0.0  # the winner scores at least as well as the runner-up
    assert [n.op for n in g.nodes] == [d["choice"] for d in sel["decisions"]
                                       if d["what"] == "op"]


def test_a_selection_of_coin_tosses_warns(synth: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    """Three arch steps leave alpha near uniform: every argmax decision is flagged, and the
    search says that its supernet has not learned enough to choose."""
    doc = _search_and_select(synth, tmp_path / "flat", "darts", "argmax")
    decided = [d for d in doc["provenance"]["selection"]["decisions"] if d["runner_up"]]
    assert decided and all(d["significant"] is False for d in decided)
    out = capsys.readouterr().out
    assert "every decision is a coin toss" in out and "search longer" in out


def test_derive_with_a_budget_from_a_checkpoint(searched: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """``attnas derive --cost-target`` re-selects an unbudgeted search's supernet within a
    budget (argmax needs no data: the clip comes from the checkpoint); a budget below the
    cheapest cell is refused with one line and writes nothing."""
    ckpt = searched / "checkpoints" / "last.ckpt"
    cell = tmp_path / "cell.json"
    assert attnas(["derive", str(ckpt), "--select", "argmax", "--cost-target", "0.5x",
                   "-o", str(cell), "--quiet"]) == 0, capsys.readouterr().err
    prov = load_genotype(cell).provenance
    budget = prov["selection"]["budget"]
    assert budget["target"] == "0.5x" and budget["macs"] <= budget["target_macs"]
    assert load_genotype(cell).inner_ratio == budget["inner_ratio"] == prov["cost"]["inner_ratio"]
    assert prov["cost"]["clip"] == [8, 16, 16]
    capsys.readouterr()
    low = tmp_path / "low.json"
    assert attnas(["derive", str(ckpt), "--cost-target", "0.001x", "-o", str(low)]) == 2
    assert "below the cheapest cell" in _one_error_line(capsys, "derive")
    assert not low.exists()
    assert attnas(["derive", str(ckpt), "--cost-target", "3xfoo", "-o", str(low)]) == 2
    assert "unknown block 'foo'" in _one_error_line(capsys, "derive")
