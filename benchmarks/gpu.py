"""Training-step throughput, peak memory and model FLOPs utilisation (MFU) of I3D-R50 with
attention blocks, fp32 vs bf16, eager vs ``torch.compile``; and the supernet's search
iteration vs its derived network's step.

For each block (``none``, ``nonlocal``, a genotype) x precision x compile: an SGD train
step (forward, backward, update) on a random batch, ``--steps`` timed after ``--warmup``;
clips/s, peak memory (CUDA allocator peak; on CPU the RSS high-water increase), FLOPs per
step counted by ``FlopCounterMode`` on one real step (attention included), and MFU = those
FLOPs / step time / the device's dense bf16 (or fp32) peak from :data:`PEAK_TFLOPS`, by
device name. On a machine without a GPU it runs on the CPU (MFU left out) and says so;
``--tiny`` is a seconds-long CPU run of the whole table (the test suite calls it).

    python -m benchmarks.gpu [--blocks none,nonlocal,cell.json] [--batch 8] [--frames 8]
        [--size 224] [--precisions fp32,bf16] [--compile off,on]
        [--memory-formats contiguous,channels_last] [--steps 10] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from datamodules.atomic import atomic_write_text
from supernet import create_backbone

#: dense peak TFLOPS (bf16, fp32 without TF32) by a substring of the device name
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "fp32": 91.6},
    "A10": {"bf16": 125.0, "fp32": 31.2},
    "RTX 4090": {"bf16": 165.0, "fp32": 82.6},
    "V100": {"bf16": 0.0, "fp32": 15.7},
}


def _peak(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():
        if key in name and peaks.get(precision):
            return peaks[precision] * 1e12
    return None


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _model(args: argparse.Namespace, block: str, classes: int) -> torch.nn.Module:
    if args.tiny:
        return create_backbone("proxy", classes, block=block, widths=[16, 32, 64],
                               depths=[1, 1, 1], stem_width=8)
    return create_backbone(args.backbone, classes, block=block)


def _step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str,
             device: torch.device, compiled: bool, layout: str = "contiguous") -> Any:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    if layout == "channels_last":  # weights and clip channels-last, as VideoClassifier does
        model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    fwd = torch.compile(model) if compiled else model

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = torch.nn.functional.cross_entropy(fwd(x), y)
        loss.backward()
        opt.step()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_step(step: Any, steps: int, warmup: int, device: torch.device) -> float:
    """Median seconds of ``step()`` over ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(args: argparse.Namespace, block: str, precision: str, compiled: bool,
            device: torch.device, layout: str = "contiguous") -> dict[str, Any]:
    """One row: step time, clips/s, peak memory, FLOPs per step, MFU."""
    torch.manual_seed(0)
    classes = 400
    model = _model(args, block, classes).to(device).train()
    shape = (args.batch, 3, args.frames, args.size, args.size)
    x = torch.randn(shape, device=device)
    y = torch.randint(classes, (args.batch,), device=device)
    step = _step_fn(model, x, y, precision, device, compiled, layout)
    with FlopCounterMode(display=False) as counter:  # one real step, eager: what it computes
        _step_fn(model, x, y, precision, device, False)()
    flops = int(counter.get_total_flops())
    step()  # one untimed step before the memory baseline (lazy allocations)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = _rss_kib()
    med = _median_step(step, args.steps, max(0, args.warmup - 1), device)
    peak_mib = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                else max(0, _rss_kib() - rss0) / 1024)
    peak = _peak(device, precision)
    return {"block": Path(block).name if block.endswith(".json") else block,
            "precision": precision, "compile": compiled, "layout": layout,
            "step_ms": round(1e3 * med, 2),
            "clips_s": round(args.batch / med, 2), "peak_mib": round(peak_mib, 1),
            "gflop_step": round(flops / 1e9, 3),
            "mfu": None if peak is None else round(flops / med / peak, 4)}


