"""``attnas cost``: parameters, MACs/FLOPs and CPU latency of a backbone with a block set
(:func:`supernet.cost.model_cost`), or the cost model of the search space (``--space``,
:mod:`supernet.costmodel`; ``--latency``: :mod:`supernet.latency`).

    attnas cost --backbone i3d_r50 --block nonlocal --frames 8 --size 224 [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence
from typing import Any

import torch

from supernet.cost import model_cost
from supernet.costmodel import COST_BLOCKS, SpaceCost
from supernet.factory import BACKBONE_NAMES, BLOCK_NAMES
from supernet.hparams import RENAMED_BACKBONE_KWARGS, deprecated_key_line, rename_backbone_kwargs
from supernet.latency import default_cache_path, space_latency
from supernet.twostream.budget import describe_twostream

__all__ = ["main", "parse_positions"]


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
_DEFAULT_CLIP = {"i3d_r50": (8, 224), "s3d": (16, 224), "slowfast_r50": (32, 224),
                 "proxy": (32, 24), "twostream": (32, 24)}


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="attnas cost", description="Parameters, MACs/FLOPs (attention counted) "
                "and CPU forward latency of a backbone with attention blocks inserted.")
    p.add_argument("--backbone", default="i3d_r50", help=f"one of {', '.join(BACKBONE_NAMES)}")
    p.add_argument("--block", default="none",
                   help=f"one of {', '.join(BLOCK_NAMES[:6])}, or a genotype .json path")
    p.add_argument("--positions", nargs="+", default=None, metavar="POS",
                   help="preset (i3d_r50: none, 5blocks, 10blocks; s3d: none, 5blocks, all; "
                        "proxy: none, default, all), a JSON "
                        "object, or STAGE=I,J tokens; default: the backbone's default")
    p.add_argument("--frames", type=int, default=None,
                   help="clip length (default: the backbone's input: i3d_r50 8, s3d 16, "
                        "slowfast_r50 32 (slow 8), proxy and twostream 32 -- the "
                        "synthetic benchmark's clips)")
    p.add_argument("--size", type=int, default=None,
                   help="crop size, H = W (default: i3d_r50 and s3d 224, proxy 24)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--block-kwargs", default=None, metavar="JSON",
                   help='keyword arguments of the block, e.g. \'{"position": "coords"}\'')
    p.add_argument("--backbone-kwargs", default=None, metavar="JSON",
                   help='keyword arguments of the backbone, e.g. twostream \'{"arch": '
                        '"runs/twostream/attention.json"}\' or (with --space) the searched '
                        'network\'s size \'{"width_div": 8, "stem_pool": false}\'')
    p.add_argument("--repeats", type=int, default=3, help="timed forwards (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-latency", action="store_true", help="count only; do not time")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--space", action="store_true",
                   help="print the cost model of the search space instead: MACs and params "
                        "of every candidate op and of the cell's fixed part, summed over the "
                        "positions, next to the baseline blocks (supernet.costmodel)")
    p.add_argument("--inner-ratio", type=float, default=0.5, help="--space: cell inner ratio")
    p.add_argument("--nodes", type=int, default=3, help="--space: cell nodes")
    p.add_argument("--position", default="sincos", help="--space: none | coords | sincos")
    p.add_argument("--latency", action="store_true",
                   help="--space: also measure each part's forward latency on --device "
                        "(median of --repeats after --warmup; cached, see --latency-cache)")
    p.add_argument("--device", default="cpu", help="--space --latency: cpu or cuda[:i]")
    p.add_argument("--latency-cache", default=None, metavar="FILE",
                   help="--space --latency: the cache file (default "
                        "$ATTNAS_CACHE/latency.json or ~/.cache/attnas/latency.json; '' for "
                        "none)")
    p.add_argument("--compare", default=None, metavar="BLOCKS",
                   help="comma-separated blocks to print next to --block (MACs / params "
                        "only); default for a genotype: none,nonlocal,a2")
    return p


def _compare_lines(args: argparse.Namespace, frames: int, size: int,
                   main_res: dict[str, Any]) -> list[str]:
    """A table of the blocks of ``--compare`` next to ``--block`` (params, GMACs, the
    inserted blocks' share), for a genotype against the baselines."""
    names = [b.strip() for b in (args.compare or "none,nonlocal,a2").split(",") if b.strip()]
    rows = [main_res] + [model_cost(args.backbone, b, parse_positions(args.positions),
                                    frames=frames, size=size, batch=args.batch,
                                    num_classes=args.num_classes, latency=False)
                         for b in names if b != args.block]
    base = next((r for r in rows if r["block"] == "none"), None)
    lines = [f"{'block':40s} {'params':>14s} {'GMACs':>9s} {'+GMACs':>9s} {'+params':>12s}"]
    for r in rows:
        extra = "" if base is None else (f" {(r['macs'] - base['macs']) / 1e9:9.3f} "
                                         f"{r['params'] - base['params']:12,d}")
        name = r["block"] if len(r["block"]) <= 40 else "..." + r["block"][-37:]
        lines.append(f"{name:40s} {r['params']:14,d} {r['macs'] / 1e9:9.3f}{extra}")
    return lines


def _json_object(text: str | None, flag: str) -> dict[str, Any] | None:
    """``text`` parsed as a JSON object (None for None); ``ValueError`` naming ``flag``."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag} is not valid JSON ({err.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object")
    return value


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
        block_kwargs = _json_object(args.block_kwargs, "--block-kwargs")
        backbone_kwargs = _json_object(args.backbone_kwargs, "--backbone-kwargs")
        for old in rename_backbone_kwargs(backbone_kwargs):
            line = deprecated_key_line(old, RENAMED_BACKBONE_KWARGS[old], "--backbone-kwargs")
            print(f"attnas cost: {line}", file=sys.stderr)
        frames, size = _DEFAULT_CLIP.get(args.backbone, (8, 224))
        frames = frames if args.frames is None else args.frames
        size = size if args.size is None else args.size
        if args.space and args.backbone == "twostream":
            net = dict(backbone_kwargs or {})
            unknown = sorted(set(net) - {"width_div", "depths", "stem_pool"})
            if unknown:
                raise ValueError(f"--backbone-kwargs with --space --backbone twostream: "
                                 f"unknown key(s) {unknown}; accepted: width_div, depths, "
                                 f"stem_pool")
            print("\n".join(describe_twostream(
                (frames, size, size), int(net.get("width_div", 8)),
                tuple(int(d) for d in net.get("depths", (1, 1, 1, 1))), args.num_classes,
                bool(net.get("stem_pool", True)))))
            return 0
        if args.space:
            space = SpaceCost(args.backbone, parse_positions(args.positions),
                              (frames, size, size), args.nodes, args.inner_ratio,
                              position=args.position)
            lat = None
            if args.latency:
                cache = (default_cache_path() if args.latency_cache is None
                         else args.latency_cache)
                lat = space_latency(space.shapes, space.inner_ratio, space.num_nodes,
                                    space.kv_pool, space.position, args.device,
                                    args.repeats, args.warmup, cache, progress=True,
                                    blocks=COST_BLOCKS)
            print("\n".join(space.describe(lat)))
            if lat is not None:
                print(f"latency: forward, batch 1, median of {args.repeats} after "
                      f"{args.warmup} warm-up, on {lat.device}"
                      + (f" ({lat.threads} thread(s))" if args.device == "cpu" else "")
                      + ("; from the cache " if lat.cached else "; measured now, cached in ")
                      + (str(cache) if cache != "" else "(no cache)")
                      + f" [key {lat.key}]")
            return 0
        res = model_cost(args.backbone, args.block, parse_positions(args.positions),
                         frames=frames, size=size, batch=args.batch,
                         num_classes=args.num_classes, block_kwargs=block_kwargs,
                         latency=not args.no_latency, repeats=args.repeats,
                         warmup=args.warmup, backbone_kwargs=backbone_kwargs)
        compare = (_compare_lines(args, frames, size, res)
                   if args.compare is not None or args.block.endswith(".json") else None)
    except (ValueError, TypeError, FileNotFoundError) as err:
        msg = " ".join(str(err).split())
        print(f"attnas cost: error: {msg}", file=sys.stderr)
        return 2
    print(json.dumps(res) if args.json else _human(res))
    if compare and not args.json:
        print("\n".join(compare))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
