"""Running the benchmark: the result ledgers, the runs and their schedule on Ray.

Owns :class:`Ledger` (a CSV file of finished runs: ``accuracy.csv``, ``search.csv``,
``steptime.csv``) and :class:`Runner`, which makes each search, retrain or step timing's
:mod:`benchmarks.jobs` spec, records its result and prints the progress with the estimate
from the runs timed so far; also the random cells' genotypes and the schedule
(:func:`_tasks`: the order and what each run waits for; :func:`schedule`: every run not
finished sent to Ray at once, each waiting for the searches it needs through their
ObjectRefs, ``--jobs`` at a time by the CPUs they ask for; :mod:`benchmarks.executor`).
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import executor
from benchmarks.common import escape, one_line
from benchmarks.common import finite_float as _float
from benchmarks.common import fmt_seconds as _fmt_s
from benchmarks.common import node_source as _source
from benchmarks.plan import Plan, Row, SearchJob, _search_default, _slug
from datamodules.atomic import atomic_path
from derive.draw import draw_cell
from derive.genotype import Genotype, load_genotype, random_genotype, save_genotype
from supernet.cost import model_cost
from supernet.costmodel import CellBudget, SpaceCost

__all__ = ["Ledger", "Runner"]


ACC_FIELDS = ["row", "label", "kind", "block", "seed", "status", "video_top1", "clip_top1",
              "val_top1", "params", "macs", "epochs", "wall_s", "peak_rss_mib", "settings",
              "finished", "error", "log"]
SEARCH_FIELDS = ["search", "label", "group", "seed", "repeat", "status", "supernet", "select",
                 "remedy", "remedy_weight", "position", "nodes", "genotype", "val_acc",
                 "wall_s", "select_s", "total_s", "peak_rss_mib", "worker_peak_rss_mib",
                 "flagged", "decisions", "settings", "finished", "error", "log",
                 "alpha_softmax", "supernet_from"]
STEP_FIELDS = ["key", "status", "genotype", "shape", "steps", "threads",
               "supernet_iteration_s", "supernet_weight_step_s", "supernet_single_path_s",
               "derived_step_s",
               "none_step_s", "wall_s", "settings", "finished", "error", "log"]


# ------------------------------------------------------------------------------ results
class Ledger:
    """A CSV file of finished runs, keyed by some columns, rewritten atomically per row.

    Args:
        path: the CSV file (read if it exists).
        fields: its columns.
        key: the columns that identify a run.
    """

    def __init__(self, path: Path, fields: list[str], key: tuple[str, ...]) -> None:
        self.path, self.fields, self.key = path, fields, key
        self.rows: dict[tuple[str, ...], dict[str, str]] = {}
        if path.is_file():
            with path.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    self.rows[self._key(row)] = row

    def _key(self, row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(row.get(k, "")) for k in self.key)

    def get(self, *key: Any) -> dict[str, str] | None:
        """The recorded row for ``key`` (values as strings), or None."""
        return self.rows.get(tuple(str(k) for k in key))

    def done(self, *key: Any) -> bool:
        """Whether ``key`` finished with status ``ok``."""
        row = self.get(*key)
        return row is not None and row.get("status") == "ok"

    def put(self, row: dict[str, Any]) -> None:
        """Record (or replace) a row and rewrite the file atomically."""
        clean = {f: "" if row.get(f) is None else str(row.get(f)) for f in self.fields}
        self.rows[self._key(clean)] = clean
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(list(self.rows.values()))

    def settings(self) -> set[str]:
        """The settings fingerprints of the rows recorded."""
        return {r.get("settings", "") for r in self.rows.values()}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# ------------------------------------------------------------------------------ running
class Runner:
    """Makes each run's spec, records its result, prints progress and the estimate.

    Args:
        plan: what this invocation runs.
        console: a ``rich`` console for the progress lines (None: plan only).
    """

    def __init__(self, plan: Plan, console: Any) -> None:
        self.plan, self.console = plan, console
        self.acc = Ledger(plan.out / "accuracy.csv", ACC_FIELDS, ("row", "seed"))
        self.srch = Ledger(plan.out / "search.csv", SEARCH_FIELDS, ("search",))
        self.step = Ledger(plan.out / "steptime.csv", STEP_FIELDS, ("key",))
        self.total = len(plan.searches) + 1 + len(plan.rows) * len(plan.train_seeds)
        self.ran = 0
        self.skipped = 0
        self.failed = 0
        self.finished = 0
        self.cost_cache: dict[str, dict[str, Any]] = {}
        self.bar: Any = None  #: the rich progress (and its task) while :func:`schedule` runs

    # -- estimate --------------------------------------------------------------------
    def _walls(self) -> dict[str, list[float]]:
        walls: dict[str, list[float]] = {"search": [], "retrain": [], "steptime": []}
        for r in list(self.srch.rows.values()):
            if r.get("status") == "ok" and _float(r.get("total_s")):
                walls["search"].append(float(r["total_s"]))
        for r in list(self.acc.rows.values()):
            if r.get("status") == "ok" and _float(r.get("wall_s")):
                walls["retrain"].append(float(r["wall_s"]))
        for r in list(self.step.rows.values()):
            if r.get("status") == "ok" and _float(r.get("wall_s", None)):
                walls["steptime"].append(float(r["wall_s"]))
        return walls

    def estimate(self) -> tuple[float | None, float | None]:
        """(whole run, still left) in seconds from the runs timed so far."""
        walls = self._walls()
        mean = {k: statistics.fmean(v) if v else None for k, v in walls.items()}
        sep = self.plan.search_trainer.get("max_epochs") or 1
        rep = self.plan.retrain_trainer.get("max_epochs") or 1
        if mean["search"] is None and mean["retrain"] is not None:
            mean["search"] = mean["retrain"] * sep / rep
        if mean["retrain"] is None and mean["search"] is not None:
            # per epoch, a retrain does N/b training steps where a search does N/(2b)
            # iterations; the step-time job measured both at one batch size
            step = self.step.get("steptime") or {}
            ratio = 1.0
            if step.get("status") == "ok":
                ratio = 2 * float(step["derived_step_s"]) / float(step["supernet_iteration_s"])
            mean["retrain"] = mean["search"] * ratio * rep / sep
        if mean["steptime"] is None:
            mean["steptime"] = 30.0 if not self.plan.quick else 5.0
        if mean["search"] is None:
            return None, None
        total = left = 0.0
        for job in self.plan.searches:
            row = self.srch.get(job.key)
            if row and row.get("status") == "ok" and _float(row.get("total_s")):
                total += float(row["total_s"])
            else:
                total += mean["search"]
                left += mean["search"]
        total += mean["steptime"]
        if not self.step.done("steptime"):
            left += mean["steptime"]
        for row in self.plan.rows:
            for seed in self.plan.train_seeds:
                rec = self.acc.get(row.key, seed)
                if rec and rec.get("status") == "ok" and _float(rec.get("wall_s")):
                    total += float(rec["wall_s"])
                else:
                    total += mean["retrain"]
                    left += mean["retrain"]
        jobs = max(1, self.plan.args.jobs)  # runs overlap; walls were measured that way
        return total / jobs, left / jobs

    def _progress(self, what: str, status: str, detail: str) -> None:
        total, left = self.estimate()
        eta = (f" | full run ≈ {_fmt_s(total)}, left ≈ {_fmt_s(left)}"
               if total is not None else "")
        colour = {"ok": "green", "failed": "red", "skip": "dim"}.get(status, "white")
        self.finished += 1
        self.failed += status == "failed"
        self.console.print(f"\\[{self.finished:>3}/{self.total} done] {escape(what)}: "
                           f"[{colour}]{status}"
                           f"[/{colour}] {escape(detail)}{eta}", highlight=False)
        if self.bar is not None:
            bar, task = self.bar
            bar.update(task, advance=1, left=f"left ≈ {_fmt_s(left)}" if left else "")

    def _rel(self, path: Path | str) -> str:
        p = Path(path)
        try:
            return str(p.relative_to(self.plan.out))
        except ValueError:
            return str(p)

    def _placed(self, slug: str, spec: dict[str, Any]) -> tuple[dict[str, Any], Path]:
        """``spec`` with its run folder, threads and resume folder; and its log file."""
        work = self.plan.work
        return ({**spec, "run_dir": str(work / "runs" / slug), "threads": self.plan.threads,
                 "resume_dir": str(work / "resume")},  # a run killed part-way resumes
                work / "logs" / f"{slug}.log")

    # -- the runs: spec, then record ------------------------------------------------------
    def _search_slug(self, key: str) -> str:
        return _slug("search_" + key.replace("/", "_"))

    def trained_supernet(self, job: SearchJob) -> tuple[str, Path] | None:
        """``(search key, last.ckpt)`` of a trained supernet ``job`` can re-select from now:
        its source search's, or -- when that checkpoint is gone (another machine, a cleaned
        work folder) -- one trained by a finished search with the same source (the same
        supernet: such groups differ only in their selection rule or budget)."""
        for key in self._supernets(job):
            if self.srch.done(key) and self.checkpoint_of(key).is_file():
                return key, self.checkpoint_of(key)
        return None

    def _supernets(self, job: SearchJob) -> list[str]:
        """The searches whose trained supernet ``job`` may re-select from, in order."""
        if job.source is None:
            return []
        return [job.source, *[j.key for j in self.plan.searches
                              if j.source == job.source and j.key != job.key]]

    def checkpoint_of(self, key: str) -> Path:
        """Where search ``key`` keeps its trained supernet (it may not exist)."""
        return self.plan.work / "runs" / self._search_slug(key) / "last.ckpt"

    def todo(self) -> bool:
        """Whether any run of the plan is still to run (not finished ok)."""
        return (not self.step.done("steptime")
                or any(not (self.srch.done(j.key) and j.genotype.is_file())
                       for j in self.plan.searches)
                or any(not self.acc.done(r.key, s) for r in self.plan.rows
                       for s in self.plan.train_seeds))

    def prepare(self, item: Any) -> tuple[dict[str, Any], Path, dict[str, bool]] | None:
        """The run of a :func:`_tasks` item: ``(spec, log, whether each search its spec
        names has finished ok so far)``, or None when it finished before (skipped)."""
        if isinstance(item, SearchJob):
            made = self.search_spec(item)
        elif item == "steptime":
            made = self.steptime_spec()
        else:
            made = self.row_spec(*item)
        if made is None:
            self.skipped += 1
            return None
        spec, log = made
        names = [k for k, _ in spec.get("supernets", []) + spec.get("cells", [])]
        if "requires" in spec:
            names.append(spec["requires"][0])
        return spec, log, {k: self.srch.done(k) for k in names}

    def record(self, item: Any, result: dict[str, Any], ran: dict[str, Any] | None) -> None:
        """Record the ended run of a :func:`_tasks` item (``ran``: the spec it ran, None
        when it could not start) and print its line."""
        self.ran += ran is not None
        if isinstance(item, SearchJob):
            self.record_search(item, result, ran)
        elif item == "steptime":
            self.record_steptime(result, ran)
        else:
            self.record_row(*item, result, ran)

    def search_spec(self, job: SearchJob) -> tuple[dict[str, Any], Path] | None:
        """A search's spec (None: finished); one whose supernet another search of the plan
        trains names it (``supernets``): it then only re-runs the selection on it."""
        if self.srch.done(job.key) and job.genotype.is_file():
            return None
        spec = {
            "kind": "search", "key": job.key, "seed": job.seed, "model": job.model,
            "data": self.plan.search_data, "trainer": job.trainer or self.plan.search_trainer,
            "genotype": str(job.genotype), "title": job.label,
            "provenance": {"benchmark": job.key, "group": job.group},
        }
        if job.source is not None:
            spec["supernets"] = [[k, str(self.checkpoint_of(k))] for k in self._supernets(job)]
        return self._placed(self._search_slug(job.key), spec)

    def record_search(self, job: SearchJob, result: dict[str, Any],
                      ran: dict[str, Any] | None) -> None:
        """Record one search (or re-selection) and print its line."""
        source = (ran or {}).get("provenance", {}).get("supernet_from")
        what = f"re-select {job.label} from {source}" if source else f"search {job.label}"
        wall = float(result.get("run_s") or 0.0)
        nodes = result.get("nodes")
        total, fit = round(wall + float(result.get("prior_s") or 0.0), 2), result.get("wall_s")
        if source is not None and result["status"] == "ok":
            # the cost of this way of searching: the shared supernet training + own selection
            src = self.srch.get(source) or {}
            train = (_float(src.get("wall_s")) or 0.0) - (_float(src.get("select_s")) or 0.0)
            fit = round(train + (_float(result.get("select_s")) or 0.0), 2)
            total = round((_float(src.get("total_s")) or 0.0)
                          - (_float(src.get("select_s")) or 0.0) + wall, 2)
            result.setdefault("val_acc", src.get("val_acc"))
        log = self._placed(self._search_slug(job.key), {})[1]
        row = {
            "search": job.key, "label": job.label, "group": job.group, "seed": job.seed,
            "repeat": job.repeat, "status": result["status"],
            # the columns keep the options' old names (the results so far)
            "supernet": job.model.get("strategy"), "select": job.model.get("select"),
            "remedy": job.model.get("anti_collapse", "none"),
            "remedy_weight": job.model.get("anti_collapse_weight", 0.0),
            "position": job.model.get("position_encoding"),
            "nodes": json.dumps(nodes) if nodes else "",
            "genotype": self._rel(job.genotype) if result["status"] == "ok" else "",
            "val_acc": result.get("val_acc"), "wall_s": fit,
            "select_s": result.get("select_s"),
            "total_s": total, "peak_rss_mib": result.get("peak_rss_mib"),
            "worker_peak_rss_mib": result.get("worker_peak_rss_mib"),
            "flagged": result.get("flagged"),
            "decisions": json.dumps(result["decisions"]) if result.get("decisions") else "",
            "settings": job.settings, "finished": _now(), "error": result.get("error"),
            "log": self._rel(log),
            "alpha_softmax": json.dumps(result.get("alpha_softmax"))
            if result.get("alpha_softmax") else "",
            "supernet_from": source or "",
        }
        self.srch.put(row)
        if result["status"] == "ok":
            cell = "; ".join(f"{op} ← {_source(i)}" for op, i in nodes)
            self._progress(what, "ok", f"{_fmt_s(wall)}, peak RSS "
                           f"{result.get('peak_rss_mib', 0):.0f} MiB; cell {cell}")
        else:
            self._progress(what, "failed", f"{result['error']} (log: {log})")

    def steptime_spec(self) -> tuple[dict[str, Any], Path] | None:
        """The step timing's spec (None: finished): it times the first cell of the default
        group's first searches that ended ok (``cells``)."""
        if self.step.done("steptime"):
            return None
        batch = int(self.plan.search_data.get("batch_size", 16))
        cells = [[j.key, str(j.genotype)] for j in self.plan.searches
                 if j.group == self.plan.default_group and j.repeat == 0]
        spec = {"kind": "steptime", "key": "steptime", "cells": cells,
                "search_model": self.plan.search_model, "retrain_model": self.plan.retrain_model,
                "num_classes": self.plan.num_classes,
                "shape": [batch, 3, self.plan.clip[0], self.plan.clip[1], self.plan.clip[1]],
                "steps": 2 if self.plan.quick else 5}
        return self._placed("steptime", spec)

    def record_steptime(self, result: dict[str, Any], ran: dict[str, Any] | None) -> None:
        """Record the step timing (supernet vs derived-network steps) and print its line."""
        what = "step time: supernet vs derived network"
        log = self._placed("steptime", {})[1]
        self.step.put({**{k: result.get(k) for k in STEP_FIELDS}, "key": "steptime",
                       "genotype": self._rel(ran["genotype"]) if ran else "",
                       "shape": "x".join(map(str, result.get("shape", []))),
                       "settings": self.plan.steptime_settings, "finished": _now(),
                       "log": self._rel(log) if ran else "",
                       "wall_s": round(float(result.get("run_s") or 0.0), 2) if ran else ""})
        if result["status"] == "ok":
            ratio = result["supernet_iteration_s"] / result["derived_step_s"]
            self._progress(what, "ok", f"search iteration / derived step = {ratio:.1f}×")
        else:
            self._progress(what, "failed", result["error"] + (f" (log: {log})" if ran else ""))

    def cost(self, row: Row) -> dict[str, Any]:
        """Params and MACs of the proxy with ``row``'s block at the benchmark clip."""
        if row.key in self.cost_cache:
            return self.cost_cache[row.key]
        m = self.plan.retrain_model
        try:
            res = model_cost(m.get("backbone", "proxy"), row.block, m.get("positions"),
                             frames=self.plan.clip[0], size=self.plan.clip[1], batch=1,
                             num_classes=self.plan.num_classes,
                             block_kwargs=m.get("block_kwargs"), latency=False,
                             backbone_kwargs=m.get("backbone_kwargs"))
            out = {"params": res["params"], "macs": res["macs"]}
        except Exception as err:  # noqa: BLE001 - a row whose cost fails still trains
            out = {"params": None, "macs": None, "error": one_line(err)}
        self.cost_cache[row.key] = out
        return out

    def _row_slug(self, row: Row, seed: int) -> str:
        return _slug(f"train_{row.key.replace('/', '_')}_seed{seed}")

    def row_spec(self, row: Row, seed: int) -> tuple[dict[str, Any], Path] | None:
        """The spec of one (row, seed) training (None: finished); a searched cell's row
        runs only if its search ended ok (``requires``)."""
        if self.acc.done(row.key, seed):
            return None
        spec = {"kind": "retrain", "key": row.key, "seed": seed, "data": self.plan.retrain_data,
                "trainer": self.plan.trainer_for(row),
                "model": {**self.plan.retrain_model, "block": row.block}}
        if row.search is not None:
            spec["requires"] = [row.search.key, str(row.block)]
        return self._placed(self._row_slug(row, seed), spec)

    def record_row(self, row: Row, seed: int, result: dict[str, Any],
                   ran: dict[str, Any] | None) -> None:
        """Record one (row, seed) training and print its line."""
        what = f"train {row.label} seed {seed}"
        base = {"row": row.key, "label": row.label, "kind": row.kind,
                "block": self._rel(row.block), "seed": seed, "settings": row.settings}
        if ran is None and row.search is not None and result["error"].startswith("its search"):
            self.acc.put({**base, "status": "failed", "finished": _now(),
                          "error": result["error"]})
            self._progress(what, "failed", result["error"])
            return
        cost = self.cost(row)
        log = self._placed(self._row_slug(row, seed), {})[1]
        wall = float(result.get("run_s") or 0.0)
        self.acc.put({**base, **{k: result.get(k) for k in
                                 ("status", "video_top1", "clip_top1", "val_top1", "epochs",
                                  "peak_rss_mib", "error")},
                      "params": cost.get("params"), "macs": cost.get("macs"),
                      "wall_s": round(wall + float(result.get("prior_s") or 0.0), 2),
                      "finished": _now(), "log": self._rel(log)})
        if result["status"] == "ok":
            self._progress(what, "ok", f"video top-1 {100 * result['video_top1']:.1f} % "
                           f"in {_fmt_s(wall)}")
        else:
            self._progress(what, "failed", f"{result['error']} (log: {log})")


