"""The generalisation protocol: a cell searched once, retrained without searching again in
other backbones, on another modality and on a dataset the search never saw.

Rows are (backbone, modality, dataset); in each row ``none``, ``nonlocal`` and the cell are
trained from scratch with the same budget and ``--seeds`` training seeds, and tested
(video-level top-1 on the test split). Defaults (what fits 2 CPU cores, resumable):

* ``proxy / rgb / synth``   -- the search's own setting (the reference row);
* ``s3d / rgb / synth``     -- S3D, 16 frames at rate 2 (the whole 32-frame video);
* ``i3d_r50 / rgb / synth`` -- full-width I3D-R50, 16 frames at rate 2;
* ``proxy / flow / synth``  -- optical-flow input (OpenCV Farneback, cached);
* ``proxy / rgb / synth-b`` -- the embedded generator with another shape the search never
  saw: 3 classes, 24 frames of 32x32 px, another seed.

The cell is the default group's seed-0 cell of the accuracy benchmark (``--cell`` for
another genotype). Results go to ``transfer.csv`` (one line per run, resumed: a finished
run with the same settings is not run again) and ``transfer.md`` (the table and its
target: the cell >= the non-local block in a majority of rows).

    python -m benchmarks.transfer [--seeds 3] [--epochs 3] [--rows proxy/rgb/synth,...]
        [--cell PATH] [--jobs 2] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
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

from benchmarks.common import append_run, read_runs, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results"
DEFAULT_CELL = OUT / "genotypes" / "searched_uniform_perturb_sincos_5ep__s0.json"
BLOCKS = ("none", "nonlocal", "cell")
#: dataset name -> synthetic generator parameters (generated under data/ on first use)
DATASETS = {
    "synth": {"root": "data/synth", "classes": 4, "videos_per_class": 1500, "frames": 32,
              "size": 24, "seed": 0},
    "synth-b": {"root": "data/synth_b", "classes": 3, "videos_per_class": 400, "frames": 24,
                "size": 32, "seed": 11},
}
#: backbone -> (frames, sampling rate) read from each video
CLIP = {"proxy": (None, 1), "s3d": (16, 2), "i3d_r50": (16, 2)}
DEFAULT_ROWS = ("proxy/rgb/synth", "s3d/rgb/synth", "i3d_r50/rgb/synth", "proxy/flow/synth",
                "proxy/rgb/synth-b")
QUICK_ROWS = ("proxy/rgb/synth", "proxy/flow/synth")
FIELDS = ["row", "block", "seed", "settings", "status", "video_top1", "params", "macs",
          "wall_s", "finished", "error"]


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
    p.add_argument("--out", default=str(OUT), help="results folder")
    return p


def _plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run: ``{"row", "block", "seed", "spec", "settings"}``."""
    rows = [r.strip() for r in (args.rows or ",".join(QUICK_ROWS if args.quick
                                                       else DEFAULT_ROWS)).split(",")
            if r.strip()]
    datasets = dict(DATASETS)
    if args.quick:
        out = Path(args.out)
        datasets = {"synth": {"root": str(out / "_data" / "synth"), "classes": 2,
                              "videos_per_class": 8, "frames": 8, "size": 16, "seed": 3}}
    cell = Path(args.cell)
    if not cell.is_file():
        raise ValueError(f"--cell: no such genotype {args.cell!r}")
    if args.seeds < 1 or args.epochs < 1 or args.jobs < 1 or args.threads < 1:
        raise ValueError("--seeds, --epochs, --jobs and --threads must be >= 1")
    from datamodules.modality import check_modality
    from supernet.factory import BACKBONE_NAMES

    runs = []
    for row in rows:
        parts = row.split("/")
        if len(parts) != 3:
            raise ValueError(f"--rows: {row!r} is not backbone/modality/dataset")
        backbone, modality, dataset = parts
        if backbone not in BACKBONE_NAMES:
            raise ValueError(f"--rows {row!r}: unknown backbone {backbone!r}; accepted: "
                             f"{', '.join(BACKBONE_NAMES)}")
        check_modality(modality)
        if dataset not in datasets:
            raise ValueError(f"--rows {row!r}: unknown dataset {dataset!r}; accepted: "
                             f"{', '.join(datasets)}")
        d = datasets[dataset]
        frames, rate = CLIP.get(backbone, (None, 1))
        frames = min(frames or d["frames"], d["frames"])
        data = {"root": str(REPO / d["root"]) if not Path(d["root"]).is_absolute()
                else d["root"], "synthetic": True,
                "synthetic_params": {k: d[k] for k in ("classes", "videos_per_class",
                                                       "frames", "size", "seed")},
                "num_frames": frames, "sampling_rate": rate if frames * rate <= d["frames"]
                else 1, "crop_size": d["size"], "batch_size": 4 if args.quick else 16,
                "num_workers": 0 if args.quick else 1, "test_clips": 1 if args.quick else 2,
                "cache": "memory", "modality": modality}
        trainer = {"max_epochs": 1 if args.quick else args.epochs, "accelerator": "cpu",
                   "devices": 1, "log_every_n_steps": 20}
        limit = 2 if args.quick and args.limit_batches is None else args.limit_batches
        if limit:
            trainer.update(limit_train_batches=limit, limit_val_batches=1, limit_test_batches=2)
        backbone_kwargs = {"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8} \
            if args.quick and backbone == "proxy" else {}
        for block in (("none", "cell") if args.quick else BLOCKS):
            model = {"backbone": backbone, "block": str(cell.resolve()) if block == "cell"
                     else block, "optimizer": "adamw", "lr": 0.002, "lr_min": 0.0,
                     "weight_decay": 0.05, "warmup_epochs": 0.5,
                     "in_channels": 2 if modality == "flow" else 3,
                     "backbone_kwargs": backbone_kwargs}
            cell_doc = cell.read_text() if block == "cell" else ""
            settings = hashlib.sha1(json.dumps([data, trainer, model, cell_doc],
                                               sort_keys=True).encode()).hexdigest()[:12]
            for seed in range(1 if args.quick else args.seeds):
                runs.append({"row": row, "block": block, "seed": seed, "settings": settings,
                             "spec": {"kind": "retrain", "key": f"{row}/{block}",
                                      "seed": seed, "data": data, "trainer": trainer,
                                      "model": model, "threads": args.threads}})
    return runs


def _read(path: Path) -> dict[tuple[str, str, int, str], dict[str, str]]:
    return read_runs(path)


def _append(path: Path, rec: dict[str, Any]) -> None:
    append_run(path, FIELDS, rec)


def _cost(spec: dict[str, Any]) -> dict[str, Any]:
    from supernet.cost import model_cost

    m, d = spec["model"], spec["data"]
    try:
        res = model_cost(m["backbone"], m["block"], None, frames=d["num_frames"],
                         size=d["crop_size"], num_classes=d["synthetic_params"]["classes"],
                         latency=False, backbone_kwargs={**m["backbone_kwargs"],
                                                         "in_channels": m["in_channels"]})
    except (ValueError, RuntimeError):
        return {}
    return {"params": res["params"], "macs": res["macs"]}


def _run(run: dict[str, Any], work: Path) -> dict[str, Any]:
    slug = f"{run['row']}_{run['block']}_s{run['seed']}".replace("/", "-")
    run_dir = work / slug
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {**run["spec"], "run_dir": str(run_dir)}
    spec_path, result_path = run_dir / "spec.json", run_dir / "result.json"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    t0 = time.perf_counter()
    with (run_dir / "log.txt").open("w") as log:
        subprocess.run([sys.executable, "-m", "benchmarks._jobs", str(spec_path),
                        str(result_path)], stdout=log, stderr=subprocess.STDOUT, env=env,
                       cwd=str(REPO), check=False)
    wall = time.perf_counter() - t0
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        result = {"status": "failed", "error": f"no result (see {run_dir / 'log.txt'})"}
    return {"row": run["row"], "block": run["block"], "seed": run["seed"],
            "settings": run["settings"], "status": result.get("status"),
            "video_top1": result.get("video_top1"), "wall_s": round(wall, 1),
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
            d = 100 * (statistics.fmean(cells["cell"]) - statistics.fmean(cells["nonlocal"]))
            diff = f"{d:+.1f}"
            decided += 1
            wins += d >= 0
        params = " / ".join(f"{int(float(cost[b][0])):,}" if b in cost and cost[b][0] != "—"
                            else "—" for b in BLOCKS)
        macs = " / ".join(f"{float(cost[b][1]) / 1e6:,.0f}" if b in cost and cost[b][1] != "—"
                          else "—" for b in BLOCKS)
        lines.append(f"| {row} | {_stats(cells.get('none', []))} | "
                     f"{_stats(cells.get('nonlocal', []))} | {_stats(cells.get('cell', []))} | "
                     f"{diff} | {params} | {macs} |")
    lines += ["", f"Cell: `{cell}`. Top-1: video level on the test split, mean ± std over "
              "training seeds.", ""]
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
        print(f"benchmarks.transfer: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, work = out / "transfer.csv", out / "_work" / "transfer"
    done = _read(csv_path)
    todo = [r for r in runs if (r["row"], r["block"], r["seed"], r["settings"]) not in done
            or done[(r["row"], r["block"], r["seed"], r["settings"])]["status"] != "ok"]
    print(f"transfer: {len(runs)} runs, {len(runs) - len(todo)} done, {len(todo)} to run "
          f"({args.jobs} at a time) -> {csv_path}", flush=True)

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
    write_text_atomic(out / "transfer.md", "\n".join(lines) + "\n")
    print("\n".join(report(runs, done, args.cell)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
