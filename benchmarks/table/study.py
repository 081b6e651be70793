"""The protocol study: is the table's instrument stable, and does it rank as a longer one?

Measured on :data:`STUDY_CELLS` (cells that span the range: no block, the baselines, map
cells, single dot products, unnormalised dot chains, searched and random three-node cells):

* the spread over training seeds (target: std <= 2 points for >= 90 % of the cells);
* a protocol twice as long (``--longer 2``, its own table folder): no reference cell's mean
  may drop by more than its standard error;
* a protocol three times as long: Kendall tau between the two rankings.

``python -m benchmarks.table.study [TASK] [--write]`` prints the study's tables from whatever
runs exist (``--write``: into ``benchmarks/results/table/protocol.md``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from datamodules.atomic import atomic_write_text
from derive.oneshot import kendall_tau

from .store import TABLE_DIR, Table, TableError

__all__ = ["STUDY_CELLS", "REFERENCE_CELLS", "study_markdown", "STUDY_DIR", "seed_effects",
           "paired_difference", "still_learning"]

STUDY_DIR = TABLE_DIR.parent / "table_study"
REFERENCE_CELLS = ("none", "nonlocal", "nonlocal_sincos")
STUDY_CELLS = (
    "none", "nonlocal", "nonlocal_sincos", "a2", "cinst",
    "map.spatiotemporal.sigmoid~0", "map.temporal.softmax~0", "map.spatial.sigmoid~0",
    "dot.temporal.softmax~0", "dot.spatial.softmax~0",
    "dot.spatiotemporal.identity~0+dot.spatiotemporal.relu~1+dot.temporal.identity~2",
    "dot.spatial.identity~0+dot.spatial.relu~0+dot.temporal.relu~1",
    "dot.temporal.relu~0+map.spatiotemporal.softmax~1+dot.spatiotemporal.softmax~1",
    "dot.spatiotemporal.softmax~0+dot.spatial.softmax~0+dot.spatiotemporal.softmax~0",
)


def _by_seed(table: Table, cells: list[str]) -> dict[str, dict[int, float]]:
    """Test accuracy (%) of each of ``cells`` by training seed."""
    out: dict[str, dict[int, float]] = {c: {} for c in cells}
    for r in table.rows:
        if r["key"] in out:
            out[r["key"]][int(r["seed"])] = 100 * float(r["test_acc"])
    return out


def seed_effects(acc: dict[str, dict[int, float]]) -> dict[int, float]:
    """The luck a training seed brings to every cell: over the seeds that every cell of
    ``acc`` (cell -> seed -> accuracy) has, each seed's mean deviation from the cells' own
    means. A seed draws the same backbone and head weights and clip order for every cell,
    so this part of a cell's spread is shared and cancels when cells are compared seed by
    seed."""
    seeds = sorted(set.intersection(*(set(v) for v in acc.values()))) if acc else []
    if len(seeds) < 2:
        return {}
    means = {c: sum(v[s] for s in seeds) / len(seeds) for c, v in acc.items()}
    return {s: sum(v[s] - means[c] for c, v in acc.items()) / len(acc) for s in seeds}


def _std(values: list[float]) -> float:
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def paired_difference(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int]:
    """``(mean, standard error, n)`` of ``a[s] - b[s]`` over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    if len(diffs) < 2:
        return (diffs[0] if diffs else math.nan), math.nan, len(diffs)
    return sum(diffs) / len(diffs), _std(diffs) / math.sqrt(len(diffs)), len(diffs)