def _random_genotypes(plan: Plan) -> None:
    """Write the random cells' genotype JSON + PNG (deterministic from their seeds)."""
    m = plan.search_model
    space = None
    for row in plan.rows:
        if row.kind not in ("random", "random_cost"):
            continue
        path = Path(row.block)
        seed = int(row.key.split("/")[1])
        cell = {"inner_ratio": float(m.get("inner_ratio", 0.5)),
                "kv_pool": bool(m.get("kv_pool", True)),
                "position": str(m.get("position_encoding",
                                     _search_default("position_encoding")))}
        provenance: dict[str, Any] = {"benchmark": row.key}
        nodes = random_genotype(int(m.get("num_nodes", 3)), seed, **cell).nodes
        if row.kind == "random_cost":  # the same random cell, fitted to the group's budget
            space = space or SpaceCost(
                str(m.get("backbone", "proxy")), m.get("positions"),
                (plan.clip[0], plan.clip[1], plan.clip[1]), int(m.get("num_nodes", 3)),
                cell["inner_ratio"], cell["kv_pool"], cell["position"],
                m.get("backbone_kwargs"))
            spec = row.group[len("cost"):]
            budget = CellBudget(space, space.check_target(spec), spec)
            ratio, macs, params = budget.fit([n.op for n in nodes])
            cell["inner_ratio"] = ratio
            provenance["budget"] = {**budget.record(), "inner_ratio": ratio, "macs": macs,
                                    "params": params}
        g = Genotype(nodes=nodes, **cell, provenance=provenance)
        if path.is_file():
            old = load_genotype(path)
            if old.nodes == g.nodes and old.cell_kwargs() == g.cell_kwargs():
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        save_genotype(g, path)
        draw_cell(g, path.with_suffix(".png"), title=row.label)


