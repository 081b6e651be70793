"""``attnas data ...``: dataset commands.

``attnas data synth --out DIR [--classes N --videos-per-class N --frames T --size S
--seed S --task colour|motion --workers W --force]`` writes the synthetic benchmark (see
:mod:`datamodules.synth`). Bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit code 2
        print(f"attnas data: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    from .synth import DEFAULTS, TASKS

    p = _Parser(prog="attnas data", description="Dataset commands.")
    sub = p.add_subparsers(dest="command", metavar="{synth}", parser_class=_Parser)
    s = sub.add_parser("synth", help="write the synthetic benchmark (H.264 MP4 + lists)",
                       description="Write the synthetic relational benchmark: DIR/<class>/"
                                   "<video>.mp4, DIR/{train,val,test}.txt, DIR/meta.json. "
                                   "Reuses DIR if it holds the same parameters.")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder")
    s.add_argument("--classes", type=int, default=DEFAULTS["classes"], metavar="N",
                   help=f"number of classes (default {DEFAULTS['classes']})")
    s.add_argument("--videos-per-class", type=int, default=DEFAULTS["videos_per_class"],
                   metavar="N", help=f"default {DEFAULTS['videos_per_class']}")
    s.add_argument("--frames", type=int, default=DEFAULTS["frames"], metavar="T",
                   help=f"frames per video (default {DEFAULTS['frames']})")
    s.add_argument("--size", type=int, default=DEFAULTS["size"], metavar="S",
                   help=f"frame height = width in pixels, even (default {DEFAULTS['size']})")
    s.add_argument("--seed", type=int, default=DEFAULTS["seed"], metavar="S",
                   help=f"generator seed (default {DEFAULTS['seed']})")
    s.add_argument("--task", choices=TASKS, default="colour",
                   help="what decides the class: the first flash's colour (default) or the "
                        "first mover's direction (motion: for flow and other colour-blind "
                        "inputs)")
    s.add_argument("--workers", type=int, default=None, metavar="W",
                   help="encoder processes (default: number of CPU cores, at most 8)")
    s.add_argument("--force", action="store_true",
                   help="regenerate even if DIR holds a dataset with other parameters")
    return p


def main(argv: list[str]) -> int:
    """Run ``attnas data <argv>``; returns the exit code."""
    from .synth import SynthError, ensure_synthetic

    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    if args.command is None:
        print("attnas data: expected a subcommand: synth (see `attnas data --help`)",
              file=sys.stderr)
        return 2
    try:
        out = ensure_synthetic(args.out, classes=args.classes,
                               videos_per_class=args.videos_per_class, frames=args.frames,
                               size=args.size, seed=args.seed, task=args.task,
                               workers=args.workers,
                               force=args.force, progress=True)
    except (SynthError, ValueError, OSError) as err:
        print(f"attnas data synth: {err}", file=sys.stderr)
        return 2
    print(f"synthetic benchmark ready: {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