def supernet_vs_derived(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Median step of the search supernet (uniform: one weight step) vs the derived
    network (the same proxy with a fixed cell), same batch, fp32 eager."""
    kw = ({"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8} if args.tiny else {})
    shape = (args.batch, 3, args.frames if args.tiny else 16, args.size if args.tiny else 64,
             args.size if args.tiny else 64)
    cell = [("dot.temporal.identity", 0), ("map.spatiotemporal.softmax", 1),
            ("dot.spatial.identity", 0)]
    out = {}
    for name, block, bkw in (("supernet", "search", {"position": "sincos"}),
                             ("derived", "cell", {"nodes": cell, "position": "sincos"})):
        torch.manual_seed(0)
        model = create_backbone("proxy", 4, block=block, block_kwargs=bkw, **kw).to(device)
        x = torch.randn(shape, device=device)
        y = torch.randint(4, (args.batch,), device=device)
        step = _step_fn(model, x, y, "fp32", device, False)
        out[name] = 1e3 * _median_step(step, args.steps, args.warmup, device)
    out["ratio"] = out["supernet"] / out["derived"]
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="i3d_r50", help="i3d_r50 | s3d | slowfast_r50")
    p.add_argument("--blocks", default="none,nonlocal",
                   help="comma-separated block names or genotype .json files")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--compile", default="off", help="off | on | off,on")
    p.add_argument("--memory-formats", default="contiguous",
                   help="contiguous | channels_last | contiguous,channels_last")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--tiny", action="store_true",
                   help="a seconds-long CPU run of the whole table (tiny proxy, 2x3x8x16x16)")
    p.add_argument("--out", default=None, help="markdown file (default: print only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    compiles = [c.strip() for c in args.compile.split(",") if c.strip()]
    layouts = [c.strip() for c in args.memory_formats.split(",") if c.strip()]
    bad = [p for p in precisions if p not in ("fp32", "bf16")] + \
        [c for c in compiles if c not in ("off", "on")] + \
        [m for m in layouts if m not in ("contiguous", "channels_last")]
    if bad or args.batch < 1 or args.steps < 1:
        print(f"benchmarks.gpu: error: unknown precision / compile / memory format value(s) "
              f"{bad}; accepted: fp32, bf16 / off, on / contiguous, channels_last (and "
              f"--batch, --steps >= 1)", file=sys.stderr)
        return 2
    if args.tiny:
        args.batch, args.frames, args.size = 2, 8, 16
        args.steps, args.warmup = min(args.steps, 2), 1
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks.gpu: error: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    if "on" in compiles and not hasattr(torch, "compile"):
        print("benchmarks.gpu: error: this torch has no torch.compile", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        (platform.processor() or platform.machine()) + " CPU"
    lines = [f"# Throughput on {name} ({time.strftime('%Y-%m-%d')})", ""]
    if device.type != "cuda":
        lines += ["**No GPU here**: the table is from the CPU (MFU needs a GPU's peak; the "
                  "GPU figures are still to be measured).", ""]
    lines += [f"{'tiny proxy' if args.tiny else args.backbone}, batch {args.batch} x 3 x "
              f"{args.frames} x {args.size}², SGD train step, median of {args.steps} after "
              f"{args.warmup} warm-up; torch {torch.__version__}, {torch.get_num_threads()} "
              "CPU thread(s).", "",
              "| block | precision | compile | layout | step (ms) | clips/s | peak (MiB) | "
              "GFLOP / step | MFU |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    rows = []
    for block in [b.strip() for b in args.blocks.split(",") if b.strip()]:
        for precision in precisions:
            for comp in compiles:
                for layout in layouts:
                    r = measure(args, block, precision, comp == "on", device, layout)
                    rows.append(r)
                    mfu = "—" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
                    lines.append(f"| {r['block']} | {precision} | {comp} | {layout} | "
                                 f"{r['step_ms']:.1f} | {r['clips_s']:.1f} | "
                                 f"{r['peak_mib']:.0f} | {r['gflop_step']:,.3f} | {mfu} |")
                    print(lines[-1], flush=True)
    sd = supernet_vs_derived(args, device)
    lines += ["", f"Supernet search iteration (uniform: one weight step) vs the derived "
              f"network's step, proxy, fp32: {sd['supernet']:.1f} ms vs {sd['derived']:.1f} ms "
              f"(**{sd['ratio']:.2f}×**).", ""]
    print("\n".join(lines[-2:]))
    if args.out:
        atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
        atomic_write_text(Path(args.out).with_suffix(".json"),
                          json.dumps({"device": name, "rows": rows, "supernet": sd}, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