def _paired_lines(table: Table, cells: list[str]) -> list[str]:
    """The seed-adjusted spread of each cell and the resolution of neighbours in the
    ranking, as markdown lines."""
    acc = {c: v for c, v in _by_seed(table, cells).items() if len(v) >= 2}
    effects = seed_effects(acc)
    if not effects:
        return []
    seeds = sorted(effects)
    lines = ["", "### Paired by seed", "",
             "Each seed's shared luck (mean deviation of every cell from its own mean, over "
             f"the {len(seeds)} seeds all {len(acc)} cells have): " +
             ", ".join(f"seed {s} {effects[s]:+.1f}" for s in seeds) + ".", "",
             "| cell | raw std | std with the seed's shared luck removed | ≤ 2 |",
             "|---|---:|---:|:-:|"]
    adjusted = {}
    for c, v in acc.items():
        adjusted[c] = _std([v[s] - effects[s] for s in seeds])
        lines.append(f"| `{c}` | {_std([v[s] for s in seeds]):.1f} | {adjusted[c]:.1f} | "
                     f"{'yes' if adjusted[c] <= 2 else 'no'} |")
    tight = sum(a <= 2 for a in adjusted.values())
    lines += ["", f"{tight} of {len(adjusted)} cells ({100 * tight / len(adjusted):.0f} %) "
              "have a seed-adjusted std ≤ 2 points.", "",
              "Neighbours in the ranking, compared seed by seed (resolved: the mean paired "
              "difference is more than twice its standard error):", "",
              "| higher | lower | difference (points) | SE | resolved |", "|---|---|---:|---:|:-:|"]
    order = sorted(acc, key=lambda c: -sum(acc[c].values()) / len(acc[c]))
    resolved = 0
    for hi, lo in zip(order, order[1:]):
        mean, se, _ = paired_difference(acc[hi], acc[lo])
        ok = mean > 2 * se
        resolved += ok
        lines.append(f"| `{hi}` | `{lo}` | {mean:+.1f} | {se:.1f} | {'yes' if ok else 'no'} |")
    lines += ["", f"{resolved} of {len(order) - 1} neighbouring pairs resolved."]
    return lines


def still_learning(curve: list[float], share: float = 0.25, drop: float = 0.05) -> bool:
    """Whether a run's training loss fell by more than ``drop`` (relative) over its last
    ``share`` of steps: it ended before it had finished learning."""
    if len(curve) < 2:
        return False
    back = curve[max(0, len(curve) - 1 - max(1, round(share * (len(curve) - 1))))]
    return back > 0 and (back - curve[-1]) / back > drop


def _curve_lines(table: Table, cells: list[str]) -> list[str]:
    curves = table.curves()
    if not curves:
        return []
    chance = math.log(table.variant.classes)
    lines = ["", "### Did the runs finish learning?", "",
             "A run is *still learning* when its training loss fell by more than 5 % over its "
             f"last quarter of steps, and *at chance* when it ended within 5 % of ln(classes) "
             f"= {chance:.3f} nats (it never left the plateau).", "",
             "| cell | runs with a curve | still learning | at chance | final loss (min–max) |",
             "|---|---:|---:|---:|---|"]
    for c in cells:
        mine = [v for (k, _), v in curves.items() if k == c]
        if mine:
            ends = [v[-1] for v in mine]
            stuck = sum(e >= 0.95 * chance for e in ends)
            lines.append(f"| `{c}` | {len(mine)} | {sum(still_learning(v) for v in mine)} | "
                         f"{stuck} | {min(ends):.2f}–{max(ends):.2f} |")
    return lines


