"""Measured latency of the search space's parts on this device: a lookup table, cached.

The MACs of :mod:`supernet.costmodel` are counted; latency has to be measured, on the device
the cell will run on (ProxylessNAS builds its latency term from such a table). This module
times one inference forward of every candidate op at every insertion shape, and of the
cell's fixed part (projection C -> Ci, node BatchNorms, sink Ci*K -> C), and sums over the
positions exactly as the MACs table does::

    latency(cell) ~ fixed + sum_k op(node_k)

(additive up to the framework's per-call overhead; a table, not a simulator). Timings are
medians of ``repeats`` forwards after ``warmup`` ones, batch 1, ``inference_mode``, with a
device synchronisation around each forward on CUDA.

Measuring the I3D-R50 table takes tens of seconds on a CPU, so results are cached in a JSON
file (default ``~/.cache/attnas/latency.json``; ``$ATTNAS_CACHE`` moves the folder), one
entry per *key*: device name, torch version, CPU threads, the shapes, the inner widths,
``position``, ``kv_pool``, ``repeats`` and ``warmup``. A different key measures again; the
file is rewritten atomically; an unreadable cache file is reported on stderr and replaced.

    attnas cost --space --latency [--device cuda] [--latency-cache FILE]
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from datamodules.atomic import atomic_write_text

from .block_factory import create_block
from .cells import inner_width
from .counting import measure_latency
from .machine import cache_dir, device_name
from .ops import AttentionOp
from .space import OP_NAMES

__all__ = ["LatencyTable", "space_latency", "default_cache_path", "device_name"]

FORMAT = "attnas-latency"
VERSION = 1


class LatencyTable(NamedTuple):
    """Forward latency (ms, batch 1) of a cell's parts, summed over the insertion positions.

    ``op_ms`` has one entry per candidate in :data:`supernet.space.OPS` order, ``block_ms``
    one per baseline block asked for (the whole block at the same positions); ``cached``
    says whether the values came from the cache file rather than a measurement just now.
    """

    device: str
    threads: int
    fixed_ms: float
    op_ms: tuple[float, ...]
    block_ms: dict[str, float]
    key: str
    cached: bool

    def cell_ms(self, ops: Sequence[str | int]) -> float:
        """Latency of a cell whose nodes run ``ops`` (names or indices), in ms."""
        return self.fixed_ms + sum(self.op_ms[o if isinstance(o, int) else OP_NAMES.index(o)]
                                   for o in ops)


def default_cache_path() -> Path:
    """``$ATTNAS_CACHE/latency.json``, else ``~/.cache/attnas/latency.json``."""
    return cache_dir() / "latency.json"


def _median_ms(module: nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> float:
    return float(measure_latency(module, x, repeats, warmup)["median_ms"])


class _Fixed(nn.Module):
    """The cell's own layers around its nodes: projection, K node BatchNorms, sink."""

    def __init__(self, channels: int, inner: int, num_nodes: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(channels, inner, 1, bias=False)
        self.bns = nn.ModuleList(nn.BatchNorm3d(inner) for _ in range(num_nodes))
        self.sink = nn.Conv3d(inner * num_nodes, channels, 1, bias=False)
        self.out_bn = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.proj(x)
        nodes = [bn(z) for bn in self.bns]  # stand-ins for the node outputs
        return x + self.out_bn(self.sink(torch.cat(nodes, dim=1)))


def _read_cache(path: Path, quiet: bool = False) -> dict[str, Any]:
    """The cache's entries (``{}`` when absent or unreadable; said on stderr unless quiet)."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT or not isinstance(doc.get("entries"), dict):
            raise ValueError("not an attnas latency cache")
        return doc["entries"]
    except (OSError, ValueError, AttributeError) as err:
        if not quiet:
            print(f"attnas: latency cache {path} unreadable ({err}); measuring again and "
                  f"replacing it", file=sys.stderr)
        return {}


def space_latency(shapes: Sequence[Sequence[int]], inner_ratio: float = 0.5,
                  num_nodes: int = 3, kv_pool: bool = True, position: str = "none",
                  device: str | torch.device = "cpu", repeats: int = 5, warmup: int = 2,
                  cache: str | os.PathLike | None = None, progress: bool = False,
                  blocks: Sequence[str] = ()) -> LatencyTable:
    """The latency table of the space at ``shapes`` on ``device`` (cached).

    Args:
        shapes: ``(C, T, H, W)`` at the input of each insertion position (batch 1), e.g.
            :attr:`supernet.costmodel.SpaceCost.shapes`.
        inner_ratio: Ci / C (Ci = ``round(C * inner_ratio)`` per position, as the cells do).
        num_nodes: K (the fixed part's sink and BatchNorms depend on it).
        kv_pool, position: the cell's settings (they change dot-product work).
        device: where to measure (``cpu`` or ``cuda[:i]``).
        repeats, warmup: timed and untimed forwards per part (median of the timed ones).
        cache: the cache file (None: :func:`default_cache_path`; ``""``: no cache).
        progress: print one line per position to stderr while measuring.
        blocks: baseline blocks (names of :func:`supernet.create_block`) to time at the
            same positions, for comparison.

    ``ValueError`` for an unusable device or bad counts.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available here")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"latency is measured on cpu or cuda, got device {device!r}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    shapes = [tuple(int(s) for s in shape) for shape in shapes]
    widths = [inner_width(c, inner_ratio) for c, *_ in shapes]
    threads = torch.get_num_threads()
    name = device_name(dev)
    spec = {"device": name, "torch": torch.__version__,
            "threads": threads if dev.type == "cpu" else None, "shapes": shapes,
            "widths": widths, "num_nodes": int(num_nodes), "kv_pool": bool(kv_pool),
            "position": str(position), "repeats": int(repeats), "warmup": int(warmup),
            "blocks": sorted(set(blocks))}
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = None if cache == "" else Path(cache) if cache is not None else default_cache_path()
    entries = _read_cache(path) if path is not None else {}
    hit = entries.get(key)
    if isinstance(hit, dict) and len(hit.get("op_ms", ())) == len(OP_NAMES):
        return LatencyTable(name, threads, float(hit["fixed_ms"]),
                            tuple(float(v) for v in hit["op_ms"]),
                            {k: float(v) for k, v in dict(hit.get("block_ms") or {}).items()},
                            key, True)

    fixed, ops = 0.0, [0.0] * len(OP_NAMES)
    block_ms = dict.fromkeys(sorted(set(blocks)), 0.0)
    gen = torch.Generator().manual_seed(0)
    for i, ((c, t, h, w), ci) in enumerate(zip(shapes, widths)):
        if progress:
            print(f"attnas: timing the space at position {i + 1}/{len(shapes)} "
                  f"({c}x{t}x{h}x{w}, inner width {ci}) on {name}", file=sys.stderr)
        x = torch.randn(1, c, t, h, w, generator=gen).to(dev)
        z = torch.randn(1, ci, t, h, w, generator=gen).to(dev)
        fixed += _median_ms(_Fixed(c, ci, int(num_nodes)).to(dev), x, repeats, warmup)
        for j, op in enumerate(OP_NAMES):
            ops[j] += _median_ms(AttentionOp(ci, op, position, kv_pool).to(dev), z, repeats, warmup)
        for b in block_ms:
            block_ms[b] += _median_ms(create_block(b, c).to(dev), x, repeats, warmup)
    table = LatencyTable(name, threads, round(fixed, 4), tuple(round(v, 4) for v in ops),
                         {k: round(v, 4) for k, v in block_ms.items()}, key, False)
    if path is not None:
        entries = _read_cache(path, quiet=True)  # another run may have written meanwhile
        entries[key] = {"spec": spec, "fixed_ms": table.fixed_ms, "op_ms": list(table.op_ms),
                        "block_ms": table.block_ms, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"format": FORMAT, "version": VERSION,
                                            "entries": entries}, indent=1) + "\n")
    return table
