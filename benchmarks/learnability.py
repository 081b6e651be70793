"""Learnability of the synthetic benchmark: train the proxy backbone with no attention,
with non-local blocks and with other blocks, and record train / val accuracy per epoch.

    python -m benchmarks.learnability    # default data; none, nonlocal, nonlocal+coords, cinst
    python -m benchmarks.learnability --blocks none nonlocal --seeds 0 1 2 --epochs 8

Data: ``datamodules.VideoDataModule(root, synthetic=True)`` (the default synthetic
benchmark, generated on first use) through the real PyAV pipeline, with a decoded-clip
memory cache. Model: ``supernet.create_backbone("proxy", num_classes, block=...)``.
Loop: plain PyTorch, AdamW, linear warm-up then cosine, the same seed for every block.

Writes ``<out>.json`` (every number; rewritten after each run, so ``--resume`` continues
an interrupted benchmark), ``<out>.md`` (tables, command, machine) and ``<out>.png``
(curves, mean over seeds with the min-max band); default ``<out>`` =
``benchmarks/results/learnability``. Runs are deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import cpu_name, save_figure_atomic
from datamodules import VideoDataModule
from datamodules.atomic import atomic_write_text
from datamodules.synth import DEFAULTS
from supernet import create_backbone

__all__ = ["main", "train_one"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.learnability",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="data/synth", help="synthetic benchmark folder")
    p.add_argument("--blocks", nargs="+",
                   default=["none", "nonlocal", "nonlocal:position=coords", "cinst"],
                   help="block specs: a create_block name, optionally with keyword arguments "
                        "as name:key=value:key=value (e.g. nonlocal:position=coords)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                   help="one run per seed and block (model init and data order)")
    p.add_argument("--limit-train", type=int, default=0,
                   help="use only this many training batches per epoch (0 = all)")
    p.add_argument("--out", default="benchmarks/results/learnability",
                   help="output path without extension (.json, .md and .png are added)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the (block, seed) runs already in <out>.json when its settings "
                        "match (the JSON is rewritten after every run)")
    p.add_argument("--videos-per-class", type=int, default=None,
                   help="generator parameter (default: the benchmark default)")
    p.add_argument("--classes", type=int, default=None)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    return p.parse_args(argv)


def parse_block(spec: str) -> tuple[str, dict[str, Any]]:
    """``"nonlocal:position=coords:kv_pool=false"`` -> ``("nonlocal", {"position": "coords",
    "kv_pool": False})`` (values parsed as int / float / bool when they look like one)."""
    name, *pairs = spec.split(":")
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"block spec {spec!r}: expected key=value, got {pair!r}")
        low = value.lower()
        parsed: Any = value
        if low in ("true", "false"):
            parsed = low == "true"
        else:
            for cast in (int, float):
                try:
                    parsed = cast(value)
                    break
                except ValueError:
                    pass
        kwargs[key] = parsed
    return name, kwargs


def _evaluate(model: torch.nn.Module, loader: Any) -> tuple[float, float]:
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for batch in loader:
            logits = model(batch["video"])
            loss_sum += float(F.cross_entropy(logits, batch["label"], reduction="sum"))
            correct += int((logits.argmax(1) == batch["label"]).sum())
            total += len(batch["label"])
    return correct / max(total, 1), loss_sum / max(total, 1)


def train_one(block: str, dm: VideoDataModule, args: argparse.Namespace, seed: int = 0
              ) -> dict[str, Any]:
    """Train ``proxy`` + ``block`` for ``args.epochs`` from ``seed``; returns the per-epoch
    curves."""
    torch.manual_seed(seed)
    name, kwargs = parse_block(block)
    model = create_backbone("proxy", dm.num_classes, block=name, block_kwargs=kwargs)
    params = sum(p.numel() for p in model.parameters())
    train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
    steps_per_epoch = len(train_loader)
    if args.limit_train:
        steps_per_epoch = min(steps_per_epoch, args.limit_train)
    total = steps_per_epoch * args.epochs
    warm = max(1, int(args.warmup_epochs * steps_per_epoch))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    rows = []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        correct, seen, loss_sum = 0, 0, 0.0
        t0 = time.perf_counter()
        for i, batch in enumerate(train_loader):
            if i >= steps_per_epoch:
                break
            logits = model(batch["video"])
            loss = F.cross_entropy(logits, batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            n = len(batch["label"])
            loss_sum += loss.item() * n
            correct += int((logits.detach().argmax(1) == batch["label"]).sum())
            seen += n
        train_s = time.perf_counter() - t0
        val_acc, val_loss = _evaluate(model, val_loader)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "val_loss": val_loss, "val_acc": val_acc, "epoch_s": train_s,
               "elapsed_s": time.perf_counter() - start}
        rows.append(row)
        print(f"{block:>10} | {seed:>4} | {epoch + 1:>5} | {row['train_loss']:10.3f} | "
              f"{row['train_acc']:9.3f} | {val_loss:8.3f} | {val_acc:7.3f} | "
              f"{train_s:7.1f}", flush=True)
    test_acc = None
    if "test" in (dm.datasets or {}) or dm._resolve_sources().get("test"):
        dm.setup("test")
        test_acc, _ = _evaluate(model, dm.test_dataloader())
    return {"block": block, "seed": seed, "params": params, "epochs": rows,
            "test_acc": test_acc,
            "train_clips": len(dm.datasets["train"]), "val_clips": len(dm.datasets["val"])}



def _machine() -> str:
    cpu = cpu_name()
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")


def _by_block(results: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["block"], []).append(r)
    return groups


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _markdown(results: list[dict], args: argparse.Namespace, cmd: str, meta: dict) -> str:
    chance = 1.0 / meta["num_classes"]
    groups = _by_block(results)
    seeds = ", ".join(str(s) for s in args.seeds)
    lines = ["# Learnability of the synthetic benchmark", "",
             f"Command: `{cmd}`  ", f"Machine: {_machine()}  ",
             f"Data: {meta['root']} ({meta['num_classes']} classes, chance "
             f"{chance:.1%}; {results[0]['train_clips']} training clips, "
             f"{results[0]['val_clips']} validation clips; T={meta['frames']}, "
             f"{meta['size']}x{meta['size']} px; the real PyAV pipeline)  ",
             f"Model: proxy backbone (`supernet.create_backbone('proxy', ...)`, block at its "
             f"default positions), AdamW lr {args.lr}, weight decay {args.weight_decay}, "
             f"batch {args.batch_size}, {args.epochs} epochs, seeds {seeds}. s/epoch is "
             "wall time for training on the machine as it was (other jobs included); a run is "
             "deterministic for its seed.", "",
             "## Final accuracy (mean over seeds; per seed in brackets)", "",
             "| block | params | train acc | val acc | best val acc | test acc | s/epoch |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def cell(vals: list[float]) -> str:
        if len(vals) == 1:
            return f"{vals[0]:.3f}"
        return f"{_mean(vals):.3f} [{', '.join(f'{v:.3f}' for v in vals)}]"

    for block, runs in groups.items():
        train = [r["epochs"][-1]["train_acc"] for r in runs]
        val = [r["epochs"][-1]["val_acc"] for r in runs]
        best = [max(e["val_acc"] for e in r["epochs"]) for r in runs]
        test = [r["test_acc"] for r in runs if r["test_acc"] is not None]
        sec = _mean([e["epoch_s"] for r in runs for e in r["epochs"]])
        lines.append(f"| {block} | {runs[0]['params']:,} | {cell(train)} | {cell(val)} | "
                     f"{cell(best)} | {cell(test) if test else '-'} | {sec:.0f} |")
    lines += ["", "## Per epoch (train acc / val acc, mean over seeds)", "",
              "| epoch | " + " | ".join(groups) + " |", "|---:|" + "---|" * len(groups)]
    for e in range(args.epochs):
        cells = [f"{_mean([r['epochs'][e]['train_acc'] for r in runs]):.3f} / "
                 f"{_mean([r['epochs'][e]['val_acc'] for r in runs]):.3f}"
                 for runs in groups.values()]
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    lines += ["", f"![curves]({Path(args.out).name}.png)", "",
              "Designs tried before this one, and why they were dropped: "
              "[learnability.history.md](learnability.history.md).", ""]
    return "\n".join(lines)


def _plot(results: list[dict], path: Path, chance: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for block, runs in _by_block(results).items():
        ep = [e["epoch"] for e in runs[0]["epochs"]]
        colour = None
        for ax, key in zip(axes, ("train_acc", "val_acc")):
            curves = [[e[key] for e in r["epochs"]] for r in runs]
            mean = [_mean(list(v)) for v in zip(*curves)]
            line, = ax.plot(ep, mean, marker="o", color=colour,
                            label=f"{block} (n={len(runs)})" if len(runs) > 1 else block)
            colour = line.get_color()
            if len(runs) > 1:
                ax.fill_between(ep, [min(v) for v in zip(*curves)],
                                [max(v) for v in zip(*curves)], color=colour, alpha=0.15)
    for ax, title in zip(axes, ("train accuracy", "validation accuracy")):
        ax.axhline(chance, color="grey", ls="--", lw=1, label="chance")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure_atomic(fig, path, 110)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    params = {k: v for k, v in (("videos_per_class", args.videos_per_class),
                                ("classes", args.classes), ("frames", args.frames),
                                ("size", args.size)) if v is not None}
    full = {**DEFAULTS, **params}
    dm = VideoDataModule(root=args.root, synthetic=True, synthetic_params=params,
                         num_frames=full["frames"], sampling_rate=1, crop_size=full["size"],
                         batch_size=args.batch_size, num_workers=args.workers,
                         persistent_workers=args.workers > 0, cache="memory")
    t0 = time.perf_counter()
    dm.prepare_data()
    print(f"data ready in {time.perf_counter() - t0:.1f} s: {args.root}", flush=True)
    dm.setup("fit")
    meta = {"root": args.root, "num_classes": dm.num_classes, "class_names": dm.classes,
            **full}
    cmd = "python -m benchmarks.learnability " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (Path(f"{out}{ext}") for ext in (".json", ".md", ".png"))
    config = {"data": meta, **{k: getattr(args, k) for k in (
        "batch_size", "lr", "weight_decay", "warmup_epochs", "epochs", "limit_train")}}
    done: dict[tuple[str, int], dict] = {}
    if args.resume and json_path.is_file():
        old = json.loads(json_path.read_text())
        if old.get("config") == config:
            done = {(r["block"], r["seed"]): r for r in old.get("results", [])}
        else:
            print(f"{json_path}: other settings, not resumed", flush=True)
    print(f"{'block':>10} | seed | epoch | train loss | train acc | val loss | val acc | "
          "train s")
    results = []
    for block in args.blocks:
        for seed in args.seeds:
            if (block, seed) in done:
                print(f"{block:>10} | {seed:>4} | reused from {json_path}", flush=True)
                results.append(done[(block, seed)])
                continue
            results.append(train_one(block, dm, args, seed))
            doc = {"command": cmd.strip(), "machine": _machine(), "config": config,
                   "args": vars(args), "results": list(done.values()) + results}
            atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")  # after every run
    doc = {"command": cmd.strip(), "machine": _machine(), "config": config,
           "args": vars(args), "results": results}
    atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
    atomic_write_text(md_path, _markdown(results, args, cmd.strip(), meta))
    _plot(results, png_path, 1.0 / dm.num_classes)
    print(f"wrote {json_path}, {md_path}, {png_path}")
    for r in results:
        print(f"{r['block']:>10} seed {r['seed']}: final val {r['epochs'][-1]['val_acc']:.3f}, "
              f"best val {max(e['val_acc'] for e in r['epochs']):.3f}, test {r['test_acc']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
