"""Search methods scored on the table, the way NATS-Bench reports its algorithms.

Each method's found cells (one per search seed) are looked up: mean test accuracy,
percentile among the tabled three-node cells, regret to the best tabled cell. Two rows
need no search: **optimal** (the best tabled cell) and **random search at equal cost**
(cells drawn uniformly from the tabled three-node cells, as many as the protocol trains in
one search's wall time, each with one training run; the cell with the best validation
accuracy is kept and scored by its mean test accuracy) -- a lookup, repeated many times.
"""

from __future__ import annotations

import csv
import random
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from supernet.genotype import load_genotype, save_genotype

from .build import GENOTYPES_DIR
from .cells import parse_cell
from .store import Table

#: the method ``make demo`` runs (its wall time sets random search's budget)
DEFAULT_METHOD = "uniform_perturb_sincos"

__all__ = ["RandomSearch", "MethodRow", "random_search", "method_rows", "leaderboard_markdown",
           "record_search", "SEARCH_CSV", "SEARCHES_DIR"]

SEARCH_CSV = GENOTYPES_DIR.parent / "search.csv"
#: genotypes of searches run on a table task: ``<dir>/<task>/<method>__s<seed>.json`` (their
#: provenance may carry ``wall_s``, the search's wall time)
SEARCHES_DIR = GENOTYPES_DIR.parent / "table" / "searches"


class RandomSearch(NamedTuple):
    """Random search at equal cost over ``repeats`` draws: the kept cell's mean test
    accuracy and percentile (mean and std over the repeats)."""

    cells_per_search: int
    repeats: int
    test_mean: float
    test_std: float
    percentile_mean: float
    percentile_std: float


class MethodRow(NamedTuple):
    """One search method on one task: its cells (``None`` where not tabled yet)."""

    method: str
    cells: list[str]
    test: list[float | None]
    percentile: list[float | None]
    regret: list[float | None]
    wall_s: float | None


def random_search(table: Table, cells_per_search: int, repeats: int = 1000, seed: int = 0
                  ) -> RandomSearch:
    """Random search at equal cost, looked up on ``table`` (deterministic for ``seed``).

    Raises:
        ValueError: fewer tabled three-node cells than ``cells_per_search`` or than 2.
    """
    stats = table.stats()
    runs: dict[str, list[dict]] = defaultdict(list)
    for r in table.rows:
        if r["nodes"] == 3:
            runs[r["key"]].append(r)
    keys = sorted(runs)
    if cells_per_search < 1 or len(keys) < max(2, cells_per_search):
        raise ValueError(f"random search of {cells_per_search} cells needs at least that "
                         f"many tabled three-node cells (the {table.task!r} table has "
                         f"{len(keys)})")
    rng = random.Random(seed)
    tests, pcts = [], []
    for _ in range(repeats):
        drawn = rng.sample(keys, cells_per_search)
        seen = {k: rng.choice(runs[k]) for k in drawn}  # one training run per cell
        kept = max(drawn, key=lambda k: (seen[k]["val_acc"], k))
        tests.append(stats[kept].test_mean)
        pcts.append(stats[kept].percentile)
    sd = statistics.stdev if repeats > 1 else (lambda _: 0.0)
    return RandomSearch(cells_per_search, repeats, statistics.fmean(tests), sd(tests),
                        statistics.fmean(pcts), sd(pcts))