# ------------------------------------------------------------------------------ schedule
def _tasks(plan: Plan, runner: Runner) -> list[tuple[Any, set[str], str]]:
    """Every run as (item, the search keys it waits for, its own key) -- the item a
    :class:`~benchmarks.plan.SearchJob`, a ``(Row, seed)`` or ``"steptime"`` -- in the order
    that gives the main answer first: the default group's searches, then its rows with
    the baselines and random cells seed by seed, the step-time job, then the other groups
    one at a time in the plan's order, each its searches and then its rows (and a budget
    group's random cells of matched cost), so that each group's table is complete as soon
    as possible. Re-selections from the default group's supernets come before the other
    groups (they cost a selection, not a search, while those checkpoints are there). A row
    starts as soon as its own search has ended, so a slot is never idle while a later
    search runs."""
    tasks: list[tuple[Any, set[str], str]] = []
    default = plan.default_group

    source_group = {j.key: j.group for j in plan.searches}
    retrains: dict[str, str] = {}  # source whose checkpoint is gone -> the job retraining it

    def search(job: SearchJob) -> None:
        # a re-selection waits for the search that trains its supernet; when that search
        # is done but its checkpoint is gone, the first job of that source trains the
        # supernet again and the others wait for it (re-selecting from it:
        # Runner.trained_supernet) instead of each training their own
        needs = {job.source} if job.source is not None else set()
        if job.source is not None and runner.srch.done(job.source) and \
                not runner.srch.done(job.key) and not runner.checkpoint_of(job.source).is_file():
            if job.source in retrains:
                needs.add(retrains[job.source])
            else:
                retrains[job.source] = job.key
        tasks.append((job, needs, job.key))

    def rows(chosen: list[Row]) -> None:
        for seed in plan.train_seeds:
            for row in chosen:
                needs = {row.search.key} if row.search is not None else set()
                tasks.append(((row, seed), needs, f"{row.key}/{seed}"))

    def late(row: Row) -> bool:
        return row.kind in ("searched", "random_cost") and row.group != default

    for job in plan.searches:
        if job.group == default:
            search(job)
    rows([r for r in plan.rows if not late(r)])
    first = [j.key for j in plan.searches if j.group == default and j.repeat == 0]
    tasks.append(("steptime", set(first), "steptime"))

    cheap = [j for j in plan.searches if j.group != default
             and source_group.get(j.source) == default
             and (not runner.srch.done(j.source) or runner.checkpoint_of(j.source).is_file())]
    for job in cheap:
        search(job)
    placed: set[str] = set()
    for group in dict.fromkeys(j.group for j in plan.searches if j.group != default):
        for job in plan.searches:
            if job.group == group and job not in cheap:
                search(job)
        tokens = set(group.split("+"))
        mine = [r for r in plan.rows if late(r) and r.key not in placed and (
            r.group == group or (r.kind == "random_cost" and r.group in tokens))]
        placed.update(r.key for r in mine)
        rows(mine)
    rows([r for r in plan.rows if late(r) and r.key not in placed])  # none in practice
    return tasks


