"""Counting: parameters and MACs of a module, attention included (FlopCounterMode).

MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (which reports
2 FLOPs per multiply-accumulate). Convolutions, linear layers and matrix products are
counted; BatchNorm, activations, pooling and softmax are not (the convention of the
reference figures: I3D-R50 28.41 GMACs at 1x3x8x224x224).

On ``meta`` ``F.scaled_dot_product_attention`` decomposes into the math path (two batched
matmuls, counted); on CPU it runs the flash kernel
``aten._scaled_dot_product_flash_attention_for_cpu``, which FlopCounterMode does not know
(it would count 0), so :data:`SDPA_CPU_FORMULAS` registers the same two-matmul formula for
it and its backward. Both devices give the same count.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

__all__ = ["SDPA_CPU_FORMULAS", "count_params", "count_flops", "measure_latency"]


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args,
                            out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


#: FlopCounterMode ``custom_mapping`` for the CPU flash-attention kernels.
SDPA_CPU_FORMULAS: dict[Any, Any] = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flop,
}


def count_params(model: nn.Module) -> int:
    """Number of parameters (architecture parameters included if registered)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, inputs: torch.Tensor | Sequence[int]) -> dict[str, Any]:
    """FLOPs of one inference forward of ``model`` on ``inputs`` (a tensor or a shape, built
    on the model's device).

    Returns:
        ``{"flops": int, "macs": int, "by_op": {op name: flops}}`` with ``macs = flops // 2``.
    """
    if not isinstance(inputs, torch.Tensor):
        device = next(iter(model.parameters()), torch.empty(0)).device
        inputs = torch.zeros(tuple(inputs), device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False,
                                              custom_mapping=SDPA_CPU_FORMULAS) as counter:
            model(inputs)
    finally:
        model.train(was_training)
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    flops = int(counter.get_total_flops())
    return {"flops": flops, "macs": flops // 2, "by_op": by_op}


def measure_latency(model: nn.Module, inputs: torch.Tensor, repeats: int = 3,
                    warmup: int = 1) -> dict[str, Any]:
    """Wall-clock time of inference forwards (``eval``, ``inference_mode``) of ``model`` on
    ``inputs`` (any shape it takes), on their device; on CUDA each forward is bracketed by
    device synchronisations.

    Returns:
        ``{"median_ms": float, "runs_ms": [float, ...], "threads": int}``.
    """
    sync = torch.cuda.synchronize if inputs.device.type == "cuda" else (lambda: None)
    model.eval()
    runs = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            model(inputs)
            sync()
            if i >= warmup:
                runs.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(runs), "runs_ms": [round(r, 1) for r in runs],
            "threads": torch.get_num_threads()}
