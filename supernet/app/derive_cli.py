"""``attnas derive CKPT -o cell.json [--select RULE] [--data.KEY VALUE ...]``.

Reads a search checkpoint (any epoch, ``last.ckpt`` included) and derives the cell with a
selection rule of :mod:`derive.select` (default: the rule the search was run with):
``argmax`` reads alpha/beta; ``perturb`` and ``alone`` rebuild the supernet and score
candidates on validation batches, with the data settings saved in the checkpoint (or
``--data.*`` overrides, e.g. ``--data.root /elsewhere``). Writes the genotype JSON, the
cell's picture, the selection picture and, when the run's ``arch.csv`` is found next to
the checkpoint, the alpha heat map / alpha over epochs. Bad input (missing file, not a
checkpoint, a retrain checkpoint, an unknown rule, unreachable validation data) ends with
one line and exit code 2, and nothing is written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from derive.checkpoint import genotype_from_checkpoint, select_from_checkpoint
from derive.draw import draw_cell, plot_alpha, plot_selection
from derive.genotype import GenotypeError, save_genotype
from derive.select import SELECTION_RULES, check_bn_mode, check_rule, report_from_dict
from supernet.costmodel import check_min_width, parse_cost_target
from supernet.paths import check_writable, output_file

from .parsing import OneLineParser

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Entry point of ``attnas derive``."""
    ap = OneLineParser(prog="attnas derive", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a search checkpoint (.ckpt)")
    ap.add_argument("--select", default=None,
                    help=f"selection rule: {' | '.join(SELECTION_RULES)} (default: the "
                         f"search's own)")
    ap.add_argument("--val-batches", type=int, default=None,
                    help="validation batches a data-driven rule scores on (default: the "
                         "search's select_val_batches)")
    ap.add_argument("--calib-batches", type=int, default=None,
                    help="training batches for BatchNorm recalibration before each score")
    ap.add_argument("--bn", default=None,
                    help="BatchNorm while scoring: recalibrate | batch (default: the search's "
                         "select_bn)")
    ap.add_argument("--finetune-steps", type=int, default=None,
                    help="weight steps after each decision (default: the search's)")
    ap.add_argument("--cost-target", default=None, metavar="TARGET",
                    help="select within a budget: GMACs per clip (0.05), a ratio of the "
                         "non-local blocks (0.5x), a block name (a2) or 'none' (default: the "
                         "search's --model.cost_target)")
    ap.add_argument("--cost-min-width", type=float, default=None, metavar="RATIO",
                    help="with a budget, the narrowest inner ratio worth a node: the cell "
                         "keeps the most leading nodes that fit at >= RATIO (e.g. 0.25; "
                         "default: the search's --model.cost_min_width, 0 = all nodes)")
    ap.add_argument("-o", "--out", default=None,
                    help="genotype JSON to write (default: <run>/derived.json; a folder: "
                         "derived.json in it)")
    ap.add_argument("--png", default=None, help="cell picture (default: next to the JSON)")
    ap.add_argument("--alpha-png", default=None,
                    help="alpha heat map / alpha over epochs (default: next to the JSON, "
                         "when the run's arch.csv exists)")
    ap.add_argument("--quiet", action="store_true", help="do not print the genotype")
    ap.add_argument("--data", type=dict[str, Any] | None, default=None, metavar="KEY VALUE",
                    help="data overrides for data-driven rules: --data.KEY VALUE (any "
                         "VideoDataModule argument, YAML values, e.g. --data.root DIR "
                         "--data.num_workers 0; default: the search's saved data settings)")
    try:
        args = ap.parse_args(argv)
        overrides = args.data or {}
        if args.select is not None:
            check_rule(args.select)
        if args.bn is not None:
            check_bn_mode(args.bn)
        options = {f"select_{k}": v for k, v in (("val_batches", args.val_batches),
                                                ("calib_batches", args.calib_batches),
                                                ("finetune_steps", args.finetune_steps),
                                                ("bn", args.bn))
                   if v is not None}
        if args.cost_target is not None:
            target = None if args.cost_target.lower() == "none" else args.cost_target
            if target is not None:
                parse_cost_target(target)
            options["cost_target"] = target
        if args.cost_min_width is not None:
            options["cost_min_width"] = check_min_width(args.cost_min_width)
        genotype, csv = genotype_from_checkpoint(args.checkpoint)
        out = output_file(args.out, "derived.json") if args.out else \
            Path(genotype.provenance["run"]) / "derived.json"
        # before the selection runs: nothing is written on failure
        check_writable(out.parent, create=False)
        genotype = select_from_checkpoint(args.checkpoint, args.select, overrides, options)
    except (ValueError, FileNotFoundError, GenotypeError, RuntimeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        print(f"attnas derive: error: {msg}", file=sys.stderr)
        return 2
    png = Path(args.png) if args.png else out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_genotype(genotype, out)
    selection = genotype.provenance["selection"]
    draw_cell(genotype, png, title=f"{out.stem} (epoch {genotype.provenance.get('epoch')}, "
                                   f"{selection['rule']})")
    written = [str(out), str(png)]
    sel_png = out.with_name(out.stem + "_selection.png")
    plot_selection(selection, sel_png)
    written.append(str(sel_png))
    if csv is not None:
        alpha_png = (Path(args.alpha_png) if args.alpha_png
                     else out.with_name(out.stem + "_alpha.png"))
        plot_alpha(csv, alpha_png)
        written.append(str(alpha_png))
    if not args.quiet:
        print(genotype.summary())
        print(report_from_dict(selection))
    print("wrote " + ", ".join(written))
    return 0
