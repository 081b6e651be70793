"""The cost-aware section of the accuracy report: the budget table, its two targets (accuracy
vs non-local with a standard error, and the cells' real MACs vs the budget) and the Pareto
picture, from a results table like the one ``benchmarks.report`` builds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import SimpleNamespace

from benchmarks.pareto import budget_groups, cost_lines, pareto_plot

GROUP = "uniform+perturb+sincos+cost0.5x+5ep"


def _entry(key: str, kind: str, values: list[float], macs: float, params: float,
           group: str = "", block: str = "", label: str | None = None) -> dict:
    return {"key": key, "label": label or key, "kind": kind, "group": group, "block": block,
            "summary": False, "values": values, "n": len(values),
            "mean": statistics.fmean(values), "std": statistics.stdev(values),
            "macs": macs, "params": params}


def _cell(tmp_path: Path, name: str, target: int) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"nodes": [], "provenance": {
        "selection": {"budget": {"target_macs": target}}}}))
    return str(path)


def _table(tmp_path: Path, cell_macs: list[float]) -> list[dict]:
    base = 100e6
    table = [_entry("none", "baseline", [24.0, 25.0, 23.0], base, 1000),
             _entry("nonlocal", "baseline", [60.0, 64.0, 62.0], base + 40e6, 5000),
             _entry("b/nonlocal_sincos.json", "baseline", [90.0, 94.0, 92.0], base + 45e6, 5000,
                    label="nonlocal_sincos")]
    for i, m in enumerate(cell_macs):
        table.append(_entry(f"searched[{GROUP}]/s{i}", "searched", [70.0 + i, 68.0, 72.0],
                            base + m, 3000, group=GROUP,
                            block=_cell(tmp_path, f"c{i}", 20_000_000)))
    table.append(_entry("random@cost0.5x/0", "random_cost", [30.0, 40.0, 35.0], base + 19e6,
                        2000, group="cost0.5x", block=_cell(tmp_path, "r0", 20_000_000)))
    return table


def test_budget_table_checks_both_targets_with_standard_errors(tmp_path: Path) -> None:
    plan = SimpleNamespace(groups=["uniform+perturb+sincos+5ep", GROUP])
    assert budget_groups(plan) == [(GROUP, "0.5x")]
    text = "\n".join(cost_lines(plan, _table(tmp_path, [19.6e6, 20.4e6])))
    # searched runs: 70, 68, 72, 71, 68, 72 -> mean 70.17; nonlocal 62.0
    assert "| 0.5x (`uniform+perturb+sincos+cost0.5x+5ep`) | 20.0 | 20.0 (100%) |" in text
    assert "searched mean − nonlocal **+8.2 ± " in text
    assert "(6 runs of 2 cells; target ≥ +2.0): met." in text
    assert "Against `nonlocal_sincos`" in text and "-21.8 ±" in text
    assert "within 2% of the target (target ≤ 10 %): met." in text


def test_a_cell_that_ignores_its_budget_fails_the_cost_target(tmp_path: Path) -> None:
    plan = SimpleNamespace(groups=[GROUP])
    text = "\n".join(cost_lines(plan, _table(tmp_path, [20e6, 26e6])))
    assert "within 30% of the target (target ≤ 10 %): not met." in text


def test_each_budgeted_group_gets_its_own_row(tmp_path: Path) -> None:
    darts = "darts+argmax+sincos+cost0.5x"
    table = _table(tmp_path, [20e6])
    table.append(_entry(f"searched[{darts}]/s0", "searched", [40.0, 44.0, 42.0], 100e6 + 21e6,
                        3000, group=darts, block=_cell(tmp_path, "d0", 20_000_000)))
    plan = SimpleNamespace(groups=[GROUP, darts])
    text = "\n".join(cost_lines(plan, table))
    assert f"| 0.5x (`{GROUP}`) |" in text and f"| 0.5x (`{darts}`) | 20.0 | 21.0 (105%) |" in text
    # the darts group's cells are judged on their own runs: 42.0 - 62.0
    assert "searched mean − nonlocal **-20.0 ± " in text
    assert "a budgeted `darts` group trains its own supernets" in text
    only_uniform = "\n".join(cost_lines(SimpleNamespace(groups=[GROUP]), table))
    assert "budgeted `darts`" not in only_uniform and "`minw<r>` group" not in only_uniform
    table[-1]["group"] = f"{darts}+minw0.5"
    text = "\n".join(cost_lines(SimpleNamespace(groups=[GROUP, f"{darts}+minw0.5"]), table))
    assert "a `minw<r>` group keeps the most leading nodes" in text


def test_target_lines_say_when_a_group_is_incomplete_or_unresolved(tmp_path: Path) -> None:
    table = _table(tmp_path, [20e6, 20e6])
    plan = SimpleNamespace(groups=[GROUP], train_seeds=[0, 1, 2, 3])  # 2 cells x 4 = 8 runs
    text = "\n".join(cost_lines(plan, table))
    assert f"budget 0.5x (`{GROUP}`): searched mean − nonlocal" in text
    assert "(6 runs of 2 cells, incomplete: 6 of 8 runs; target ≥ +2.0): met so far." in text
    assert "| 70.2 ± 1.8 (6 of 8 runs) |" in text and "| 35.0 ± 5.0 (3 of 4 runs) |" in text
    # a complete group whose mean clears +2 by less than two standard errors
    for e in table:
        if e["kind"] == "searched":
            e["values"] = [30.0, 99.0, 65.0]
    text = "\n".join(cost_lines(SimpleNamespace(groups=[GROUP], train_seeds=[0, 1, 2]), table))
    assert "(6 runs of 2 cells; target ≥ +2.0): met in the mean, but not resolved" in text


def test_no_budgeted_group_means_no_section(tmp_path: Path) -> None:
    plan = SimpleNamespace(groups=["uniform+perturb+sincos+5ep"])
    assert cost_lines(plan, _table(tmp_path, [20e6])) == []


def test_pareto_plot_is_written(tmp_path: Path) -> None:
    out = pareto_plot(_table(tmp_path, [19e6, 21e6]), tmp_path / "pareto.png", "t")
    assert out is not None and out.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*.tmp*"))
