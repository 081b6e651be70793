"""Memory layout of a training step: contiguous vs channels-last-3d weights, side by side.

    python -m benchmarks.memory_format_speed [--threads 1,2] [--steps 5]
        [--out benchmarks/results]

For each network (the default search's uniform supernet, the proxy with no block, a
non-local block and a searched cell, S3D, the two-stream proxy) one training step
(forward, backward, AdamW step) at the batch and clip the benchmarks train with, in both
layouts, alternating between them in one process (this machine is shared: the ratio of
two interleaved medians is what carries over, not the milliseconds). Writes ``layout.md``
(the name the stored result has); :mod:`supernet.memory_format` takes its ``auto`` default
from it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import REPO, cpu_name
from datamodules.atomic import atomic_write_text
from supernet.factory import create_backbone

PROG = "benchmarks.memory_format_speed"
CELL = (REPO / "benchmarks" / "results" / "genotypes"
        / "searched_uniform_perturb_sincos_5ep__s0.json")

#: name -> (builder of the network, input shape (N, C, T, H, W), what it stands for)
def _cases() -> dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, ...], str]]:
    return {
        "search supernet (uniform, sincos)": (
            lambda: create_backbone("proxy", 4, "search", block_kwargs={"position": "sincos"}),
            (16, 3, 32, 24, 24), "the default search's weight step (batch 16 per half)"),
        "proxy, none": (lambda: create_backbone("proxy", 4, "none"), (32, 3, 32, 24, 24),
                        "the accuracy benchmark's retrain (batch 32)"),
        "proxy, nonlocal": (lambda: create_backbone("proxy", 4, "nonlocal"),
                            (32, 3, 32, 24, 24), "as above"),
        "proxy, searched cell": (lambda: create_backbone("proxy", 4, str(CELL)),
                                 (32, 3, 32, 24, 24), f"{CELL.name}"),
        "s3d, nonlocal": (lambda: create_backbone("s3d", 4, "nonlocal"), (16, 3, 8, 24, 24),
                          "the transfer bench's S3D row (batch 16)"),
        "two-stream proxy (SlowFast point)": (
            lambda: create_backbone("twostream", 4, width_div=8, depths=(1, 1, 1, 1)),
            (8, 3, 32, 24, 24), "the two-stream bench's anchor (batch 8)"),
    }


def _step_time(model: torch.nn.Module, shape: tuple[int, ...], layout: torch.memory_format,
               steps: int) -> list[float]:
    model.to(memory_format=layout)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    y = torch.randint(0, 4, (shape[0],), generator=gen)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms the allocator and oneDNN's kernel cache
            times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__)
    p.add_argument("--threads", default="1,2", help="torch thread counts (comma-separated)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per layout and round")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two layouts")
    p.add_argument("--only", default=None, help="comma-separated case names (default all)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        print(f"{PROG}: error: --threads {args.threads!r} is not a list of "
              f"integers", file=sys.stderr)
        return 2
    cases = _cases()
    names = list(cases) if args.only is None else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in cases]
    if unknown or args.steps < 1 or args.rounds < 1 or not threads or min(threads) < 1:
        print(f"{PROG}: error: unknown case(s) {unknown} (accepted: "
              f"{', '.join(cases)}) or a count below 1", file=sys.stderr)
        return 2
    rows = ["| network | input | threads | contiguous (ms) | channels-last (ms) | speed-up |",
            "|---|---|---:|---:|---:|---:|"]
    notes = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for name in names:
            build, shape, what = cases[name]
            torch.manual_seed(0)
            model = build()
            got: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
            for _ in range(args.rounds):
                got["contiguous"] += _step_time(model, shape, torch.contiguous_format,
                                                args.steps)
                got["channels_last"] += _step_time(model, shape, torch.channels_last_3d,
                                                   args.steps)
            a, b = (1000 * statistics.median(got[k]) for k in ("contiguous", "channels_last"))
            line = (f"| {name} | {'x'.join(map(str, shape))} | {n_threads} | {a:,.0f} | "
                    f"{b:,.0f} | **{a / b:.2f}x** |")
            rows.append(line)
            print(line, flush=True)
            if n_threads == threads[0]:
                notes.append(f"- {name}: {what}")
    text = "\n".join([
        f"# Memory layout of a training step ({time.strftime('%Y-%m-%d')})", "",
        f"Command: `python -m {PROG} {' '.join(argv or sys.argv[1:])}`  ",
        f"Machine: {cpu_name()}, torch {torch.__version__}. One step = forward, backward and "
        f"AdamW; median of {args.steps * args.rounds} steps per layout, the two layouts "
        f"alternating {args.rounds}x in one process (a shared machine: read the ratio).", "",
        *rows, "", *notes, "",
        "`--model.memory_format auto` (search, two-stream search, retrain) trains in "
        "channels-last on the CPU because of this table; on a GPU it stays contiguous until "
        "`benchmarks/gpu.py --memory-formats` measures otherwise.", ""])
    out = atomic_write_text(Path(args.out) / "layout.md", text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
