"""The generalisation protocol: a cell searched once, retrained without searching again in
other backbones, on another modality and on a dataset the search never saw.

Rows are (backbone, modality, dataset); in each row ``none``, ``nonlocal`` and the cell are
trained from scratch with the accuracy benchmark's retrain settings (``benchmarks.run``:
the retrain config, its epochs, batch and optimiser) and ``--seeds`` training seeds, and
tested (video-level top-1 on the test split). Defaults (what fits 2 CPU cores, resumable;
every row costs about what a proxy row costs, 120-200 MMACs per clip):

* ``proxy / rgb / synth``   -- the search's own setting, the reference row. It is the
  accuracy benchmark's own rows (``none``, ``nonlocal`` and the cell's searched row), so
  finished rows of ``accuracy.csv`` with the same settings are taken from there instead of
  being trained again (the CSV says ``source: accuracy.csv``);
* ``s3d / rgb / synth``     -- S3D at full width, 8 frames at rate 4 (the whole video);
* ``i3d_r50 / rgb / synth`` -- I3D-R50 at half width (``width_div=2``: same depth and
  kernels, a quarter of the MACs), 8 frames at rate 4;
* ``proxy / flow / motion`` -- optical-flow input (OpenCV Farneback, computed once before
  the runs and cached) on the generator's motion task (``task="motion"``: the class is the
  direction of the first mover; the synth shape, another seed). Not ``flow / synth``: the
  colour task's class is a colour, which flow cannot see (every block sits at chance there);
  ``--rows proxy/flow/synth`` still runs it;
* ``proxy / rgb / synth-b`` -- the embedded generator with another shape the search never
  saw: 3 classes, 24 frames of 32x32 px, another seed.

The cell is the default group's seed-0 cell of the accuracy benchmark (``--cell`` for
another genotype). Results go to ``transfer.csv`` (one line per run, resumed: a finished
run with the same settings is not run again) and ``transfer.md`` (the table and its
target: the cell >= the non-local block in a majority of rows).

    python -m benchmarks.transfer [--seeds 3] [--epochs 3] [--rows proxy/rgb/synth,...]
        [--cell PATH] [--jobs 2] [--quick] [--plan] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, append_run, read_runs
from benchmarks.plan import BenchError, build_plan
from datamodules.atomic import atomic_write_text
from datamodules.datamodule import VideoDataModule
from datamodules.modality import check_modality, modality_channels
from datamodules.synth import SynthError, ensure_synthetic
from supernet.cost import model_cost
from supernet.factory import BACKBONE_NAMES

OUT = REPO / "benchmarks" / "results"
DEFAULT_CELL = OUT / "genotypes" / "searched_uniform_perturb_sincos_5ep__s0.json"
BLOCKS = ("none", "nonlocal", "cell")
#: dataset name -> synthetic generator parameters (generated under data/ on first use);
#: ``synth`` is whatever the accuracy benchmark reads (its config's generator)
DATASETS = {
    "synth-b": {"root": "data/synth_b", "classes": 3, "videos_per_class": 400, "frames": 24,
                "size": 32, "seed": 11},
    # the synth benchmark's shape with motion in place of colour: flow cannot see colour,
    # so the colour task is at chance on flow input (27 % for every block, measured)
    "motion": {"root": "data/synth_motion", "classes": 4, "videos_per_class": 1500,
               "frames": 32, "size": 24, "seed": 21, "task": "motion"},
}
#: backbone -> (frames, sampling rate) read from each video (None: every frame)
CLIP = {"proxy": (None, 1), "s3d": (8, 4), "i3d_r50": (8, 4)}
#: backbone -> its keyword arguments in this protocol (sized for 2 CPU cores)
BACKBONE_KWARGS: dict[str, dict[str, Any]] = {"i3d_r50": {"width_div": 2}}
DEFAULT_ROWS = ("proxy/rgb/synth", "s3d/rgb/synth", "i3d_r50/rgb/synth", "proxy/flow/motion",
                "proxy/rgb/synth-b")
QUICK_ROWS = ("proxy/rgb/synth", "proxy/flow/synth")
REFERENCE_ROW = "proxy/rgb/synth"
FIELDS = ["row", "block", "seed", "settings", "status", "video_top1", "params", "macs",
          "wall_s", "finished", "error", "source"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.transfer",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=None,
                   help="comma-separated backbone/modality/dataset rows (default: "
                        + ",".join(DEFAULT_ROWS) + ")")
    p.add_argument("--cell", default=str(DEFAULT_CELL), help="the searched genotype .json")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per block")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (every run)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (subprocesses)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--limit-batches", type=int, default=None, help="smoke test: batches/epoch")
    p.add_argument("--quick", action="store_true",
                   help="toy scale: tiny generated data, 1 seed, 1 epoch, 2 rows (a test)")
    p.add_argument("--out", default=str(OUT), help="results folder (the accuracy "
                   "benchmark's: its finished reference rows are taken from accuracy.csv)")
    p.add_argument("--plan", action="store_true",
                   help="print every run and whether it is done, taken from accuracy.csv "
                        "or to run; run nothing")
    p.add_argument("--report", action="store_true",
                   help="print the table of what has finished so far; run nothing")
    return p


def _bench_plan(args: argparse.Namespace) -> Any:
    """The accuracy benchmark's plan this protocol takes its retrain settings (and its
    reference rows) from; raises ValueError on a bad setting."""
    argv = ["--out", args.out, "--train-seeds", str(args.seeds)]
    if args.quick:
        argv.append("--quick")
    else:
        argv += ["--retrain-epochs", str(args.epochs)]
    if args.limit_batches is not None:
        argv += ["--limit-batches", str(args.limit_batches)]
    try:
        return build_plan(argv)
    except BenchError as err:
        raise ValueError(str(err)) from None


def _dataset(name: str, plan: Any) -> dict[str, Any]:
    """``{"root", "classes", "videos_per_class", "frames", "size", "seed"}`` of a dataset
    name (``synth``: the accuracy benchmark's own data)."""
    if name == "synth":
        if plan.synth is None:
            raise ValueError("the accuracy benchmark's configs read a dataset of their own, "
                             "not the synthetic benchmark; give --rows with other datasets")
        return {"root": plan.retrain_data["root"], **plan.synth}
    d = dict(DATASETS[name])
    d["root"] = str(REPO / d["root"]) if not Path(d["root"]).is_absolute() else d["root"]
    return d


def _reference(plan: Any, block: str, cell: Path) -> Any:
    """The accuracy benchmark's row that trains ``block`` exactly as the reference row does
    (None when the plan has no such row)."""
    for row in plan.rows:
        if row.kind not in ("baseline", "searched") or row.epochs is not None:
            continue
        if block == "cell" and row.block.endswith(".json") and \
                Path(row.block).resolve() == cell.resolve():
            return row
        if block != "cell" and row.block == block:
            return row
    return None


def _plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run: ``{"row", "block", "seed", "spec", "settings", "reference"}``
    (``reference``: the accuracy benchmark's row key it equals, or None)."""
    rows = [r.strip() for r in (args.rows or ",".join(QUICK_ROWS if args.quick
                                                       else DEFAULT_ROWS)).split(",")
            if r.strip()]
    cell = Path(args.cell)
    if not cell.is_file():
        raise ValueError(f"--cell: no such genotype {args.cell!r}")
    if args.seeds < 1 or args.epochs < 1 or args.jobs < 1 or args.threads < 1:
        raise ValueError("--seeds, --epochs, --jobs and --threads must be >= 1")
    parsed = []
    for row in rows:
        parts = row.split("/")
        if len(parts) != 3:
            raise ValueError(f"--rows: {row!r} is not backbone/modality/dataset")
        backbone, modality, dataset = parts
        if backbone not in BACKBONE_NAMES:
            raise ValueError(f"--rows {row!r}: unknown backbone {backbone!r}; accepted: "
                             f"{', '.join(BACKBONE_NAMES)}")
        check_modality(modality)
        if dataset not in ("synth", *DATASETS) or (args.quick and dataset != "synth"):
            raise ValueError(f"--rows {row!r}: unknown dataset {dataset!r}; accepted: "
                             f"{', '.join(('synth',) if args.quick else ('synth', *DATASETS))}")
        parsed.append((row, backbone, modality, dataset))
    plan = _bench_plan(args)
    runs = []
    for row, backbone, modality, dataset in parsed:
        d = _dataset(dataset, plan)
        frames, rate = CLIP.get(backbone, (None, 1))
        frames = min(frames or d["frames"], d["frames"])
        data = {**plan.retrain_data, "root": d["root"], "synthetic": True,
                "synthetic_params": {k: d[k] for k in ("classes", "videos_per_class",
                                                       "frames", "size", "seed", "task")
                                     if k in d},
                "num_frames": frames,
                "sampling_rate": rate if frames * rate <= d["frames"] else 1,
                "crop_size": d["size"]}
        if modality != "rgb":
            data["modality"] = modality
        trainer = dict(plan.retrain_trainer)
        for block in (("none", "cell") if args.quick else BLOCKS):
            model = {**plan.retrain_model, "backbone": backbone,
                     "block": str(cell.resolve()) if block == "cell" else block}
            if backbone != "proxy":
                model.pop("backbone_kwargs", None)
            if BACKBONE_KWARGS.get(backbone):
                model["backbone_kwargs"] = dict(BACKBONE_KWARGS[backbone])
            if modality != "rgb":
                model["in_channels"] = modality_channels(modality)
            reference = None
            if row == REFERENCE_ROW:
                ref = _reference(plan, block, cell)
                if ref is not None and data == plan.retrain_data and \
                        trainer == plan.trainer_for(ref) and \
                        model == {**plan.retrain_model, "block": ref.block}:
                    reference = ref
            cell_doc = cell.read_text() if block == "cell" else ""
            settings = reference.settings if reference is not None else hashlib.sha1(
                json.dumps([data, trainer, model, cell_doc], sort_keys=True).encode()
            ).hexdigest()[:12]
            for seed in range(1 if args.quick else args.seeds):
                runs.append({"row": row, "block": block, "seed": seed, "settings": settings,
                             "reference": None if reference is None else reference.key,
                             "spec": {"kind": "retrain", "key": f"{row}/{block}",
                                      "seed": seed, "data": data, "trainer": trainer,
                                      "model": model, "threads": args.threads}})
    return runs


def _prepare_flow(data: dict[str, Any], progress: bool) -> None:
    """Compute the optical flow of a flow row's dataset once, before the runs (runs at a
    time would each compute it), where its runs will look for it."""
    VideoDataModule(**data).prepare_flow(progress=progress)


def _from_accuracy(runs: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """The finished ``accuracy.csv`` rows that are runs of this protocol (same row of the
    accuracy benchmark, seed and settings), as transfer records."""
    path = out / "accuracy.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        acc = {(r["row"], r["seed"], r["settings"]): r for r in csv.DictReader(f)
               if r.get("status") == "ok"}
    found = []
    for run in runs:
        rec = acc.get((run["reference"], str(run["seed"]), run["settings"])) \
            if run["reference"] else None
        if rec is not None:
            found.append({"row": run["row"], "block": run["block"], "seed": run["seed"],
                          "settings": run["settings"], "status": "ok",
                          "video_top1": rec["video_top1"], "params": rec["params"],
                          "macs": rec["macs"], "wall_s": rec["wall_s"],
                          "finished": rec["finished"], "error": "",
                          "source": f"accuracy.csv ({run['reference']})"})
    return found


def _read(path: Path) -> dict[tuple[str, str, int, str], dict[str, str]]:
    return read_runs(path)


def _append(path: Path, rec: dict[str, Any]) -> None:
    append_run(path, FIELDS, rec)


def _cost(spec: dict[str, Any]) -> dict[str, Any]:
    m, d = spec["model"], spec["data"]
    try:
        res = model_cost(m["backbone"], m["block"], m.get("positions"),
                         frames=d["num_frames"], size=d["crop_size"],
                         num_classes=d["synthetic_params"]["classes"],
                         block_kwargs=m.get("block_kwargs"), latency=False,
                         backbone_kwargs={**(m.get("backbone_kwargs") or {}),
                                          "in_channels": m.get("in_channels", 3)})
    except (ValueError, RuntimeError):
        return {}
    return {"params": res["params"], "macs": res["macs"]}


def _run(run: dict[str, Any], work: Path) -> dict[str, Any]:
    slug = f"{run['row']}_{run['block']}_s{run['seed']}".replace("/", "-")
    run_dir = work / slug
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {**run["spec"], "run_dir": str(run_dir),
            "resume_dir": str(work / "resume")}  # a run killed part-way resumes
    spec_path, result_path = run_dir / "spec.json", run_dir / "result.json"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    t0 = time.perf_counter()
    with (run_dir / "log.txt").open("w") as log:
        subprocess.run([sys.executable, "-m", "benchmarks.jobs", str(spec_path),
                        str(result_path)], stdout=log, stderr=subprocess.STDOUT, env=env,
                       cwd=str(REPO), check=False)
    wall = time.perf_counter() - t0
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        result = {"status": "failed", "error": f"no result (see {run_dir / 'log.txt'})"}
    return {"row": run["row"], "block": run["block"], "seed": run["seed"],
            "settings": run["settings"], "status": result.get("status"),
            "video_top1": result.get("video_top1"),
            "wall_s": round(wall + float(result.get("prior_s") or 0.0), 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "error": result.get("error", ""),
            **_cost(spec)}


def _stats(values: list[float]) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"


def report(runs: list[dict[str, Any]], done: dict[tuple[str, str, int, str], dict[str, str]],
           cell: str) -> list[str]:
    """The transfer table (markdown lines) and its target."""
    rows = list(dict.fromkeys(r["row"] for r in runs))
    lines = ["| backbone / modality / dataset | none | nonlocal | cell | cell − nonlocal | "
             "params (none / nonlocal / cell) | MMACs (none / nonlocal / cell) |",
             "|---|---:|---:|---:|---:|---|---|"]
    wins = decided = 0
    for row in rows:
        cells: dict[str, list[float]] = {}
        cost: dict[str, tuple[str, str]] = {}
        for r in runs:
            if r["row"] != row:
                continue
            rec = done.get((r["row"], r["block"], r["seed"], r["settings"]))
            if rec and rec["status"] == "ok" and rec["video_top1"]:
                cells.setdefault(r["block"], []).append(float(rec["video_top1"]))
                cost[r["block"]] = (rec.get("params") or "—", rec.get("macs") or "—")
        diff = "—"
        if cells.get("cell") and cells.get("nonlocal"):
            a, b = cells["cell"], cells["nonlocal"]
            d = 100 * (statistics.fmean(a) - statistics.fmean(b))
            se = 100 * (sum(statistics.variance(x) / len(x) for x in (a, b) if len(x) > 1)
                        ) ** 0.5
            diff = f"{d:+.1f} ± {se:.1f}"
            decided += 1
            wins += d >= 0
        params = " / ".join(f"{int(float(cost[b][0])):,}" if b in cost and cost[b][0] != "—"
                            else "—" for b in BLOCKS)
        macs = " / ".join(f"{float(cost[b][1]) / 1e6:,.0f}" if b in cost and cost[b][1] != "—"
                          else "—" for b in BLOCKS)
        lines.append(f"| {row} | {_stats(cells.get('none', []))} | "
                     f"{_stats(cells.get('nonlocal', []))} | {_stats(cells.get('cell', []))} | "
                     f"{diff} | {params} | {macs} |")
    shown = Path(cell).resolve()
    shown_cell = shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown
    lines += ["", f"Cell: `{shown_cell}`. Top-1: video level on the test split, mean ± std over "
              "training seeds; cell − nonlocal: difference of means ± its standard error. "
              "Params and MACs: the whole network, one clip of the row's input.", ""]
    if decided:
        verdict = "met" if wins * 2 > len(rows) else "not met"
        lines.append(f"- Target (cell ≥ nonlocal in a majority of the {len(rows)} rows): "
                     f"{wins} of {decided} finished rows — **{verdict}**"
                     + ("" if decided == len(rows) else " so far") + ".")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run (resuming) and report; bad input: one line, exit 2."""
    args = _parser().parse_args(argv)
    try:
        runs = _plan(args)
    except ValueError as err:
        print(f"benchmarks.transfer: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, work = out / "transfer.csv", out / "_work" / "transfer"
    done = _read(csv_path)

    def finished(r: dict[str, Any]) -> bool:
        rec = done.get((r["row"], r["block"], r["seed"], r["settings"]))
        return rec is not None and rec["status"] == "ok"

    imported = [rec for rec in _from_accuracy([r for r in runs if not finished(r)], out)]
    if args.plan:
        taken = {(r["row"], r["block"], r["seed"]) for r in imported}
        for r in runs:
            state = ("done" if finished(r) else "from accuracy.csv "
                     f"({r['reference']})" if (r["row"], r["block"], r["seed"]) in taken
                     else "to run" + (f" (or from accuracy.csv once {r['reference']} seed "
                                      f"{r['seed']} is done)" if r["reference"] else ""))
            print(f"  {r['row']} {r['block']} seed {r['seed']}: {state}")
        return 0
    if args.report:  # read-only: rows still running or queued show as partial
        print("\n".join(report(runs, {**done, **{(r["row"], r["block"], r["seed"],
                                                   r["settings"]): r for r in imported}},
                                args.cell)))
        return 0
    for rec in imported:
        _append(csv_path, rec)
    done = _read(csv_path)
    todo = [r for r in runs if not finished(r)]
    print(f"transfer: {len(runs)} runs, {len(runs) - len(todo)} done ({len(imported)} just "
          f"taken from accuracy.csv), {len(todo)} to run ({args.jobs} at a time) -> "
          f"{csv_path}", flush=True)
    for params in {json.dumps(r["spec"]["data"]["synthetic_params"], sort_keys=True):
                   r["spec"]["data"]["root"] for r in todo}.items():
        try:  # once, before the runs (two runs must not generate one folder at once)
            ensure_synthetic(params[1], **json.loads(params[0]), progress=not args.quick)
        except (SynthError, ValueError, OSError) as err:
            print(f"benchmarks.transfer: error: {' '.join(str(err).split())}",
                  file=sys.stderr)
            return 2
    for data in {r["spec"]["data"]["root"]: r["spec"]["data"] for r in todo
                 if r["spec"]["data"].get("modality") == "flow"}.values():
        _prepare_flow(data, progress=not args.quick)

    def one(run: dict[str, Any]) -> None:
        rec = _run(run, work)
        _append(csv_path, rec)
        top1 = rec["video_top1"]
        shown = "" if top1 is None else f" top-1 {100 * float(top1):.1f} %"
        print(f"  {run['row']} {run['block']} seed {run['seed']}: {rec['status']}{shown} "
              f"in {rec['wall_s']:.0f} s", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, todo))
    done = _read(csv_path)
    lines = ["# Transfer: one searched cell in other backbones, modalities and data", "",
             f"Command: `python -m benchmarks.transfer {' '.join(argv or sys.argv[1:])}`", "",
             *report(runs, done, args.cell)]
    atomic_write_text(out / "transfer.md", "\n".join(lines) + "\n")
    print("\n".join(report(runs, done, args.cell)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
