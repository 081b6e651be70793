"""``attnas demo`` (what ``make demo`` runs): synthetic data -> search -> derive.

1. generates the embedded synthetic benchmark into ``data/synth`` if it is missing;
2. runs the default search (``configs/search/synthetic.yaml``, shipped in the package as
   ``supernet/configs/``: proxy backbone, supernet cells at its default positions) to
   completion with a progress bar;
3. the search's selection rule (``perturb`` by default) picks the cell at the end of
   ``fit`` and prints every decision with its margin; the demo then says where the
   genotype, its picture and the selection picture are (the cell is not derived a second
   time: ``attnas derive CKPT --select RULE`` re-runs a selection when you want another).

Extra arguments go to the search CLI, e.g. ``attnas demo --trainer.max_epochs 2``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from supernet.configs import display
from supernet.configs import path as config_path

from .search_cli import main as search_main

CONFIG = config_path("search/synthetic.yaml")
RETRAIN_CONFIG = config_path("retrain/synthetic.yaml")


def _latest_version(root: Path) -> Path | None:
    runs = [p for p in root.glob("version_*") if p.is_dir()]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def main(argv: list[str]) -> int:
    """Entry point of ``attnas demo``."""
    if argv and argv[0] in ("-h", "--help"):
        print("usage: attnas demo [search options, e.g. --trainer.max_epochs 2]\n")
        print(__doc__)
        return 0
    if not CONFIG.is_file():
        print(f"attnas demo: error: default config {CONFIG} is missing", file=sys.stderr)
        return 2
    if "OMP_NUM_THREADS" not in os.environ:
        # leave cores to the two decoding workers: on a 2-core machine, 2 compute threads
        # plus 2 workers oversubscribe the CPU and torch's spinning threads slow down 5-10x
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    t0 = time.time()
    print(f"[attnas demo] search with {display(CONFIG)} (data generated on first use)")
    code = search_main(["fit", "-c", str(CONFIG), "--trainer.logger.init_args.name", "demo",
                        *argv])
    if code != 0:
        return code
    run = _latest_version(Path("runs") / "demo")
    cell = run / "genotype.json" if run else None
    if cell is None or not cell.is_file():
        print("attnas demo: error: the search wrote no genotype", file=sys.stderr)
        return 1
    pictures = [str(run / n) for n in ("genotype.png", "selection.png", "alpha.png")
                if (run / n).is_file()]
    print(f"[attnas demo] done in {time.time() - t0:.0f} s; cell: {cell}; pictures: "
          f"{', '.join(pictures)}")
    print(f"[attnas demo] retrain it: attnas retrain fit -c {display(RETRAIN_CONFIG)} "
          f"--model.block {cell}")
    return 0