def study_markdown(task: str = "colour", root: Path = TABLE_DIR,
                   study_root: Path = STUDY_DIR) -> str:
    """The study's findings as markdown, from the runs stored so far."""
    table = Table.load(task, root)
    base = table.stats()
    walls = sorted(r["wall_s"] for r in table.rows)
    lines = [f"### Seed spread on `{task}` (table protocol `{table.protocol.fingerprint()}`)",
             "",
             "| cell | test % (mean ± std) | n | std ≤ 2 |", "|---|---:|---:|:-:|"]
    rows = [base[c] for c in STUDY_CELLS if c in base]
    for s in rows:
        verdict = "—" if s.n < 2 else "yes" if s.test_std <= 2 else "no"
        lines.append(f"| `{s.key}` | {s.test_mean:.1f} ± {s.test_std:.1f} | {s.n} | {verdict} |")
    judged = [s for s in rows if s.n >= 2]
    if judged:
        tight = sum(s.test_std <= 2 for s in judged)
        lines += ["", f"{tight} of {len(judged)} cells with ≥ 2 seeds "
                  f"({100 * tight / len(judged):.0f} %) have a seed std ≤ 2 points (target: "
                  f"≥ 90 % with 5 seeds each; seeds so far: {min(s.n for s in rows)}–"
                  f"{max(s.n for s in rows)})."]
    lines += _paired_lines(table, [c for c in STUDY_CELLS if c in base])
    lines += _curve_lines(table, [c for c in STUDY_CELLS if c in base])
    if walls:
        lines += ["", f"Wall time of one run (one torch thread, two runs at a time, all "
                  f"{len(walls)} runs of the `{task}` table): median {walls[len(walls) // 2]:.0f}"
                  f" s, range {walls[0]:.0f}–{walls[-1]:.0f} s."]
    for factor in (2, 3):
        folder = study_root / f"longer{factor}"
        if not (folder / f"{task}.csv").is_file():
            continue
        longer = Table.load(task, folder).stats()
        common = [c for c in STUDY_CELLS if c in base and c in longer]
        common += [c for c in longer if c in base and c not in common]
        lines += ["", f"### {factor}× the steps on `{task}`", "",
                  "| cell | table protocol | ×" + str(factor) + " | shift | SE of the shift | "
                  "dropped by more than its SE |", "|---|---:|---:|---:|---:|:-:|"]
        for c in common:
            a, b = base[c], longer[c]
            shift = b.test_mean - a.test_mean
            if a.n > 1 and b.n > 1:  # the standard error of the difference of the means
                se = math.sqrt(a.test_std ** 2 / a.n + b.test_std ** 2 / b.n)
                se_text, dropped = f"{se:.1f}", ("yes" if -shift > se else "no")
            else:
                se_text, dropped = "—", "—"
            lines.append(f"| `{c}` | {a.test_mean:.1f} ± {a.test_std:.1f} (n={a.n}) | "
                         f"{b.test_mean:.1f} ± {b.test_std:.1f} (n={b.n}) | {shift:+.1f} | "
                         f"{se_text} | {dropped} |")
        judged = [longer[c] for c in common if longer[c].n >= 2]
        if judged:
            tight = sum(s.test_std <= 2 for s in judged)
            lines += ["", f"Seed spread at ×{factor}: {tight} of {len(judged)} cells with ≥ 2 "
                      f"seeds have a std ≤ 2 points (the same cells at ×1: "
                      f"{sum(base[s.key].test_std <= 2 for s in judged)})."]
        if len(common) >= 2:
            tau = kendall_tau([base[c].test_mean for c in common],
                              [longer[c].test_mean for c in common])
            lines += ["", f"Kendall τ between the two rankings over {len(common)} cells: "
                      f"{tau:.2f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Print the study of a task (default ``colour``) from the table in ``--root``; with
    ``--write`` also write it (to ``--out``, default ``<root>/protocol.md``). 0, or 2 on bad
    arguments or a table that cannot be read."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.table.study",
                                description=__doc__.splitlines()[0])
    p.add_argument("task", nargs="?", default="colour")
    p.add_argument("--root", type=Path, default=TABLE_DIR, help="the table's folder")
    p.add_argument("--write", action="store_true", help="write the study as markdown")
    p.add_argument("--out", type=Path, default=None, help="where (default <root>/protocol.md)")
    p.add_argument("--longer-root", type=Path, default=STUDY_DIR,
                   help="the folder that holds longer2/ and longer3/, the same cells trained "
                        "2x and 3x as long (default benchmarks/results/table_study)")
    args = p.parse_args(argv)
    try:
        text = study_markdown(args.task, args.root, args.longer_root)
    except (TableError, ValueError) as err:
        print(f"study: {err}", file=sys.stderr)
        return 2
    print(text)
    if args.write:
        path = args.out or Path(args.root) / "protocol.md"
        docs = os.path.relpath(Path("docs/table.md").resolve(), path.resolve().parent)
        head = (f"# The table protocol study\n\nWritten by `python -m benchmarks.table.study "
                f"{args.task} --root {os.path.relpath(args.root)} --longer-root "
                f"{os.path.relpath(args.longer_root)} --write` from the runs "
                f"stored so far; what the protocol is and why: [docs/table.md]({docs}).\n\n")
        atomic_write_text(path, head + text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
