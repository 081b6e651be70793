"""What one table run costs on this processor: CPU seconds of one torch thread, measured.

``python -m benchmarks.table.runtime [--task T] [--steps N] [--sample K]`` trains each cell of
a set (the baselines, four one-node cells, ``K`` sampled three-node cells) for ``N`` steps of
the table protocol and times them with the process's CPU clock, which is what one thread
spends whether or not other work shares the cores; it prints ms per step and the estimated
seconds of a whole run (``steps`` of training plus scoring the validation and test splits),
and the median over the set weighted as a task's table is (its three-node cells are most of
it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import cpu_name

from .cells import parse_cell, sample_cells
from .protocol import (
    Protocol,
    _accuracy,
    _forward,
    _Inputs,
    _labels,
    _prefix_modules,
    build_model,
    prefix_features,
)
from .tasks import TASKS, load_task_data

__all__ = ["time_cell", "main"]

ONE_NODE = ("map.spatiotemporal.sigmoid~0", "map.temporal.softmax~0", "dot.spatial.softmax~0",
            "dot.temporal.relu~0")


def time_cell(key: str, inputs: _Inputs, protocol: Protocol, steps: int) -> tuple[float, float]:
    """``(CPU ms per training step, CPU s to score val + test)`` of ``key``, one thread."""
    torch.manual_seed(0)
    model = build_model(parse_cell(key), len(inputs.data.classes), protocol)
    frozen = _prefix_modules(model, protocol) if protocol.frozen else []
    trained = [p for n, p in model.named_parameters() if not any(n.startswith(f) for f in frozen)]
    opt = torch.optim.AdamW(trained, lr=protocol.lr)
    rng = np.random.default_rng(0)
    labels = inputs.data.y_train
    model.train()
    spent = []
    for step in range(steps + 3):
        idx = rng.choice(len(labels), protocol.batch_size, replace=False)
        start = time.process_time()
        loss = F.cross_entropy(_forward(model, inputs("train", idx), protocol),
                               _labels(labels, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, protocol.grad_clip)
        opt.step()
        if step >= 3:  # warm-up steps are not counted
            spent.append(time.process_time() - start)
    start = time.process_time()
    _accuracy(model, inputs, "val")
    _accuracy(model, inputs, "test")
    return 1000 * statistics.median(spent), time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    """Print the cost table; 0 on success, 2 on bad arguments."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.table.runtime",
                                description=__doc__.splitlines()[0])
    p.add_argument("--task", default="colour")
    p.add_argument("--steps", type=int, default=30, help="timed training steps a cell (30)")
    p.add_argument("--sample", type=int, default=6, help="sampled three-node cells (6)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.sample < 0:
        print("runtime: --steps must be >= 1 and --sample >= 0", file=sys.stderr)
        return 2
    if args.task not in TASKS:
        print(f"runtime: unknown task {args.task!r}; tasks: {', '.join(TASKS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    protocol = Protocol()
    data = load_task_data(args.task)
    inputs = _Inputs(data, protocol, prefix_features(data, protocol) if protocol.frozen else None)
    cells = ["none", "nonlocal", "nonlocal_sincos", *ONE_NODE,
             *(c.key for c in sample_cells(args.sample, 3, seed=0))]
    print(f"table run cost on {cpu_name('unknown processor')}, one torch thread, protocol "
          f"{protocol.fingerprint()} ({protocol.steps} steps), CPU clock")
    print("| cell | nodes | ms / step | scoring s | est. s / run |\n|---|---:|---:|---:|---:|")
    runs: dict[int, list[float]] = {}
    for key in cells:
        ms, score_s = time_cell(key, inputs, protocol, args.steps)
        total = ms * protocol.steps / 1000 + score_s
        nodes = parse_cell(key).num_nodes
        runs.setdefault(nodes, []).append(total)
        print(f"| `{key}` | {nodes} | {ms:.0f} | {score_s:.1f} | {total:.0f} |", flush=True)
    # a task's table: 6 baselines, 24 one-node cells, 100 three-node cells
    weights = {0: 6, 1: 24, 3: 100}
    pool = [t for n, ts in runs.items() for t in ts for _ in range(weights.get(n, 1))]
    print(f"\nmedian of a table's run (6 baselines, 24 one-node, 100 three-node cells, each "
          f"group at its measured median): {statistics.median(pool):.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
