"""``attnas table report``: what each task's table says, as markdown and pictures.

For every task: the distribution of the tabled cells' mean test accuracy (a picture with
``none``, ``nonlocal``, ``nonlocal_sincos``, the three-node median and the top-10 marked),
the top-10, the seed spread, how the top 10 % of three-node cells differ from the rest
(families, dimensions, activations of their nodes), and the percentile of every cell the
project's benchmarks produced, by search group.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import cpu_name
from datamodules.atomic import atomic_write_text
from supernet.genotype import load_genotype
from supernet.space import FACTORS, parse_op

from .build import GENOTYPES_DIR
from .cells import parse_cell
from .leaderboard import leaderboard_markdown
from .store import TABLE_DIR, CellStats, Table
from .tasks import get_task

__all__ = ["write_report", "plot_task", "group_percentiles", "factor_shares",
           "discrimination_lines", "best_one_node"]

MARKED = ("none", "nonlocal", "nonlocal_sincos")
#: the one-node cells of the default space (2 families x 3 dimensions x 4 activations)
ONE_NODE_CELLS = 24


def plot_task(table: Table, path: str | Path) -> Path:
    """Strip + violin of the cells' mean test accuracy by kind (three-node, one-node,
    baselines), reference lines and the top-10 in red; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = table.stats()
    groups = {"three-node cells": [s for s in stats.values() if s.nodes == 3],
              "one-node cells": [s for s in stats.values() if s.nodes == 1],
              "other cells": [s for s in stats.values() if s.nodes not in (0, 1, 3)],
              "baselines": [s for s in stats.values() if s.nodes == 0]}
    groups = {k: v for k, v in groups.items() if v}
    top = {s.key for s in sorted(stats.values(), key=lambda s: -s.test_mean)[:10]}
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for i, cells in enumerate(groups.values()):
        values = [s.test_mean for s in cells]
        if len(values) > 3:
            parts = ax.violinplot(values, positions=[i], widths=0.8, showextrema=False)
            for body in parts["bodies"]:
                body.set_alpha(0.25)
        for j, s in enumerate(sorted(cells, key=lambda c: c.test_mean)):
            x = i + ((j * 0.618) % 1 - 0.5) * 0.5
            colour = "tab:red" if s.key in top else "tab:blue"
            ax.errorbar(x, s.test_mean, yerr=s.test_std, fmt="o", ms=3.5, color=colour,
                        alpha=0.8, elinewidth=0.6)
            if s.nodes == 0:
                ax.annotate(s.key, (x, s.test_mean), fontsize=7, xytext=(4, 0),
                            textcoords="offset points", va="center")
    three = table.three_node_means()
    if three:
        ax.axhline(three[len(three) // 2], color="grey", ls=":", lw=1,
                   label=f"three-node median {three[len(three) // 2]:.1f}")
    styles = {"none": "k--", "nonlocal": "g--", "nonlocal_sincos": "m--"}
    for key in MARKED:
        if key in stats:
            ax.axhline(stats[key].test_mean, color=styles[key][0], ls="--", lw=0.8,
                       label=f"{key} {stats[key].test_mean:.1f}")
    ax.set_xticks(range(len(groups)), [f"{k}\n(n={len(v)})" for k, v in groups.items()])
    ax.set_ylabel("test top-1 (%), mean ± std over seeds")
    task = get_task(table.task)
    ax.set_title(f"task {task.name}: {task.summary}\n(top-10 in red; protocol "
                 f"{table.protocol.fingerprint()})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def factor_shares(cells: Sequence[CellStats]) -> dict[str, Counter]:
    """Per factor (family, dimension, activation): the share of nodes with each value."""
    out: dict[str, Counter] = {f: Counter() for f in FACTORS}
    for s in cells:
        arch = s.key.split(";")[0]
        for part in arch.split("+"):
            op = parse_op(part.split("~")[0])
            for f, value in zip(FACTORS, op):
                out[f][value] += 1
    for counter in out.values():
        total = sum(counter.values()) or 1
        for k in counter:
            counter[k] = counter[k] / total
    return out


def group_percentiles(table: Table, folder: str | Path = GENOTYPES_DIR
                      ) -> list[tuple[str, list[tuple[str, CellStats | None]]]]:
    """The project's genotype files grouped by benchmark group (``searched_<group>__sN``,
    ``random_N[_budget]``): ``[(group, [(file stem, stats or None if not tabled)])]``."""
    stats = table.stats()
    groups: dict[str, list[tuple[str, CellStats | None]]] = defaultdict(list)
    for path in sorted(Path(folder).glob("*.json")):
        key = parse_cell(load_genotype(path)).key
        stem = path.stem
        m = re.match(r"searched_(.+)__s\d+$", stem)
        group = m.group(1) if m else re.sub(r"random_\d+", "random", stem)
        groups[group].append((stem, stats.get(key)))
    return sorted(groups.items())


def _fmt(s: CellStats) -> str:
    return f"{s.test_mean:.1f} ± {s.test_std:.1f}"


def discrimination_lines(table: Table) -> list[str]:
    """Whether the task can rank cells: conv alone (``none``) >= 20 points below the best
    cell, and the best cell <= 97 % (a task at its ceiling cannot rank the top)."""
    stats = table.stats()
    if "none" not in stats or len(stats) < 2:
        return []
    best = max(stats.values(), key=lambda s: s.test_mean)
    gap = best.test_mean - stats["none"].test_mean
    return ["", f"Does the task discriminate? `none` {_fmt(stats['none'])}, {gap:.1f} points "
            f"below the best cell (`{best.key}` {_fmt(best)}; target ≥ 20: "
            f"{'met' if gap >= 20 else 'not met'}); the best cell "
            f"{'is' if best.test_mean <= 97 else 'is not'} ≤ 97 %."]


def best_one_node(table: Table) -> CellStats | None:
    """The one-node cell with the highest mean test accuracy (``None`` if none is tabled)."""
    one = [s for s in table.stats().values() if s.nodes == 1]
    return max(one, key=lambda s: s.test_mean) if one else None


def _across_tasks(tables: Sequence[Table]) -> list[str]:
    tables = [t for t in tables if best_one_node(t) is not None]
    rows = [(t.task, best_one_node(t)) for t in tables]
    if len(rows) < 2:
        return []
    lines = ["## The best one-node cell of each task", "",
             "| task | best one-node cell | test % | family | dimension | one-node cells tabled |",
             "|---|---|---:|---|---|---:|"]
    kinds, complete = set(), True
    for table, (task, s) in zip(tables, rows):
        family, dimension, _ = parse_op(s.key.split(";")[0].split("~")[0])
        kinds.add((family, dimension))
        count = sum(c.nodes == 1 for c in table.stats().values())
        complete &= count >= ONE_NODE_CELLS
        lines.append(f"| {task} | `{s.key}` | {_fmt(s)} | {family} | {dimension} | "
                     f"{count} of {ONE_NODE_CELLS} |")
    verdict = ("differ in family or dimension between tasks, so a search that always picks "
               "one kind of cell is caught" if len(kinds) == len(rows) else
               "share a family and dimension on some tasks: a search that always picks that "
               "kind is not caught there")
    if not complete:
        verdict += (" -- so far: not every task has all its one-node cells, and a winner may "
                    "still change")
    return lines + ["", f"The winners {verdict}.", ""]


def _task_section(table: Table, root: Path) -> list[str]:
    stats = table.stats()
    task = get_task(table.task)
    png = plot_task(table, root / f"{table.task}.png")
    lines = [f"## Task `{task.name}`: {task.summary}", "",
             f"{len(table.rows)} runs of {len(stats)} cells "
             f"({sum(s.nodes == 3 for s in stats.values())} three-node, "
             f"{sum(s.nodes == 1 for s in stats.values())} one-node, "
             f"{sum(s.nodes == 0 for s in stats.values())} baselines).", "",
             f"![{task.name}]({png.name})", ""]
    refs = [f"`{k}` {_fmt(stats[k])}" for k in MARKED if k in stats]
    three = table.three_node_means()
    if three:
        refs.append(f"three-node median {three[len(three) // 2]:.1f}")
    lines += ["Reference points (test top-1 %, mean ± std): " + "; ".join(refs) + ".", ""]
    multi = [s for s in stats.values() if s.n >= 3]
    if multi:
        tight = sum(s.test_std <= 2.0 for s in multi)
        stds = sorted(s.test_std for s in multi)
        lines += [f"Seed spread: {tight} of {len(multi)} cells with ≥ 3 seeds "
                  f"({100 * tight / len(multi):.0f} %) have a std ≤ 2 points; median std "
                  f"{stds[len(stds) // 2]:.1f}, largest {stds[-1]:.1f}.", ""]
    lines += ["| rank | cell | test % | val % | n | percentile | params | MMACs |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    ranked = sorted(stats.values(), key=lambda s: -s.test_mean)
    for i, s in enumerate(ranked[:10], 1):
        lines.append(f"| {i} | `{s.key}` | {_fmt(s)} | {s.val_mean:.1f} | {s.n} | "
                     f"{s.percentile:.0f} | {s.params:,} | {s.macs / 1e6:.1f} |")
    one = sorted((s for s in stats.values() if s.nodes == 1), key=lambda s: -s.test_mean)
    if one:
        lines += ["", f"Best one-node cell: `{one[0].key}` {_fmt(one[0])}; worst: "
                  f"`{one[-1].key}` {_fmt(one[-1])}."]
    lines += discrimination_lines(table)
    cells3 = sorted((s for s in stats.values() if s.nodes == 3), key=lambda s: -s.test_mean)
    if len(cells3) >= 10:
        k = max(1, math.ceil(len(cells3) / 10))
        top, rest = factor_shares(cells3[:k]), factor_shares(cells3[k:])
        lines += ["", f"Nodes of the top 10 % of three-node cells ({k} cells) against the "
                  f"other {len(cells3) - k} (share of nodes):", "",
                  "| factor | value | top 10 % | rest |", "|---|---|---:|---:|"]
        for f, values in FACTORS.items():
            for v in values:
                lines.append(f"| {f} | {v} | {100 * top[f][v]:.0f} % | "
                             f"{100 * rest[f][v]:.0f} % |")
    groups = group_percentiles(table)
    if any(s is not None for _, members in groups for _, s in members):
        lines += ["", "The project's benchmark cells on this table (percentile among the "
                  "three-node cells; `—` = not tabled yet):", "",
                  "| group | cells | test % per cell | percentile per cell | mean percentile |",
                  "|---|---:|---|---|---:|"]
        for group, members in groups:
            got = [s for _, s in members if s is not None]
            accs = ", ".join("—" if s is None else f"{s.test_mean:.1f}" for _, s in members)
            pcts = ", ".join("—" if s is None else f"{s.percentile:.0f}" for _, s in members)
            mean = (f"{sum(s.percentile for s in got) / len(got):.0f}" if got else "—")
            lines.append(f"| {group} | {len(members)} | {accs} | {pcts} | {mean} |")
    lines += ["", "Search methods on this table (`(round 2)`: the accuracy benchmark's "
              "searches, run on the embedded benchmark, this task with every event in every "
              "video):" if table.task == "colour" else "Search methods on this table:", "",
              leaderboard_markdown(table)]
    return lines + [""]


def write_report(tasks: Sequence[str], root: str | Path = TABLE_DIR) -> Path:
    """Write ``root/README.md`` and one ``<task>.png`` per task; returns the markdown path."""
    root = Path(root)
    tables = [Table.load(t, root) for t in tasks]
    protocol = tables[0].protocol
    walls = sorted(r["wall_s"] for t in tables for r in t.rows)
    lines = ["# attnas-bench: the ground-truth table of the cell space", "",
             "Every cell trained with one protocol and several seeds; query it with "
             "`attnas table query CELL --task T`, rebuild or extend it with "
             "`attnas table build --task T` (this page: `attnas table report`).", "",
             f"Protocol `{protocol.fingerprint()}`: " + ", ".join(
                 f"{k} {v}" for k, v in protocol.to_dict().items()
                 if k not in ("fingerprint", "eval_batch")) + ".", "",
             f"Runs: {len(walls)}; one run (one cell, one task, one seed, one torch thread) "
             f"took {walls[len(walls) // 2] if walls else float('nan'):.0f} s median on "
             f"{cpu_name('unknown processor')} with two runs at a time.", ""]
    lines += _across_tasks(tables)
    for table in tables:
        lines += _task_section(table, root)
    return atomic_write_text(root / "README.md", "\n".join(lines))
