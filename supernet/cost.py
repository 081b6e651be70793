"""Parameters, MACs/FLOPs and CPU latency of a backbone with a block set; ``attnas cost``.

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

    attnas cost --backbone i3d_r50 --block nonlocal --frames 8 --size 224 [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from .factory import BACKBONE_NAMES, BLOCK_NAMES, create_backbone

__all__ = [
    "SDPA_CPU_FORMULAS",
    "count_params",
    "count_flops",
    "measure_latency",
    "model_cost",
    "parse_positions",
    "main",
]


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
    """Wall-clock time of inference forwards (``eval``, ``inference_mode``) on CPU.

    Returns:
        ``{"median_ms": float, "runs_ms": [float, ...], "threads": int}``.
    """
    model.eval()
    runs = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            model(inputs)
            if i >= warmup:
                runs.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(runs), "runs_ms": [round(r, 1) for r in runs],
            "threads": torch.get_num_threads()}


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
    shape = (batch, 3, frames, h, w)
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


def parse_positions(tokens: Sequence[str] | None) -> Any:
    """CLI positions: ``None``; one preset name or JSON object; or ``STAGE=I,J ...`` tokens
    (``res3=1,3 res4=1,3,5``; ``res3=`` for none)."""
    if not tokens:
        return None
    if len(tokens) == 1 and "=" not in tokens[0]:
        return tokens[0]
    out: dict[str, list[int]] = {}
    for tok in tokens:
        stage, sep, rest = tok.partition("=")
        if not sep or not stage:
            raise ValueError(f"--positions: expected a preset name, a JSON object or "
                             f"STAGE=I,J tokens (e.g. res3=1,3 res4=1,3,5), got {tok!r}")
        try:
            out[stage] = [int(i) for i in rest.split(",") if i.strip()]
        except ValueError:
            raise ValueError(f"--positions: indices of {stage} must be integers, "
                             f"got {rest!r}") from None
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line on stderr, exit code 2
        print(f"attnas cost: error: {message}", file=sys.stderr)
        raise SystemExit(2)


#: the clip ``attnas cost`` counts when --frames / --size are not given: what each backbone
#: is trained on here (I3D-R50: the Kinetics 8x224 convention; proxy: the synthetic clips)
_DEFAULT_CLIP = {"i3d_r50": (8, 224), "proxy": (32, 24)}


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="attnas cost", description="Parameters, MACs/FLOPs (attention counted) "
                "and CPU forward latency of a backbone with attention blocks inserted.")
    p.add_argument("--backbone", default="i3d_r50", help=f"one of {', '.join(BACKBONE_NAMES)}")
    p.add_argument("--block", default="none",
                   help=f"one of {', '.join(BLOCK_NAMES[:6])}, or a genotype .json path")
    p.add_argument("--positions", nargs="+", default=None, metavar="POS",
                   help="preset (none, 5blocks, 10blocks; proxy: default, all), a JSON "
                        "object, or STAGE=I,J tokens; default: the backbone's default")
    p.add_argument("--frames", type=int, default=None,
                   help="clip length (default: the backbone's input: i3d_r50 8, proxy 32 -- "
                        "the synthetic benchmark's clips)")
    p.add_argument("--size", type=int, default=None,
                   help="crop size, H = W (default: i3d_r50 224, proxy 24)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--block-kwargs", default=None, metavar="JSON",
                   help='keyword arguments of the block, e.g. \'{"position": "coords"}\'')
    p.add_argument("--repeats", type=int, default=3, help="timed forwards (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-latency", action="store_true", help="count only; do not time")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    return p


def _human(res: dict[str, Any]) -> str:
    pos = "; ".join(f"{k}: {','.join(map(str, v))}" for k, v in res["positions"].items())
    lines = [
        f"{res['backbone']} + {res['block']} at [{pos or 'no positions'}], input "
        + "x".join(map(str, res["input"])),
        f"  params   {res['params']:>14,}   (inserted blocks: {res['block_params']:,})",
        f"  MACs     {res['macs'] / 1e9:>14.2f} G (FLOPs = 2 x MACs = {res['flops'] / 1e9:.2f} G;"
        f" attention counted)",
    ]
    if res["latency_ms"] is not None:
        lines.append(f"  latency  {res['latency_ms']:>14.1f} ms forward, median of "
                     f"{len(res['latency_runs_ms'])} ({res['threads']} thread(s), "
                     f"{platform.processor() or platform.machine()} CPU)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``attnas cost``: print the cost; bad input gives one line on stderr and exit 2."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return int(exc.code or 0)
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        if args.repeats < 1 or args.warmup < 0:
            raise ValueError("--repeats must be >= 1 and --warmup >= 0")
        block_kwargs = None
        if args.block_kwargs:
            try:
                block_kwargs = json.loads(args.block_kwargs)
            except json.JSONDecodeError as err:
                raise ValueError(f"--block-kwargs is not valid JSON ({err.msg})") from None
            if not isinstance(block_kwargs, dict):
                raise ValueError("--block-kwargs must be a JSON object")
        frames, size = _DEFAULT_CLIP.get(args.backbone, (8, 224))
        res = model_cost(args.backbone, args.block, parse_positions(args.positions),
                         frames=frames if args.frames is None else args.frames,
                         size=size if args.size is None else args.size,
                         batch=args.batch,
                         num_classes=args.num_classes, block_kwargs=block_kwargs,
                         latency=not args.no_latency, repeats=args.repeats,
                         warmup=args.warmup)
    except (ValueError, TypeError, FileNotFoundError) as err:
        msg = " ".join(str(err).split())
        print(f"attnas cost: error: {msg}", file=sys.stderr)
        return 2
    print(json.dumps(res) if args.json else _human(res))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
