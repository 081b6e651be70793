"""The accuracy / search-cost benchmark: does the searched cell beat non-local blocks?

    python -m benchmarks.run                 # the full benchmark (hours on 2 CPU cores; resumes)
    python -m benchmarks.run --quick         # the whole chain at toy scale (< 2 min)
    python -m benchmarks.run --plan          # what would run, and what is already done
    attnas bench ...                         # the same

Steps, all on the embedded synthetic benchmark with the proxy backbone and the documented
defaults (``configs/search/synthetic.yaml``, ``configs/retrain/synthetic.yaml``):

1. **search** every group of ``--groups`` (a supernet mode, a selection rule, optionally
   a position and a search length: ``benchmarks/groups.py``; the first group is the
   default one) with ``--search-seeds`` seeds; the group's rule selects each cell
   (genotype JSON + PNG under ``<out>/genotypes``, the trained supernet kept in the work
   folder for re-selection); optional study axes ``--remedy`` and ``--positions`` add
   groups; ``--repeat-search`` re-runs the first seed to check that the same seed gives
   the same genotype;
2. **retrain** from scratch, with the same budget (the retrain config) for every row:
   the ``--blocks`` baselines, every searched cell and ``--random-cells`` random cells of
   the same space (``derive.random_genotype`` with seeds 0, 1, ...; same cell settings),
   each with ``--train-seeds`` seeds; test = the final weights, multi-view, video-level
   top-1 on the held-out test split; ``--budget-epochs`` also trains ``nonlocal`` at other
   budgets (its training-seed std says whether the budget resolves 2 points);
3. **tables** (``accuracy.md``): params and MACs at the benchmark clip, top-1 mean ± std
   over seeds, Δ vs ``none`` and vs ``nonlocal``, the random-cell mean, the searched-cell
   mean; per group: top-1 over search × training seeds, Δ vs nonlocal and random cells,
   the search seeds' agreement per node, the selection's coin tosses, search wall time and
   memory, and the targets of the default group; a scatter plot of top-1 vs MACs
   (``accuracy.png``);
4. **search cost**: wall time and peak RSS of every search, and the supernet-step /
   derived-network-step time ratio on the proxy;
5. **reproducibility**: how often each node's op is chosen across search seeds, and
   whether repeated same-seed searches gave the same genotype.

Every search / training run is a Ray task in its own worker process (``benchmarks.jobs``'s
job functions; ``benchmarks/executor.py``; a local Ray by default, a cluster with
``--address``): a crash or an out-of-memory kill fails that row only (recorded with its
one-line error), the memory of each run is its own (peak RSS per search), and nothing leaks
from one row into the next.
Results are appended to ``<out>/accuracy.csv`` and ``<out>/search.csv`` as each run ends;
re-running the command skips every finished (``ok``) run and retries failed ones. Each
run's settings fingerprint covers what that run depends on (a baseline row: the retrain
settings; a search: its group's model, data and trainer), so adding a group or a seed
keeps every finished run, and a results folder made with other settings is refused.
Decoded clips are shared by all runs through a disk cache in the work folder (decoding is
deterministic, so this changes speed, not results).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import executor
from benchmarks.common import escape, one_line
from benchmarks.common import fmt_seconds as _fmt_s
from benchmarks.jobs import run_job
from benchmarks.plan import BenchError, Plan, _search_default, build_plan
from benchmarks.report import plot, summarise, write_markdown
from benchmarks.runner import Ledger, Runner, _random_genotypes, schedule
from datamodules import VideoDataModule
from datamodules.synth import SynthError, ensure_synthetic
from derive.genotype import random_genotype, save_genotype

__all__ = ["main", "BenchError", "Ledger", "build_plan"]


# ------------------------------------------------------------------------------ the estimate
def _split_counts(plan: Plan) -> dict[str, int]:
    """Videos per split: the data's meta.json, else the generator's 70/15/15 split."""
    meta_file = Path(plan.retrain_data["root"]) / "meta.json"
    if meta_file.is_file():
        try:
            counts = json.loads(meta_file.read_text()).get("counts")
            if isinstance(counts, dict):
                return {k: int(v) for k, v in counts.items()}
        except ValueError:
            pass
    if plan.synth is None:  # a dataset: the sizes of its splits
        try:
            dm = VideoDataModule(**{k: v for k, v in plan.retrain_data.items()
                                    if k not in ("cache", "cache_dir")})
            dm.setup(None)
            return {k: len(dm.datasets[k].records) for k in ("train", "val", "test")
                    if k in dm.datasets}
        except (ValueError, FileNotFoundError, RuntimeError):
            return {}
    n, c = int(plan.synth["videos_per_class"]), int(plan.synth["classes"])
    train, val = round(n * 0.70), round(n * 0.15)
    return {"train": c * train, "val": c * val, "test": c * (n - train - val)}


def _limit(value: Any, full: int) -> int:
    if value is None:
        return full
    return min(full, int(value)) if isinstance(value, int) or float(value) > 1 \
        else int(full * float(value))


#: per-run start-up (interpreter, imports, Trainer) and one-off decoding, in seconds
RUN_OVERHEAD_S, DECODE_S_PER_VIDEO = 10.0, 0.02


def upfront_estimate(plan: Plan, runner: Runner, console: Any) -> dict[str, float] | None:
    """Estimate each run's duration from a few timed steps (before any run finished):
    steps per epoch x step time, evaluation forwards at a third of a step, plus start-up.
    Returns ``{row key or 'search': seconds}``, or None if the calibration failed."""
    m = plan.search_model
    cell = plan.work / "calibrate_cell.json"
    cell.parent.mkdir(parents=True, exist_ok=True)
    save_genotype(random_genotype(int(m.get("num_nodes", 3)), 0,
                                  inner_ratio=float(m.get("inner_ratio", 0.5)),
                                  kv_pool=bool(m.get("kv_pool", True)),
                                  position=str(m.get("position_encoding",
                                                     _search_default("position_encoding")))),
                  cell)
    blocks = sorted({r.block for r in plan.rows if r.kind == "baseline"} | {str(cell)})
    sb, rb = int(plan.search_data.get("batch_size", 16)), int(plan.retrain_data["batch_size"])
    t, px = plan.clip
    console.print(f"calibrating: a few training steps of the supernet and of {len(blocks)} "
                  f"networks ({plan.threads} thread(s)) …")
    t0 = time.perf_counter()
    try:  # in this process: a few steps of small networks, no data
        result = run_job({
            "kind": "calibrate", "key": "calibrate", "search_model": plan.search_model,
            "retrain_model": plan.retrain_model, "num_classes": plan.num_classes,
            "search_shape": [sb, 3, t, px, px], "retrain_shape": [rb, 3, t, px, px],
            "blocks": blocks, "steps": 2, "threads": plan.threads})
    except Exception as err:  # noqa: BLE001 - the plan is printed without the estimate
        console.print(f"calibration failed: {one_line(err)}", markup=False)
        return None
    wall = time.perf_counter() - t0
    counts = _split_counts(plan)
    st, rt = plan.search_trainer, plan.retrain_trainer
    rdata = plan.retrain_data
    ebs = int(rdata.get("eval_batch_size") or rb)
    val_views = counts["val"] * int(rdata.get("val_clips", 1))
    test_views = counts["test"] * int(rdata.get("test_clips", 1)) * int(rdata.get("test_crops", 1))
    r_steps = _limit(rt.get("limit_train_batches"), counts["train"] // rb)
    r_val = _limit(rt.get("limit_val_batches"), math.ceil(val_views / ebs))
    r_test = _limit(rt.get("limit_test_batches"), math.ceil(test_views / ebs))

    def retrain_s(step: float) -> float:
        per_epoch = r_steps * step + r_val * step / 3
        return int(rt.get("max_epochs", 1)) * per_epoch + r_test * step / 3 + RUN_OVERHEAD_S

    it = float(result["supernet_iteration_s"])
    s_steps = _limit(st.get("limit_train_batches"), counts["train"] // 2 // sb)
    s_val = _limit(st.get("limit_val_batches"), math.ceil(counts["val"] / sb))
    est = {"search": int(st.get("max_epochs", 1)) * (s_steps * it + s_val * it / 6)
           + RUN_OVERHEAD_S}
    times = result["blocks"]
    for row in plan.rows:
        step = times.get(row.block, times[str(cell)])
        est[row.key] = retrain_s(float(step))
    est["decode"] = sum(counts.values()) * DECODE_S_PER_VIDEO
    console.print(f"  supernet search iteration (batch {sb}): {it:.3f} s; training step "
                  f"(batch {rb}): " + ", ".join(
                      f"{Path(b).stem if b.endswith('.json') else b} {float(v):.3f} s"
                      for b, v in times.items()) + f" (calibration took {_fmt_s(wall)})",
                  markup=False)
    return est


def _print_plan(plan: Plan, runner: Runner, console: Any) -> None:
    console.print(f"results: {plan.out}\nwork:    {plan.work}", markup=False)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
    todo_search = [j for j in plan.searches if not runner.srch.done(j.key)]
    todo_rows = {r.key: sum(not runner.acc.done(r.key, s) for s in plan.train_seeds)
                 for r in plan.rows}
    keys = {j.key for j in todo_search}
    retrains: dict[str, str] = {}  # as the schedule: one job retrains a lost supernet
    for job in plan.searches:
        state = "done" if job not in todo_search else "to run"
        if job in todo_search and job.source is not None:  # a rule that shares a supernet
            found = runner.trained_supernet(job)
            if found is not None:
                state = f"to re-select from {found[0]} (its supernet is trained)"
            elif job.source in keys:
                state = f"to re-select from {job.source} once that search is done"
            elif job.source in retrains:
                state = (f"to re-select from {retrains[job.source]} once that search is "
                         f"done (it trains {job.source}'s supernet again)")
            else:
                retrains[job.source] = job.key
                state = f"to run (a full search: {job.source}'s checkpoint is gone)"
        console.print(f"  search {job.label}: {state}", markup=False)
    for row in plan.rows:
        done = len(plan.train_seeds) - todo_rows[row.key]
        console.print(f"  train  {row.label}: {done}/{len(plan.train_seeds)} seeds done",
                      markup=False)
    if not todo_search and not any(todo_rows.values()) and runner.step.done("steptime"):
        console.print(f"runs: {runner.total}; all done")
        return
    total, left = runner.estimate()
    if total is not None:
        console.print(f"runs: {runner.total}; from the runs timed so far: full run ≈ "
                      f"{_fmt_s(total)}, left ≈ {_fmt_s(left)}")
        return
    est = upfront_estimate(plan, runner, console)
    if est is None:
        return
    n_train = sum(todo_rows.values())
    left = (len(todo_search) * est["search"] + est["decode"] + 30.0
            + sum(est[k] * n for k, n in todo_rows.items()))
    per_row = statistics.fmean(est[r.key] for r in plan.rows)
    console.print(f"runs: {runner.total} ({len(todo_search)} searches ≈ "
                  f"{_fmt_s(est['search'])} each, {n_train} trainings ≈ {_fmt_s(per_row)} each "
                  f"on average); calibrated estimate of what is left ≈ "
                  f"{_fmt_s(left / plan.args.jobs)} with {plan.threads} thread(s) per run, "
                  f"{plan.args.jobs} at a time")


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.run`` / ``attnas bench``; returns the exit code (0: all ok,
    1: some run failed, 2: bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        plan = build_plan(argv)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except BenchError as err:
        print(f"attnas bench: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the parent only counts MACs and draws
    try:
        return _main(plan)
    finally:
        torch.set_num_threads(threads)


def _stale(plan: Plan, runner: Runner) -> list[str]:
    """The planned runs whose recorded row was made with other settings than the plan's
    (each run's fingerprint covers what it depends on; rows of runs the plan does not
    name are left alone)."""
    out = []
    for job in plan.searches:
        r = runner.srch.get(job.key)
        if r and r.get("settings") != job.settings:
            out.append(f"search {job.key}: {r.get('settings')}, now {job.settings}")
    for row in plan.rows:
        for seed in plan.train_seeds:
            r = runner.acc.get(row.key, seed)
            if r and r.get("settings") != row.settings:
                out.append(f"{row.key} seed {seed}: {r.get('settings')}, now {row.settings}")
    r = runner.step.get("steptime")
    if r and r.get("settings") != plan.steptime_settings:
        out.append(f"steptime: {r.get('settings')}, now {plan.steptime_settings}")
    return out


def _main(plan: Plan) -> int:
    """Check the results folder, then plan or run."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    runner = Runner(plan, console)
    stale = _stale(plan, runner)
    if stale:
        print(f"attnas bench: error: {plan.out} holds results made with other settings "
              f"({'; '.join(stale[:3])}{' …' if len(stale) > 3 else ''}); use another "
              f"--out or remove its CSV files", file=sys.stderr)
        return 2
    if plan.args.plan:
        _print_plan(plan, runner, console)
        return 0
    if plan.args.report:  # read-only: safe while another bench writes to the folder
        md = _report(plan, runner)
        console.print(f"tables of the finished runs: {md}")
        return 0
    where = "nothing to run"
    if runner.todo():
        try:  # an unreachable Ray cluster is refused before anything is written
            where = executor.start(plan.args.address, plan.threads * plan.args.jobs)
        except ValueError as err:
            print(f"attnas bench: error: {err}", file=sys.stderr)
            return 2
    plan.out.mkdir(parents=True, exist_ok=True)
    plan.work.mkdir(parents=True, exist_ok=True)
    import fcntl

    lock = (plan.work / "bench.lock").open("w")  # one writer per results folder
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        executor.stop()
        print(f"attnas bench: error: another attnas bench is writing to {plan.out}",
              file=sys.stderr)
        return 2
    try:
        return _run(plan, runner, console, where)
    finally:
        executor.stop()
        lock.close()


