"""``attnas derive CKPT -o cell.json [--png cell.png] [--alpha-png alpha.png]``.

Reads a search checkpoint (any epoch, ``last.ckpt`` included), discretises alpha/beta
(argmax op and argmax input per node) and writes the genotype JSON, the cell's picture and,
when the run's ``arch.csv`` is found next to the checkpoint, the alpha heat map / alpha
over epochs. Bad input (missing file, not a checkpoint, a retrain checkpoint) ends with
one line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from supernet.cells import ArchParameters

from .draw import draw_cell, plot_alpha
from .genotype import Genotype, GenotypeError, save_genotype

__all__ = ["genotype_from_checkpoint", "main"]


def _fail(msg: str) -> ValueError:
    return ValueError(msg)


def genotype_from_checkpoint(path: str | Path) -> tuple[Genotype, Path | None]:
    """Genotype of a search checkpoint and the run's ``arch.csv`` (or None if not found)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise _fail(f"{p} is not a readable PyTorch checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise _fail(f"{p} is not a Lightning checkpoint (no state_dict)")
    sd = ckpt["state_dict"]
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


def main(argv: list[str]) -> int:
    """Entry point of ``attnas derive``."""
    ap = argparse.ArgumentParser(prog="attnas derive", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a search checkpoint (.ckpt)")
    ap.add_argument("-o", "--out", default=None,
                    help="genotype JSON to write (default: <run>/derived.json)")
    ap.add_argument("--png", default=None, help="cell picture (default: next to the JSON)")
    ap.add_argument("--alpha-png", default=None,
                    help="alpha heat map / alpha over epochs (default: next to the JSON, "
                         "when the run's arch.csv exists)")
    ap.add_argument("--quiet", action="store_true", help="do not print the genotype")
    args = ap.parse_args(argv)
    try:
        genotype, csv = genotype_from_checkpoint(args.checkpoint)
    except (ValueError, FileNotFoundError, GenotypeError) as e:
        print(f"attnas derive: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(genotype.provenance["run"]) / "derived.json"
    png = Path(args.png) if args.png else out.with_suffix(".png")
    save_genotype(genotype, out)
    draw_cell(genotype, png, title=f"{out.stem} (epoch {genotype.provenance.get('epoch')})")
    written = [str(out), str(png)]
    if csv is not None:
        alpha_png = (Path(args.alpha_png) if args.alpha_png
                     else out.with_name(out.stem + "_alpha.png"))
        plot_alpha(csv, alpha_png)
        written.append(str(alpha_png))
    if not args.quiet:
        print(genotype.summary())
    print("wrote " + ", ".join(written))
    return 0