def schedule(plan: Plan, runner: Runner) -> None:
    """Run every task not finished: all are sent to Ray at once in :func:`_tasks`'s order,
    each with the ObjectRefs of the searches it needs (Ray starts it once they have ended,
    ok or failed: a failed search fails its rows), ``--jobs`` at a time by the CPUs they
    ask for; each is recorded as it ends, under a ``rich`` progress bar."""
    runs: dict[str, tuple[Any, Any, dict[str, Any], list[str]]] = {}  # key: item, ref, ...
    for item, needs, key in _tasks(plan, runner):
        made = runner.prepare(item)
        if made is None:
            continue
        spec, log, known = made
        waits = {k: runs[k][1] for k in needs if k in runs}
        ref = executor.submit(spec, log, plan.threads, plan.args.timeout, waits, known)
        runs[key] = (item, ref, spec, list(waits))
    ended: dict[str, bool] = {}

    def record(key: str) -> None:
        item, ref, spec, waits = runs[key]
        for k in waits:  # a run is recorded after the runs it waited for
            if k not in ended:
                record(k)
        failed = [k for k in waits if not ended[k]]
        result, ran = executor.outcome(ref, spec, failed)
        ended[key] = result.get("status") == "ok"
        runner.record(item, result, ran)

    columns = (TextColumn("runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[left]}"))
    with Progress(*columns, console=runner.console) as bar:
        runner.bar = bar, bar.add_task("runs", total=runner.total, completed=runner.skipped,
                                       left="")
        try:
            while len(ended) < len(runs):
                ready = executor.ended([runs[k][1] for k in runs if k not in ended], 1.0)
                for key in [k for k in runs if k not in ended and runs[k][1] in ready]:
                    if key not in ended:
                        record(key)
        finally:
            runner.bar = None