def _report(plan: Plan, runner: Runner) -> Path:
    """Write ``accuracy.md`` and ``accuracy.png`` from the runs finished so far."""
    table = summarise(plan, runner.acc)
    png = plot(table, plan.out / "accuracy.png",
               f"{plan.retrain_model.get('backbone', 'proxy')} on "
               f"{'synthetic' if plan.synth else Path(plan.retrain_data['root']).name} "
               f"{plan.clip[0]}×{plan.clip[1]}² "
               f"({len(plan.train_seeds)} training seed(s))")
    return write_markdown(plan, runner, table, png)


def _run(plan: Plan, runner: Runner, console: Any, where: str) -> int:
    """Every step, then the reports; the exit code."""
    t0 = time.perf_counter()
    console.print(f"[bold]attnas bench[/bold]{' --quick' if plan.quick else ''}: "
                  f"{len(plan.searches)} searches, {len(plan.rows)} rows × "
                  f"{len(plan.train_seeds)} training seeds, {plan.threads} thread(s) per run → "
                  f"{plan.out}")
    for note in plan.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    console.print(f"runs execute on: {escape(where)}")
    if plan.synth is not None:
        console.print(f"data: {escape(plan.retrain_data['root'])} (generated if missing)")
        try:
            ensure_synthetic(plan.retrain_data["root"], **plan.synth, progress=not plan.quick)
        except (SynthError, ValueError, OSError) as err:
            print(f"attnas bench: error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
    else:
        console.print(f"data: {escape(plan.retrain_data['root'])} ({plan.num_classes} "
                      f"classes, clips of {plan.clip[0]} frames × {plan.clip[1]}² px)")
    _random_genotypes(plan)
    interrupted = False
    try:
        schedule(plan, runner)
    except KeyboardInterrupt:
        interrupted = True
        console.print("[red]interrupted[/red]: finished runs are kept; re-run the same "
                      "command to resume")
    finally:
        executor.stop()
    md = _report(plan, runner)
    if runner.skipped:
        console.print(f"skipped {runner.skipped} finished runs (recorded in {plan.out})")
    console.print(f"ran {runner.ran} runs in {_fmt_s(time.perf_counter() - t0)}; "
                  f"{runner.failed} failed; tables: {md}")
    if interrupted:
        return 130
    all_ok = all(r.get("status") == "ok" for r in runner.acc.rows.values()) and \
        all(r.get("status") == "ok" for r in runner.srch.rows.values())
    return 0 if all_ok and runner.failed == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
