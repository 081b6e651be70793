"""The two-stream search benchmark (after Auto-TSNet): the progressive search against
SlowFast's hand-designed point, the single-stream proxy and random points of the space.

Rows, each trained from scratch with the same budget (``--epochs``) and ``--seeds``
training seeds, then tested (video-level top-1 on the test split):

* ``searched/s{k}``  -- ``attnas search twostream`` with seed k (``--search-seeds``), its
  ``attention.json`` retrained;
* ``slowfast``       -- SlowFast's point of the space (the anchor);
* ``proxy+none``, ``proxy+nonlocal`` -- the single-stream proxy without / with non-local;
* ``random/{i}``     -- a point drawn uniformly from the space (``--random``; no cell);
  with the config's budget (``model.cost_target``), the first draw within it: random
  points of matched cost.

Every search runs before the retrains. Results: ``twostream.csv`` (one line per search and
per run, resumed: a finished one with the same settings is not run again),
``twostream.md`` (the table, the targets -- searched >= SlowFast + 2 points at <= its MACs,
searched > random -- the search cost of each stage and the searched architectures) and
``twostream.png`` (top-1 against MMACs).

    python -m benchmarks.twostream [--seeds 3] [--epochs 3] [--search-seeds 3]
        [--random 3] [--jobs 1] [--threads 1] [--quick] [--report] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    append_run,
    finite_float,
    read_runs,
    save_figure_atomic,
)
from datamodules.atomic import atomic_write_text
from datamodules.synth import DEFAULTS as SYNTH_DEFAULTS
from supernet.cost import model_cost
from supernet.twostream.budget import TwoStreamBudget
from supernet.twostream.space import (
    RENAMED_VARIABLES,
    VARIABLE_NAMES,
    VARIABLES,
    TwoStreamArch,
    load_arch,
    migrate_values,
)

OUT = REPO / "benchmarks" / "results"
CONFIG = "configs/search/twostream.yaml"
STAGES = ("streams", "fusion", "attention")
FIELDS = ["row", "block", "seed", "settings", "status", "video_top1", "params", "macs",
          "streams_s", "fusion_s", "attention_s", "values", "wall_s", "finished", "error"]
QUICK_PROXY = {"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}
OPTIM = {"optimizer": "adamw", "lr": 0.002, "lr_min": 0.0, "weight_decay": 0.05,
         "warmup_epochs": 0.5}
Key = tuple[str, str, int, str]
#: the fingerprints hash a random row's values under the names they had when the stored
#: results were recorded (``frame_ratio`` was ``alpha``), so those rows still count
_FINGERPRINT_NAMES = {new: old for old, new in RENAMED_VARIABLES.items()}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.twostream",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="training seeds per row")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (every row)")
    p.add_argument("--search-seeds", type=int, default=3, help="searches (seeds 0..n-1)")
    p.add_argument("--random", type=int, default=3, help="random architectures")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (subprocesses)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--limit-batches", type=int, default=None, help="smoke test: batches/epoch")
    p.add_argument("--quick", action="store_true",
                   help="toy scale: tiny generated data, 1 search, 1 seed, 1 epoch (a test)")
    p.add_argument("--report", action="store_true",
                   help="only rewrite twostream.md / .png from the CSV")
    p.add_argument("--out", default=str(OUT), help="results folder")
    return p


def _hash(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def random_values(seed: int, budget: Any = None) -> dict[str, Any]:
    """A point of the two-stream space, every variable drawn uniformly (attention ``cell``
    excluded) with ``random.Random(seed)``; with a
    :class:`~supernet.twostream.budget.TwoStreamBudget`, the first draw within it (the searched
    networks' budget: random points of matched cost)."""
    rng = random.Random(seed)
    for _ in range(10_000):
        values = {v.name: rng.choice([x for x in v.values if x != "cell"]) for v in VARIABLES}
        if budget is None or budget.macs(values) <= budget.target:
            return values
    raise ValueError(f"no random point of the space within the budget {budget.spec!r}")


def _budget(data: dict[str, Any]) -> Any:
    """The searches' budget (the config's ``model.cost_target``) at the bench's network and
    clip, or None without one."""
    import yaml

    target = (yaml.safe_load((REPO / CONFIG).read_text()).get("model") or {}).get("cost_target")
    if target is None:
        return None
    kw = _twostream(None)["backbone_kwargs"]
    clip = (int(data["num_frames"]), int(data["crop_size"]), int(data["crop_size"]))
    return TwoStreamBudget(target, {k: kw[k] for k in ("width_div", "depths", "stem_pool")},
                           clip, int(data["synthetic_params"]["classes"]))


def _plan(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(searches, retrains); each ``{"row", "block", "seed", "settings", ...}``."""
    if min(args.seeds, args.epochs, args.search_seeds, args.jobs, args.threads,
           args.random + 1, args.limit_batches or 1) < 1:
        raise ValueError("--seeds, --epochs, --search-seeds, --jobs, --threads and "
                         "--limit-batches must be >= 1, --random >= 0")
    out, q = Path(args.out).resolve(), args.quick  # subprocesses run in the repository
    work = out / "_work" / "twostream"
    d = {"root": str(out / "_data" / "synth"), "classes": 2, "videos_per_class": 8,
         "frames": 8, "size": 16, "seed": 3} if q else {"root": "data/synth",
                                                         **SYNTH_DEFAULTS}
    synth = {k: d[k] for k in ("classes", "videos_per_class", "frames", "size", "seed")}
    data = {"root": str(REPO / d["root"]), "synthetic": True, "synthetic_params": synth,
            "num_frames": d["frames"], "sampling_rate": 1, "crop_size": d["size"],
            "batch_size": 4 if q else 16, "num_workers": 0 if q else 1,
            "test_clips": 1 if q else 2, "cache": "memory"}
    overrides = [f"--data.{k}={json.dumps(data[k]) if isinstance(data[k], dict) else data[k]}"
                 for k in ("root", "synthetic_params", "num_frames", "crop_size",
                           "batch_size", "num_workers", "cache")]
    overrides += ["--data.synthetic=true", "--trainer.accelerator=cpu",
                  "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    if q:
        overrides += ["--trainer.max_epochs=1", "--model.select_val_batches=2"]
    elif args.limit_batches:
        overrides += [f"--trainer.limit_train_batches={args.limit_batches}",
                      "--trainer.limit_val_batches=1"]
    settings = _hash((REPO / CONFIG).read_text(), overrides)
    searches = []
    for k in range(1 if q else args.search_seeds):
        searches.append({"row": f"search/s{k}", "block": "search", "seed": k,
                         "settings": settings, "dir": str(work / f"search_s{k}"),
                         "argv": [sys.executable, "-m", "supernet.app.cli", "search", "twostream",
                                  "-c", CONFIG, f"--out={work / f'search_s{k}'}",
                                  f"--seed_everything={k}", *overrides]})
    trainer = {"max_epochs": 1 if q else args.epochs, "accelerator": "cpu", "devices": 1,
               "log_every_n_steps": 20}
    limit = 2 if q and args.limit_batches is None else args.limit_batches
    if limit:
        trainer.update(limit_train_batches=limit, limit_val_batches=1, limit_test_batches=2)
    # (row, model, what else decides the result, arch file to check before training)
    rows: list[tuple[str, dict[str, Any], Any, str | None]] = []
    for s in searches:
        arch = str(Path(s["dir"]) / "attention.json")
        rows.append((f"searched/s{s['seed']}", _twostream(arch), s["settings"], arch))
    rows.append(("slowfast", _twostream(None), None, None))
    for block in ("none",) if q else ("none", "nonlocal"):
        rows.append((f"proxy+{block}", {"backbone": "proxy", "block": block,
                                        "backbone_kwargs": QUICK_PROXY if q else {}, **OPTIM},
                     None, None))
    budget = _budget(data)
    for i in range(1 if q else args.random):
        arch = str(work / f"random_{i}.json")
        rows.append((f"random/{i}", _twostream(arch), random_values(i, budget), arch))
    runs = []
    for row, model, extra, arch in rows:
        settings = _hash(data, trainer, model, {_FINGERPRINT_NAMES.get(k, k): v
                                                for k, v in extra.items()}
                         if isinstance(extra, dict) else extra)
        for seed in range(1 if q else args.seeds):
            spec = {"kind": "retrain", "key": row, "seed": seed, "data": data,
                    "trainer": trainer, "model": model, "threads": args.threads}
            if row.startswith("random/"):
                spec["random_values"] = extra
            runs.append({"row": row, "block": "retrain", "seed": seed, "settings": settings,
                         "arch": arch, "spec": spec})
    return searches, runs


def _twostream(arch: str | None) -> dict[str, Any]:
    return {"backbone": "twostream", "block": "none",
            "backbone_kwargs": {"arch": arch, "width_div": 8, "depths": [1, 1, 1, 1],
                                "stem_pool": False}, **OPTIM}


def _read(path: Path) -> dict[Key, dict[str, str]]:
    return read_runs(path)


def _append(path: Path, rec: dict[str, Any]) -> None:
    append_run(path, FIELDS, rec)


def _cost(spec: dict[str, Any]) -> dict[str, Any]:
    """Params and MACs of the network ``spec`` trains, at its clip (``model_cost``: a
    two-stream network is built from its architecture file and network size)."""
    m, d = spec["model"], spec["data"]
    try:
        res = model_cost(m["backbone"], m["block"], None, frames=d["num_frames"],
                         size=d["crop_size"], num_classes=d["synthetic_params"]["classes"],
                         latency=False, backbone_kwargs=m["backbone_kwargs"])
    except (ValueError, RuntimeError):
        return {}
    return {"params": res["params"], "macs": res["macs"]}


def _call(argv: list[str], log: Path, threads: int) -> tuple[int, float]:
    """Run ``argv`` from the repository root, output to ``log``; (exit code, seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with log.open("a") as f:
        code = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env,
                              cwd=str(REPO), check=False).returncode
    return code, round(time.perf_counter() - t0, 1)


def _search(s: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run (or resume) one progressive search; its CSV record. ``settings.txt`` in its
    folder says which settings the folder belongs to, written before the search starts: a
    folder of other settings is cleared and searched again; one of the same settings
    resumes (the CLI skips finished stages and continues an interrupted one) and is done
    when ``attention.json`` is there."""
    out = Path(s["dir"])
    marker, result = out / "settings.txt", out / "attention.json"
    old = marker.read_text().strip() if marker.is_file() else None
    if old is not None and old != s["settings"]:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(s["settings"] + "\n")
    code, wall = 0, 0.0
    if old != s["settings"] or not result.is_file():
        code, wall = _call(s["argv"], out / "log.txt", threads)
    rec = {**{k: s[k] for k in ("row", "block", "seed", "settings")}, "wall_s": wall,
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        if code:
            raise ValueError(f"exit {code} (see {out / 'log.txt'})")
        arch = load_arch(result)
    except ValueError as err:
        return {**rec, "status": "failed", "error": str(err)[:300]}
    prov = arch.provenance
    cost = (prov.get("attention") or {}).get("cost") or {}
    return {**rec, "status": "ok", "values": json.dumps(arch.values),
            "params": cost.get("params", ""), "macs": cost.get("macs", ""),
            **{f"{st}_s": (prov.get(st) or {}).get("search_seconds", "") for st in STAGES}}


def _retrain(run: dict[str, Any], work: Path) -> dict[str, Any]:
    """One retrain in its own ``benchmarks.jobs`` process; its CSV record."""
    rec = {k: run[k] for k in ("row", "block", "seed", "settings")}
    rec["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    if run["arch"] and not Path(run["arch"]).is_file():
        return {**rec, "status": "failed",
                "error": f"no architecture {run['arch']} (its search failed?)"}
    run_dir = work / f"{run['row']}_s{run['seed']}".replace("/", "-")
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {**run["spec"], "run_dir": str(run_dir),
            "resume_dir": str(work / "resume")}  # a run killed part-way resumes
    spec_path, result_path = run_dir / "spec.json", run_dir / "result.json"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    (run_dir / "log.txt").unlink(missing_ok=True)
    _, wall = _call([sys.executable, "-m", "benchmarks.jobs", str(spec_path),
                     str(result_path)], run_dir / "log.txt", spec["threads"])
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        result = {"status": "failed", "error": f"no result (see {run_dir / 'log.txt'})"}
    return {**rec, "status": result.get("status"), "video_top1": result.get("video_top1"),
            "wall_s": round(wall + float(result.get("prior_s") or 0.0), 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "error": result.get("error", ""), **_cost(spec)}


def _ok(done: dict[Key, dict[str, str]], run: dict[str, Any]) -> dict[str, str] | None:
    rec = done.get((run["row"], run["block"], run["seed"], run["settings"]))
    return rec if rec and rec["status"] == "ok" else None


def _mean_std(values: list[float], scale: float = 1.0) -> str:
    if len(values) < 2:
        return f"{scale * values[0]:.1f}" if values else "—"
    return f"{scale * statistics.fmean(values):.1f} ± {scale * statistics.stdev(values):.1f}"


def _results(runs: list[dict[str, Any]], done: dict[Key, dict[str, str]]
             ) -> dict[str, dict[str, Any]]:
    """row -> {"top1": [per seed], "params", "macs", "planned"} in plan order."""
    out: dict[str, dict[str, Any]] = {}
    for r in runs:
        e = out.setdefault(r["row"], {"top1": [], "params": None, "macs": None, "planned": 0})
        e["planned"] += 1
        rec = _ok(done, r)
        if rec and finite_float(rec["video_top1"]) is not None:
            e["top1"].append(float(rec["video_top1"]))
            e["params"] = finite_float(rec.get("params")) or e["params"]
            e["macs"] = finite_float(rec.get("macs")) or e["macs"]
    return out


def _group(res: dict[str, dict[str, Any]], prefix: str) -> tuple[list[float], list[float]]:
    """(every run's top-1, every architecture's MACs) of the rows starting with prefix."""
    top1 = [t for row, e in res.items() if row.startswith(prefix) for t in e["top1"]]
    macs = [e["macs"] for row, e in res.items() if row.startswith(prefix) and e["macs"]]
    return top1, macs


def report(searches: list[dict[str, Any]], runs: list[dict[str, Any]],
           done: dict[Key, dict[str, str]]) -> list[str]:
    """The benchmark's markdown lines: table, group means, targets, search cost, archs."""
    res = _results(runs, done)
    lines = ["| row | top-1 (%) | params | MMACs |", "|---|---:|---:|---:|"]
    for row, e in res.items():
        params = f"{int(e['params']):,}" if e["params"] else "—"
        macs = f"{e['macs'] / 1e6:,.2f}" if e["macs"] else "—"
        lines.append(f"| {row} | {_mean_std(e['top1'], 100)} | {params} | {macs} |")
    searched, s_macs = _group(res, "searched/")
    rand, r_macs = _group(res, "random/")
    for name, top1, macs in (("searched (mean over search seeds)", searched, s_macs),
                             ("random (mean over random archs)", rand, r_macs)):
        mm = f"{statistics.fmean(macs) / 1e6:,.2f}" if macs else "—"
        lines.append(f"| {name} | {_mean_std(top1, 100)} | | {mm} |")
    complete = all(len(e["top1"]) == e["planned"] for e in res.values())
    tail = "" if complete else " so far"
    lines += ["", "Top-1: video level on the test split, mean ± std over training seeds (group "
              "lines: over all their runs). MMACs per clip.", ""]
    sf, mean = res.get("slowfast") or {"top1": [], "macs": None}, statistics.fmean
    line = "- Target (searched ≥ slowfast + 2 points at ≤ slowfast's MACs): "
    if searched and s_macs and sf["top1"] and sf["macs"]:
        gain = 100 * (mean(searched) - mean(sf["top1"]))
        met = gain >= 2.0 and max(s_macs) <= sf["macs"]  # every searched network
        line += (f"{gain:+.1f} points, {min(s_macs) / 1e6:,.2f}–{max(s_macs) / 1e6:,.2f} vs "
                 f"{sf['macs'] / 1e6:,.2f} MMACs — **{'met' if met else 'not met'}**{tail}.")
    lines.append(line + ("" if line.endswith(".") else "no result yet."))
    line = "- Target (searched > random): "
    if searched and rand:
        gain = 100 * (mean(searched) - mean(rand))
        line += f"{gain:+.1f} points — **{'met' if gain > 0 else 'not met'}**{tail}."
    lines.append(line + ("" if line.endswith(".") else "no result yet."))
    found = [rec for s in searches if (rec := _ok(done, s))]
    lines += ["", f"Search cost of each stage (seconds, mean ± std over {len(found)} of "
              f"{len(searches)} searches):", "", "| stage | seconds |", "|---|---:|"]
    for st in (*STAGES, "total", "process wall"):
        secs = [float(r[f"{st}_s"]) for r in found if r.get(f"{st}_s")] if st in STAGES else \
            [sum(float(r[f"{x}_s"] or 0) for x in STAGES) for r in found] if st == "total" \
            else [float(r["wall_s"]) for r in found if float(r["wall_s"] or 0) > 0]
        lines.append(f"| {st} | {_mean_std(secs)} |")
    if found:
        lines += ["", "Searched architectures:", "",
                  "| search | " + " | ".join(VARIABLE_NAMES) + " |",
                  "|---|" + "---|" * len(VARIABLE_NAMES)]
        for rec in found:
            v = migrate_values(json.loads(rec["values"]))
            lines.append(f"| {rec['row']} | " + " | ".join(str(v.get(n, "—"))
                                                          for n in VARIABLE_NAMES) + " |")
    return lines


def plot(runs: list[dict[str, Any]], done: dict[Key, dict[str, str]], path: Path) -> Path:
    """Top-1 against MMACs, one point per row (error bar: std over training seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for row, e in _results(runs, done).items():
        if not e["top1"] or not e["macs"]:
            continue
        mean = 100 * statistics.fmean(e["top1"])
        std = 100 * statistics.stdev(e["top1"]) if len(e["top1"]) > 1 else 0.0
        style = {"fmt": "*", "color": "tab:red", "markersize": 14} if row == "slowfast" else \
            {"fmt": "o", "color": "tab:blue" if row.startswith("searched") else
             "tab:grey" if row.startswith("random") else "tab:green", "markersize": 6}
        ax.errorbar([e["macs"] / 1e6], [mean], yerr=[std], capsize=3, **style)
        ax.annotate(row, (e["macs"] / 1e6, mean), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.set_xlabel("MMACs per clip")
    ax.set_ylabel("video top-1 (%)")
    ax.set_title("Two-stream search: accuracy against cost (★ SlowFast)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure_atomic(fig, path, 120)


def main(argv: list[str] | None = None) -> int:
    """Run (resuming) and report; bad input: one line, exit 2."""
    args = _parser().parse_args(argv)
    try:
        searches, runs = _plan(args)
    except (ValueError, OSError) as err:
        print(f"benchmarks.twostream: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, work = out / "twostream.csv", out / "_work" / "twostream"
    if not args.report:
        for run in runs:
            if run["row"].startswith("random/") and run["seed"] == 0:
                values = run["spec"]["random_values"]
                TwoStreamArch.create(values, "attention", list(VARIABLE_NAMES)).save(run["arch"])
        done = _read(csv_path)
        s_todo = [s for s in searches if not _ok(done, s)]
        r_todo = [r for r in runs if not _ok(done, r)]
        print(f"twostream: {len(searches)} searches ({len(s_todo)} to run), {len(runs)} runs "
              f"({len(r_todo)} to run), {args.jobs} at a time -> {csv_path}", flush=True)

        def one(item: dict[str, Any]) -> None:
            rec = _search(item, args.threads) if item["block"] == "search" else \
                _retrain(item, work)
            _append(csv_path, rec)
            top1 = finite_float(rec.get("video_top1"))
            shown = "" if top1 is None else f" top-1 {100 * top1:.1f} %"
            print(f"  {item['row']} seed {item['seed']}: {rec['status']}{shown} in "
                  f"{rec.get('wall_s') or 0:.0f} s", flush=True)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(one, s_todo))
            list(pool.map(one, r_todo))
    done = _read(csv_path)
    body = report(searches, runs, done)
    atomic_write_text(out / "twostream.md", "\n".join([
        "# Two-stream search (after Auto-TSNet)", "",
        f"Command: `python -m benchmarks.twostream {' '.join(argv or sys.argv[1:])}`", "",
        *body]) + "\n")
    plot(runs, done, out / "twostream.png")
    print("\n".join(body))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
