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

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from supernet.cells import ArchParameters
from supernet.costmodel import check_min_width, parse_cost_target
from supernet.paths import check_writable, need_file, output_file

from .draw import draw_cell, plot_alpha, plot_selection
from .genotype import Genotype, GenotypeError, save_genotype
from .select import SELECTION_RULES, check_bn_mode, check_rule, report_from_dict

__all__ = ["genotype_from_checkpoint", "select_from_checkpoint", "main"]


def _fail(msg: str) -> ValueError:
    return ValueError(msg)


def genotype_from_checkpoint(path: str | Path) -> tuple[Genotype, Path | None]:
    """Genotype of a search checkpoint and the run's ``arch.csv`` (or None if not found)."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("checkpoints/last.ckpt")) or sorted(p.glob("**/last.ckpt"))
        hint = f", e.g. {found[0]}" if found else ""
        raise FileNotFoundError(f"{p} is a directory; derive needs a checkpoint file{hint}")
    need_file(p, "checkpoint")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise _fail(f"{p} is not a readable PyTorch checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise _fail(f"{p} is not a Lightning checkpoint (no state_dict)")
    sd = ckpt["state_dict"]
    if ckpt.get("attnas_stage"):  # a two-stream stage: its result is the stage's JSON
        stage = ckpt["attnas_stage"]
        raise _fail(f"{p} is a checkpoint of the two-stream stage {stage!r}; its result is "
                    f"twostream_{stage}.json in the run folder (re-select with `attnas search "
                    f"twostream --stage {stage} --force --ckpt_path CKPT`, same max_epochs)")
    if "model.arch.alpha" not in sd or "model.arch.beta" not in sd:
        kind = ckpt.get("attnas_kind", "foreign")
        raise _fail(f"{p} is a {kind} checkpoint without architecture parameters; "
                    f"derive needs a search checkpoint (runs/search/version_N/checkpoints/*.ckpt)")
    hp = dict(ckpt.get("hyper_parameters", {}))
    alpha, beta = sd["model.arch.alpha"], sd["model.arch.beta"]
    arch = ArchParameters(num_nodes=alpha.shape[0])
    arch.load_state_dict({"alpha": alpha, "beta": beta,
                          "temperature": sd.get("model.arch.temperature", torch.tensor(1.0))})
    run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    dm = ckpt.get("datamodule_hyper_parameters", {}) or {}
    provenance = {
        "run": str(run),
        "checkpoint": str(p),
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "dataset": dm.get("root") or dm.get("train_list"),
        "seed": hp.get("seed"),
        "backbone": hp.get("backbone"),
        "arch_order": hp.get("arch_order"),
        "remedy": hp.get("remedy"),
    }
    seed_file = run / "config.yaml"
    if provenance["seed"] is None and seed_file.is_file():
        for line in seed_file.read_text().splitlines():
            if line.startswith("seed_everything:"):
                value = line.split(":", 1)[1].strip()
                provenance["seed"] = int(value) if value.lstrip("-").isdigit() else None
    genotype = Genotype.from_arch(
        arch, inner_ratio=hp.get("inner_ratio", 0.5), kv_pool=hp.get("kv_pool", True),
        position=hp.get("position", "none"), provenance=provenance,
    )
    csv = run / "arch.csv"
    return genotype, (csv if csv.is_file() else None)


def _data_overrides(items: list[str]) -> dict:
    """``--data.KEY VALUE`` / ``--data.KEY=VALUE`` pairs -> ``{KEY: value}`` (YAML values)."""
    import yaml

    out: dict = {}
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--data."):
            raise ValueError(f"unrecognised argument {item!r} (data overrides look like "
                             f"--data.root DIR)")
        key, eq, value = item[len("--data."):].partition("=")
        if not eq:
            if i + 1 >= len(items):
                raise ValueError(f"{item} needs a value")
            value = items[i + 1]
            i += 1
        out[key] = yaml.safe_load(value)
        i += 1
    return out


def select_from_checkpoint(path: str | Path, rule: str | None = None,
                           data_overrides: dict | None = None, options: dict | None = None
                           ) -> Genotype:
    """Rebuild a search checkpoint's supernet and derive its cell with ``rule`` (default:
    the run's own ``select``); data-driven rules read the validation data named in the
    checkpoint's data settings, updated by ``data_overrides``. ``options`` may set
    ``select_val_batches``, ``select_calib_batches``, ``select_finetune_steps``,
    ``select_bn``, ``cost_target`` (a budget, see :mod:`supernet.costmodel`; None
    removes the run's own) and ``cost_min_width`` (the narrowest inner ratio worth a node
    under that budget).

    Raises:
        ValueError / FileNotFoundError: bad checkpoint, rule or data (one-line messages).
    """
    from datamodules import VideoDataModule

    from .callbacks import reselect

    base, _ = genotype_from_checkpoint(path)  # validates the checkpoint, finds the run
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    hp = dict(ckpt.get("hyper_parameters", {}))
    rule = check_rule(rule or hp.get("select", "argmax"))
    data = {k: v for k, v in dict(ckpt.get("datamodule_hyper_parameters") or {}).items()
            if not k.startswith("_")}
    data.update(data_overrides or {})

    def validation_data(module: Any) -> VideoDataModule | None:
        if module.clip is None and data.get("num_frames") and data.get("crop_size"):
            crop = int(data["crop_size"])  # the clip the search trained on (for its cost)
            module.clip = (int(data["num_frames"]), crop, crop)
        if module.hparams.get("cost_target") is not None:
            module.cost_budget()  # a budget below the cheapest cell: refused before selecting
        if rule == "argmax":
            return None
        if not data:
            raise ValueError(f"{path} records no data settings; give --data.root DIR")
        data.update({"search": True, "synthetic": False})
        try:
            dm = VideoDataModule(**data)
        except TypeError as e:
            raise ValueError(f"bad data settings: {e}") from None
        dm.setup("fit")
        return dm

    seed = base.provenance.get("seed")
    return reselect(path, rule, int(ckpt.get("epoch") or 0), options, validation_data,
                    seed=int(seed) if isinstance(seed, int) else 0,
                    run=base.provenance.get("run"), dataset=base.provenance.get("dataset"))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise ValueError(message)


def main(argv: list[str]) -> int:
    """Entry point of ``attnas derive``."""
    ap = _Parser(prog="attnas derive", description=__doc__.split("\n\n")[0],
                 epilog="Data overrides for data-driven rules: --data.KEY VALUE (any "
                        "VideoDataModule argument, e.g. --data.root DIR --data.num_workers 0).")
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
    try:
        args, rest = ap.parse_known_args(argv)
        overrides = _data_overrides(rest)
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
