"""Parameters, MACs/FLOPs and CPU latency of a backbone with a block set (the numbers of
``attnas cost``, whose command is :mod:`supernet.app.cost_cli`).

MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (which reports
2 FLOPs per multiply-accumulate) on the ``meta`` device by default -- shapes only, no
arithmetic, so I3D-R50 at 224x224 is counted in well under a second. Convolutions, linear
layers and matrix products are counted; BatchNorm, activations, pooling and softmax are
not (the convention of the reference figures: I3D-R50 28.41 GMACs at 1x3x8x224x224).

Attention is counted: on ``meta`` ``F.scaled_dot_product_attention`` decomposes into the
math path (two batched matmuls, counted); on CPU it runs the flash kernel
``aten._scaled_dot_product_flash_attention_for_cpu``, which FlopCounterMode does not know
(it would count 0), so :data:`SDPA_CPU_FORMULAS` registers the same two-matmul formula for
it and its backward. Both devices give the same count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .counting import SDPA_CPU_FORMULAS, count_flops, count_params, measure_latency
from .factory import create_backbone

__all__ = [
    "SDPA_CPU_FORMULAS",
    "count_params",
    "count_flops",
    "measure_latency",
    "model_cost",
]


def model_cost(backbone: str = "i3d_r50", block: str = "none", positions: Any = None,
               frames: int = 8, size: int | Sequence[int] = 224, batch: int = 1,
               num_classes: int = 400, block_kwargs: Mapping[str, Any] | None = None,
               latency: bool = True, repeats: int = 3, warmup: int = 1,
               backbone_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Parameters, MACs/FLOPs (counted on ``meta``) and, optionally, CPU latency.

    Returns a JSON-able dict: ``backbone, block, positions, input, params, block_params,
    macs, flops`` and ``latency_ms`` / ``latency_runs_ms`` / ``threads`` (``None`` when
    ``latency`` is False).
    """
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if not all(isinstance(v, int) and v >= 1 for v in (h, w, batch)):
        raise ValueError(f"size and batch must be positive integers, got size={size!r}, "
                         f"batch={batch!r}")
    shape = (batch, int((backbone_kwargs or {}).get("in_channels", 3)), frames, h, w)
    kwargs = dict(block_kwargs=dict(block_kwargs or {}), **dict(backbone_kwargs or {}))
    with torch.device("meta"):
        model = create_backbone(backbone, num_classes, block=block, positions=positions,
                                **kwargs)
    try:
        flops = count_flops(model, shape)
    except (NotImplementedError, RuntimeError):
        # a block that reads tensor values on the host (e.g. the supernet's mixed edge
        # turns its op weights into Python floats) cannot run on meta: count on CPU
        torch.manual_seed(0)
        model = create_backbone(backbone, num_classes, block=block, positions=positions,
                                **kwargs)
        flops = count_flops(model, shape)
    block_params = sum(count_params(b) for _, b in model.inserted_blocks())
    arch = getattr(model, "twostream_arch", None)  # a two-stream network inserts its own
    if isinstance(arch, dict) and block == "none":
        block = str(arch["values"]["attention"])
    out: dict[str, Any] = {
        "backbone": backbone,
        "block": block,
        "positions": {k: list(v) for k, v in model.positions.items()},
        "input": list(shape),
        "params": count_params(model),
        "block_params": block_params,
        "macs": flops["macs"],
        "flops": flops["flops"],
        "latency_ms": None,
        "latency_runs_ms": None,
        "threads": None,
    }
    if latency:
        torch.manual_seed(0)
        model = create_backbone(backbone, num_classes, block=block, positions=positions,
                                **kwargs)
        lat = measure_latency(model, torch.randn(shape), repeats, warmup)
        out.update(latency_ms=round(lat["median_ms"], 1), latency_runs_ms=lat["runs_ms"],
                   threads=lat["threads"])
    return out
