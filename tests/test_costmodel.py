"""The cost model of the space: its table equals FlopCounterMode on built cells, the
expected-cost term moves alpha toward cheaper ops, budgets are respected by the selection
rules and bad budgets are refused before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cliargs import search_argv

from datamodules.synth import ensure_synthetic
from derive.select import select_cell
from supernet import create_backbone
from supernet.app.cli import main as attnas
from supernet.app.cost_cli import main as cost_main
from supernet.cells import FixedCell
from supernet.costmodel import CellBudget, SpaceCost, fixed_cell_macs, parse_cost_target
from supernet.counting import count_flops, count_params
from supernet.search import SearchModule
from supernet.space import OP_NAMES, OPS

PROXY = {"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}
CLIP = (8, 16, 16)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def space() -> SpaceCost:
    return SpaceCost("proxy", None, CLIP, num_nodes=2, inner_ratio=0.5, position="sincos",
                     backbone_kwargs=PROXY)


@pytest.mark.parametrize("ratio", [1 / 8, 1 / 4, 1 / 2])
def test_table_matches_flop_counter_on_built_cells(space: SpaceCost, ratio: float) -> None:
    """Every candidate at every width: fixed part + op = FlopCounterMode on the real cell
    (one node per candidate pair), MACs and parameters, exactly."""
    table = space.at(ratio)
    for a, b in zip(OP_NAMES[:12], OP_NAMES[12:]):  # each op once, a map and a dot per cell
        nodes = [(a, 0), (b, 1)]
        assert table.macs([a, b]) == fixed_cell_macs(space.shapes, nodes, inner_ratio=ratio,
                                                     position="sincos")
        params = 0
        for c, *_ in space.shapes:
            params += count_params(FixedCell(c, nodes, inner_ratio=ratio, position="sincos"))
        assert table.params([a, b]) == params


def test_a_network_with_cells_costs_the_table_more_than_without(space: SpaceCost) -> None:
    """The positions and shapes the model reads are those of the backbone: inserting the
    cell into the real network adds exactly its table cost."""
    nodes = [("dot.spatiotemporal.softmax", 0), ("map.temporal.sigmoid", 0)]
    shape = (1, 3, *CLIP)
    with torch.device("meta"):
        bare = create_backbone("proxy", 5, block="none", **PROXY)
        cell = create_backbone("proxy", 5, block="cell", **PROXY,
                               block_kwargs={"nodes": nodes, "position": "sincos"})
    extra = count_flops(cell, shape)["macs"] - count_flops(bare, shape)["macs"]
    assert extra == space.table.macs([n for n, _ in nodes])
    nonlocal_net = create_backbone("proxy", 5, block="nonlocal", **PROXY)
    bare_cpu = create_backbone("proxy", 5, block="none", **PROXY)
    assert (count_flops(nonlocal_net, shape)["macs"] - count_flops(bare_cpu, shape)["macs"]
            == space.block("nonlocal")["macs"] == space.resolve_target("1x"))


def test_parse_cost_target() -> None:
    assert parse_cost_target(0.05) == ("gmacs", 0.05)
    assert parse_cost_target("0.05") == ("gmacs", 0.05)
    assert parse_cost_target("0.5x") == ("block", (0.5, "nonlocal"))
    assert parse_cost_target("a2") == ("block", (1.0, "a2"))
    assert parse_cost_target("2xa2") == ("block", (2.0, "a2"))
    for bad, needle in ((0, "> 0"), (-1.0, "> 0"), ("0x", "> 0"), ("foo", "unknown block"),
                        ("2xfoo", "unknown block"), ("nan", "> 0"), (True, "expected")):
        with pytest.raises(ValueError, match=needle):
            parse_cost_target(bad)


def test_expected_cost_is_differentiable_and_moves_alpha_to_cheaper_ops() -> None:
    """Accuracy left out (indifferent): Adam on the cost term alone moves alpha from
    uniform toward the cheap map ops, and the expected MACs fall to the target."""
    module = SearchModule(num_classes=2, backbone_kwargs=PROXY, num_nodes=2,
                          strategy="darts", cost_target="0.6x", cost_weight=1.0)
    module.clip = CLIP
    budget = module.cost_budget()
    space = budget.space
    arch = module.arch
    before = float(space.expected_macs(arch.op_weights().detach()))
    reachable = max(budget.target, space.cheapest())  # at the supernet's width
    assert before > reachable  # uniform mixtures cost more than the target
    opt = torch.optim.Adam([arch.alpha], lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        term = module.supernet_strategy.cost_term(module)
        assert term.requires_grad
        term.backward()
        opt.step()
    after = float(space.expected_macs(arch.op_weights().detach()))
    assert after < before and after <= reachable * 1.05
    w = arch.op_weights().detach()
    dot = torch.tensor([op.family == "dot" for op in OPS])
    assert (w[:, dot].sum(-1) < 0.5).all()  # mass moved from dot products to maps
    assert float(module.supernet_strategy.cost_term(module).detach()) < 0.05


def test_argmax_respects_the_budget_and_fits_the_width(space: SpaceCost) -> None:
    """alpha points at the dearest op; a budget that only a map node can meet at node 1
    makes argmax take the best admissible op, list what it excluded, and fit the width."""
    model = create_backbone("proxy", 5, block="search", **PROXY,
                            block_kwargs={"num_nodes": 2, "position": "sincos"})
    low = space.at(1 / 32)  # the narrowest width of the grid: feasibility is judged there
    dear = OP_NAMES[max(range(len(OP_NAMES)), key=lambda o: low.op_macs[o])]
    model.arch.set_one_hot([(dear, 0), (dear, 1)])
    cheap = min(low.op_macs)
    # node 0 can take the dearest op; node 1 then only one of the cheapest
    target = low.fixed_macs + low.op_macs[OP_NAMES.index(dear)] + cheap
    budget = CellBudget(space, target, "test")
    sel = select_cell(model, "argmax", budget=budget)
    assert sel.nodes[0].op == dear and "0" not in sel.budget["excluded"]
    assert low.op_macs[OP_NAMES.index(sel.nodes[1].op)] == cheap
    assert dear in sel.budget["excluded"]["1"]
    assert sel.budget["macs"] <= target
    # the fitted width is the widest of the grid that fits: one step wider does not
    ratio = sel.budget["inner_ratio"]
    ops = [n.op for n in sel.nodes]
    wider = [w for w in budget.widths if w > ratio]
    assert not wider or space.at(wider[0]).macs(ops) > target
    assert "excluded by the budget" in sel.report()


def test_fit_lands_within_ten_percent_of_a_reachable_target() -> None:
    space = SpaceCost("proxy", None, (32, 24, 24), num_nodes=3, position="sincos")
    ops = ["dot.temporal.identity", "map.spatiotemporal.softmax", "dot.spatial.identity"]
    for spec in ("0.5x", "1x", "2x"):
        target = space.resolve_target(spec)
        ratio, macs, _ = CellBudget(space, target, spec).fit(ops)
        assert 0.9 * target <= macs <= target, (spec, ratio, macs, target)


def test_a_small_budget_buys_fewer_wider_nodes(space: SpaceCost) -> None:
    """With ``min_width`` the budget also sets the node count: K narrow nodes become fewer
    nodes at >= min_width, the leading ones; the kept cell's cost is FlopCounterMode's."""
    ops = ["dot.spatiotemporal.softmax", "dot.spatial.softmax"]
    two = space.at(0.25, 2).macs(ops)
    one = space.at(0.5, 1).macs(ops[:1])
    target = min(two, one) - 1  # 2 nodes only fit below C/4, 1 node fits above it
    k, ratio, macs, params = CellBudget(space, target, "t", min_width=0.25).fit_size(ops)
    assert k == 1 and 0.25 <= ratio < 0.5 and macs <= target
    assert macs == fixed_cell_macs(space.shapes, [(ops[0], 0)], inner_ratio=ratio,
                                   position="sincos")
    # without min_width the same budget keeps both nodes, narrower
    k2, ratio2, macs2, _ = CellBudget(space, target, "t").fit_size(ops)
    assert k2 == 2 and ratio2 < 0.25 and macs2 <= target
    # a budget so small that no node reaches min_width: one node, as wide as it fits
    low = space.at(1 / 32, 1).macs(ops[:1])
    k3, ratio3, _, _ = CellBudget(space, low, "t", min_width=0.5).fit_size(ops)
    assert (k3, ratio3) == (1, 1 / 32)
    for bad in (-0.1, 1.5, "0.25", True):
        with pytest.raises(ValueError, match="cost_min_width must be a number in"):
            CellBudget(space, target, "t", min_width=bad)  # type: ignore[arg-type]


def test_selection_drops_trailing_nodes_and_says_so(space: SpaceCost) -> None:
    model = create_backbone("proxy", 5, block="search", **PROXY,
                            block_kwargs={"num_nodes": 2, "position": "sincos"})
    ops = ["dot.spatiotemporal.softmax", "map.temporal.sigmoid"]
    model.arch.set_one_hot([(ops[0], 0), (ops[1], 1)])
    target = space.at(0.25, 2).macs(ops) - 1  # two nodes only fit below C/4
    sel = select_cell(model, "argmax", budget=CellBudget(space, target, "t", min_width=0.25))
    assert [n.op for n in sel.nodes] == ops[:1]
    assert sel.budget["dropped"] == [[ops[1], 1]] and sel.budget["min_width"] == 0.25
    assert sel.budget["inner_ratio"] >= 0.25 and sel.budget["macs"] <= target
    assert "1 trailing node(s) dropped to keep the inner ratio >= 0.25" in sel.report()


# ---------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "data", classes=2,
                            videos_per_class=12, frames=8, size=16, seed=3, workers=1)


def _search(root: Path, out: Path, *extra: str) -> list[str]:
    return search_argv(root, out, PROXY, *extra)


@pytest.mark.parametrize(("target", "needles"), [
    ("0.01x", ["below the cheapest cell", "MMACs"]),
    ("-1", ["must be > 0"]),
    ("0x", ["must be > 0"]),
    ("2xfoo", ["unknown block 'foo'", "nonlocal"]),
])
def test_bad_budget_is_refused_before_training(target: str, needles: list[str], synth: Path,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert attnas(_search(synth, out, f"--model.cost_target={target}")) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not list(out.rglob("*.ckpt")) and not list(out.rglob("genotype.json"))


def doc_width(path: Path) -> float:
    return float(json.loads(path.read_text())["cell"]["inner_ratio"])


def test_bad_node_width_is_refused_before_training(synth: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert attnas(_search(synth, out, "--model.cost_target=1x",
                          "--model.cost_min_width=1.5")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "cost_min_width must be a number in [0, 1]" in err[0], err
    assert not list(out.rglob("*.ckpt"))


def test_budgeted_search_writes_a_cell_within_budget(synth: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """A real search with a budget: the genotype's cell is fitted to it, records its cost
    where it was searched, and ``attnas cost`` reports it next to the baselines."""
    out = tmp_path / "out"
    assert attnas(_search(synth, out, "--model.cost_target=0.5x", "--model.strategy=uniform",
                          "--model.select=perturb", "--model.select_val_batches=1",
                          "--model.select_calib_batches=1")) == 0
    path = sorted((out / "search").glob("version_*"))[-1] / "genotype.json"
    doc = json.loads(path.read_text())
    budget = doc["provenance"]["selection"]["budget"]
    cost = doc["provenance"]["cost"]
    assert budget["target"] == "0.5x" and budget["macs"] <= budget["target_macs"]
    assert doc["cell"]["inner_ratio"] == budget["inner_ratio"] == cost["inner_ratio"]
    assert cost["macs"] == budget["macs"] and cost["clip"] == list(CLIP)
    assert abs(budget["target_macs"] - 0.5 * cost["nonlocal_macs"]) <= 1
    assert "budget 0.5x" in capsys.readouterr().out
    assert cost_main(["--backbone", "proxy", "--block", str(path), "--no-latency",
                      "--frames", "8", "--size", "16"]) == 0
    table = capsys.readouterr().out
    assert "nonlocal" in table and "a2" in table and "+GMACs" in table
    # re-derive from the checkpoint with a node width: fewer nodes, each >= 1/2 wide
    ckpt = sorted((out / "search").rglob("last.ckpt"))[-1]
    fewer = tmp_path / "fewer.json"
    assert attnas(["derive", str(ckpt), "--select", "argmax", "--cost-min-width", "0.5",
                   "-o", str(fewer), "--quiet"]) == 0
    doc = json.loads(fewer.read_text())
    budget = doc["provenance"]["selection"]["budget"]
    # the search's own cell (2 nodes) had to be narrower than 1/2: one node is dropped
    assert doc_width(path) < 0.5
    assert len(doc["nodes"]) == 1 and len(budget["dropped"]) == 1
    assert budget["macs"] <= budget["target_macs"]
    assert doc["provenance"]["cost"]["macs"] == budget["macs"]
    capsys.readouterr()
    assert attnas(["derive", str(ckpt), "--cost-min-width", "-1", "-o",
                   str(tmp_path / "x.json")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "cost_min_width" in err[0] and not (tmp_path / "x.json").exists()


def test_cost_space_prints_the_table(capsys: pytest.CaptureFixture) -> None:
    assert cost_main(["--space", "--backbone", "proxy"]) == 0
    text = capsys.readouterr().out
    for name in OP_NAMES + ("fixed", "cheapest cell", "block nonlocal", "block a2"):
        assert name in text
