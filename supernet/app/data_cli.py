"""``attnas data ...``: dataset commands.

``attnas data synth --out DIR [--classes N --videos-per-class N --frames T --size S
--seed S --task colour|motion --workers W --force]`` writes the synthetic benchmark (see
:mod:`datamodules.synth`).

``attnas data check [ROOT] [-c CONFIG] [--format F --split N --num-frames T
--sampling-rate R --crop-size S --batch-size B --step-seconds S --clips N]`` reports what a
dataset root holds (counts per split and class, missing and broken files, clip lengths) and
the measured decode throughput per loader worker at the config's clip shape, with the
workers a GPU step needs (:mod:`supernet.app.datacheck`); it writes nothing.

Bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from rich.console import Console

from datamodules.datamodule import VideoDataModule
from datamodules.formats import FORMAT_NAMES
from datamodules.synth import DEFAULTS, TASKS, SynthError, ensure_synthetic

from .datacheck import check_dataset, render

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit code 2
        print(f"attnas data: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="attnas data", description="Dataset commands.")
    sub = p.add_subparsers(dest="command", metavar="{synth,check}", parser_class=_Parser)
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
                   help="what decides the class: the first flash's colour (default), the "
                        "first mover's direction (motion: for flow and other colour-blind "
                        "inputs), the first colour of a lamp blinking at one place (blink) or "
                        "the colour of the flash a white marker accompanies (marker)")
    s.add_argument("--workers", type=int, default=None, metavar="W",
                   help="encoder processes (default: number of CPU cores, at most 8)")
    s.add_argument("--force", action="store_true",
                   help="regenerate even if DIR holds a dataset with other parameters")
    c = sub.add_parser("check", help="counts, missing/broken files, clip lengths, decode "
                                     "throughput and the loader workers a GPU needs",
                       description="Check a dataset root as a run would read it (any "
                                   "--data.format) and measure its decode throughput at the "
                                   "clip shape of CONFIG's data section. Writes nothing.")
    c.add_argument("root", nargs="?", default=None, help="dataset root (default: CONFIG's)")
    c.add_argument("-c", "--config", metavar="CFG",
                   help="a search/retrain YAML: its data section gives root, format, split, "
                        "clip shape and batch size")
    c.add_argument("--format", choices=FORMAT_NAMES, default=None, help="annotation format")
    c.add_argument("--split", type=int, default=None, metavar="N", help="official split")
    c.add_argument("--num-frames", type=int, default=None, metavar="T")
    c.add_argument("--sampling-rate", type=int, default=None, metavar="R")
    c.add_argument("--crop-size", type=int, default=None, metavar="S")
    c.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="clips per GPU step (default: CONFIG's data.batch_size)")
    c.add_argument("--step-seconds", type=float, default=0.25, metavar="S",
                   help="seconds one GPU step takes (default 0.25)")
    c.add_argument("--clips", type=int, default=24, metavar="N",
                   help="training clips decoded to measure throughput (default 24)")
    return p


def _check(args: argparse.Namespace) -> int:
    """``attnas data check``: build the run's datamodule from CONFIG and the options, check."""
    data: dict = {}
    if args.config:
        cfg_path = Path(args.config)
        if not cfg_path.is_file():
            raise FileNotFoundError(f"config {cfg_path} does not exist")
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        if not isinstance(cfg, dict) or not isinstance(cfg.get("data") or {}, dict):
            raise ValueError(f"{cfg_path}: expected a YAML mapping with a 'data' section")
        data = dict(cfg.get("data") or {})
    for key, value in (("root", args.root), ("format", args.format), ("split", args.split),
                       ("num_frames", args.num_frames), ("sampling_rate", args.sampling_rate),
                       ("crop_size", args.crop_size), ("batch_size", args.batch_size)):
        if value is not None:
            data[key] = value
    if "root" not in data:
        raise ValueError("give a dataset ROOT (or a CONFIG with data.root)")
    if args.step_seconds <= 0 or args.clips < 1:
        raise ValueError("--step-seconds must be > 0 and --clips >= 1")
    data.update(num_workers=0, probe=False, synthetic=False)
    try:
        dm = VideoDataModule(**data)
    except TypeError as err:
        raise ValueError(f"{args.config}: data section: {err}") from None
    report = check_dataset(dm, clips=args.clips, console=Console(stderr=True))
    render(report, dm.batch_size, args.step_seconds, Console(soft_wrap=True))
    return 0


def main(argv: list[str]) -> int:
    """Run ``attnas data <argv>``; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    if args.command is None:
        print("attnas data: expected a subcommand: synth, check (see `attnas data --help`)",
              file=sys.stderr)
        return 2
    if args.command == "check":
        try:
            return _check(args)
        except (ValueError, OSError, yaml.YAMLError) as err:
            line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            print(f"attnas data check: {line}", file=sys.stderr)
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