def record_search(genotype_path: str | Path, task: str, method: str, seed: int,
                  wall_s: float | None = None, folder: str | Path = SEARCHES_DIR) -> Path:
    """File a search's genotype as ``folder/<task>/<method>__s<seed>.json`` (its provenance
    gains ``wall_s``, ``method``, ``search_seed``); the leaderboard reads these files.

    Raises:
        ValueError: a method name that is not a plain word (``[A-Za-z0-9_.+-]``), a
            negative seed or wall time; GenotypeError / FileNotFoundError for the file.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", method) or "__s" in method:
        raise ValueError(f"method must be a plain name like 'uniform_perturb_sincos', got "
                         f"{method!r}")
    if seed < 0 or (wall_s is not None and wall_s < 0):
        raise ValueError(f"seed and wall time must be >= 0, got {seed}, {wall_s}")
    g = load_genotype(genotype_path)
    g.provenance.update({"method": method, "search_seed": seed, "task": task,
                         "source": str(genotype_path)})
    if wall_s is not None:
        g.provenance["wall_s"] = round(float(wall_s), 1)
    out = Path(folder) / task / f"{method}__s{seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_genotype(g, out)


def _search_walls(path: Path = SEARCH_CSV) -> dict[str, float]:
    if not path.is_file():
        return {}
    walls: dict[str, list[float]] = defaultdict(list)
    with path.open() as fh:
        for r in csv.DictReader(fh):
            if r.get("status") == "ok" and r.get("total_s"):
                walls[r["group"].replace("+", "_")].append(float(r["total_s"]))
    return {g: statistics.fmean(v) for g, v in walls.items()}


def method_rows(table: Table, folder: str | Path = GENOTYPES_DIR,
                searches: str | Path = SEARCHES_DIR) -> list[MethodRow]:
    """One row per search method: the searches run on ``table``'s task
    (``searches/<task>/<method>__s<seed>.json``) and, for the ``colour`` task (the embedded
    benchmark's data), the accuracy benchmark's groups (``searched_<group>__s<seed>.json``
    in ``folder``, named ``<group> (round 2)``); cells looked up on ``table``."""
    stats = table.stats()
    best = max((s.test_mean for s in stats.values()), default=float("nan"))
    groups: dict[str, list[str]] = defaultdict(list)
    walls: dict[str, float] = {}
    found: dict[str, list[float]] = defaultdict(list)
    for path in sorted((Path(searches) / table.task).glob("*__s*.json")):
        g = load_genotype(path)
        method = path.stem.rsplit("__s", 1)[0]
        groups[method].append(parse_cell(g).key)
        if isinstance(g.provenance.get("wall_s"), (int, float)):
            found[method].append(float(g.provenance["wall_s"]))
    walls.update({m: statistics.fmean(v) for m, v in found.items()})
    if table.task == "colour":
        legacy = _search_walls(Path(folder).parent / "search.csv")
        for path in sorted(Path(folder).glob("searched_*__s*.json")):
            m = re.match(r"searched_(.+)__s\d+$", path.stem)
            if m:
                groups[f"{m.group(1)} (round 2)"].append(parse_cell(load_genotype(path)).key)
                if m.group(1) in legacy:
                    walls[f"{m.group(1)} (round 2)"] = legacy[m.group(1)]
    rows = []
    for group, keys in sorted(groups.items()):
        got = [stats.get(k) for k in keys]
        rows.append(MethodRow(group, keys, [s.test_mean if s else None for s in got],
                              [s.percentile if s else None for s in got],
                              [best - s.test_mean if s else None for s in got],
                              walls.get(group)))
    return rows


def _mean_sd(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "—"
    text = f"{statistics.fmean(got):.1f}"
    if len(got) > 1:
        text += f" ± {statistics.stdev(got):.1f}"
    return text + (f" (n={len(got)} of {len(values)})" if len(got) < len(values) else "")


def leaderboard_markdown(table: Table, search_wall_s: float | None = None,
                         repeats: int = 1000) -> str:
    """The leaderboard of ``table``'s task as a markdown table (methods, then random search
    at equal cost and the optimal cell)."""
    stats = table.stats()
    rows = method_rows(table)
    walls = [r["wall_s"] for r in table.rows if r["nodes"] == 3]
    run_wall = statistics.median(walls) if walls else None
    if search_wall_s is None:  # the default search's, else the median of the known ones
        default = [r.wall_s for r in rows if r.method == DEFAULT_METHOD and r.wall_s]
        known = default or [r.wall_s for r in rows if r.wall_s]
        search_wall_s = statistics.median(known) if known else None
    lines = ["| method | test % | percentile | regret | search wall |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        wall = f"{r.wall_s / 60:.0f} min" if r.wall_s else "—"
        lines.append(f"| {r.method} | {_mean_sd(r.test)} | {_mean_sd(r.percentile)} | "
                     f"{_mean_sd(r.regret)} | {wall} |")
    if run_wall and search_wall_s:
        k = max(1, int(search_wall_s // run_wall))
        try:
            rs = random_search(table, k, repeats)
            lines.append(f"| random search at equal cost ({k} cells × 1 run) | "
                         f"{rs.test_mean:.1f} ± {rs.test_std:.1f} | {rs.percentile_mean:.0f} "
                         f"± {rs.percentile_std:.0f} | — | {search_wall_s / 60:.0f} min |")
        except ValueError as err:
            lines.append(f"| random search at equal cost | — ({err}) | | | |")
    if stats:
        top = max(stats.values(), key=lambda s: s.test_mean)
        lines.append(f"| optimal: `{top.key}` | {top.test_mean:.1f} ± {top.test_std:.1f} | "
                     f"{top.percentile:.0f} | 0 | — |")
    return "\n".join(lines) + "\n"
