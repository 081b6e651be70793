"""The command line of ``attnas bench`` (``python -m benchmarks.run``): its parser (the
``--help`` text is the docstring of :mod:`benchmarks.run`), its defaults and the toy scale of
``--quick``, the checks of its values and of the YAML configs it reads, and
:class:`BenchError`. :func:`benchmarks.plan.build_plan` resolves the parsed arguments into
what one invocation runs.
"""

from __future__ import annotations

import argparse
import ast
import typing
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO
from benchmarks.groups import DEFAULT_GROUPS
from supernet.search import SearchModule

__all__ = ["BenchError", "parser", "check_count", "csv_list", "anti_collapse_values",
           "load_config"]


SEARCH_CONFIG = REPO / "configs" / "search" / "synthetic.yaml"
RETRAIN_CONFIG = REPO / "configs" / "retrain" / "synthetic.yaml"
DEFAULT_OUT = REPO / "benchmarks" / "results"
QUICK_OUT = DEFAULT_OUT / "quick"
#: the baselines; ``nonlocal_sincos`` (a one-node cell that is a non-local block with
#: sinusoidal positions) is the control for what the positions alone buy
DEFAULT_BLOCKS = ("none", "nonlocal", "a2", "cinst", "stinc",
                  "benchmarks/baselines/nonlocal_sincos.json")
#: the benchmark's budget when --search-epochs / --retrain-epochs are not given: what fits
#: the full run (2 searches, 30 trainings) in about two hours on 2 CPU cores
BENCH_SEARCH_EPOCHS = 3
BENCH_RETRAIN_EPOCHS = 3
#: most runs at a time by default (each gets the cores divided among them)
MAX_DEFAULT_JOBS = 4
#: the regulariser weight used for an ``--anti-collapse`` value when the config's weight is 0
DEFAULT_ANTI_COLLAPSE_WEIGHT = 1.0
#: toy scale of ``--quick``
QUICK_DATA = {"classes": 2, "videos_per_class": 12, "frames": 8, "size": 16, "seed": 3}
QUICK_PROXY = {"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}
QUICK_TRAINER = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                 "log_every_n_steps": 1}


class BenchError(ValueError):
    """Bad benchmark input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line on stderr, exit code 2
        raise BenchError(message)


def _help_text() -> str:
    """The ``--help`` text: the docstring of the entry point ``benchmarks/run.py`` (read
    from its source, so that this module does not import it)."""
    source = Path(__file__).with_name("run.py").read_text()
    return ast.get_docstring(ast.parse(source), clean=False) or ""


def parser() -> argparse.ArgumentParser:
    """The parser of ``attnas bench``; a usage error raises :class:`BenchError`."""
    doc = _help_text()
    p = _Parser(prog="attnas bench", description=doc.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="\n\n".join(doc.split("\n\n")[1:]))
    p.add_argument("--quick", action="store_true",
                   help="the whole chain at toy scale (tiny data and proxy, 1 epoch, 1 search "
                        "seed run twice, 1 random cell, 1 training seed) into "
                        f"{QUICK_OUT.relative_to(REPO)}/")
    p.add_argument("--out", default=None,
                   help=f"results folder (default {DEFAULT_OUT.relative_to(REPO)}, or "
                        f"{QUICK_OUT.relative_to(REPO)} with --quick)")
    p.add_argument("--work", default=None,
                   help="folder for run logs, Lightning logs, the clip cache and --quick's "
                        "data (default <out>/_work)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="run the benchmark on your dataset: a folder per class, or a folder "
                        "with train.txt / val.txt / test.txt, for both configs (default: "
                        "the configs' data, the embedded synthetic benchmark)")
    p.add_argument("--search-config", default=str(SEARCH_CONFIG), help="search YAML")
    p.add_argument("--retrain-config", default=str(RETRAIN_CONFIG), help="retrain YAML")
    p.add_argument("--search-seeds", type=int, default=None,
                   help="search seeds 0..S-1 (default 3; --quick 1)")
    p.add_argument("--train-seeds", type=int, default=None,
                   help="training seeds 0..N-1 per row (default 3; --quick 1)")
    p.add_argument("--random-cells", type=int, default=None,
                   help="random cells of the search space (default 3; --quick 1)")
    p.add_argument("--repeat-search", type=int, default=None,
                   help="extra searches with the first seed, to check that the same seed "
                        "gives the same genotype (default 0; --quick 1)")
    p.add_argument("--blocks", default=",".join(DEFAULT_BLOCKS),
                   help="baseline blocks, comma-separated: supernet.factory block names or "
                        "genotype .json files (default %(default)s; '' for none, e.g. for a "
                        "study whose baselines are in another results folder)")
    p.add_argument("--anti-collapse", "--remedy", dest="anti_collapse", default=None,
                   help="anti-collapse study: comma-separated regularisers (none, beta_decay, "
                        "entropy); each value other than the config's adds a search group "
                        "(--remedy: its deprecated name)")
    p.add_argument("--anti-collapse-weight", "--remedy-weight", dest="anti_collapse_weight",
                   type=float, default=None,
                   help="regulariser weight for --anti-collapse groups when the config's is 0 "
                        f"(default {DEFAULT_ANTI_COLLAPSE_WEIGHT:g}; --remedy-weight: its "
                        "deprecated name)")
    p.add_argument("--positions", default=None,
                   help="position study: comma-separated cell position options (none, "
                        "coords, sincos); each value other than the config's adds a search "
                        "group")
    p.add_argument("--groups", default=None,
                   help="search groups, comma-separated specs 'supernet+rule[+position]"
                        "[+<N>ep]', e.g. 'uniform+perturb,darts+argmax'; the first is the "
                        "default group whose targets are checked; settings a spec leaves out "
                        "come from the search config (default: " + ",".join(DEFAULT_GROUPS)
                   + "; --quick and '': the config's group alone); see benchmarks/groups.py")
    p.add_argument("--budget-epochs", default=None,
                   help="retrain-budget study: comma-separated epoch counts at which "
                        "`nonlocal` is also trained with every training seed (its std must "
                        "resolve a 2-point difference; default 6; --quick and '': none)")
    p.add_argument("--search-epochs", type=int, default=None,
                   help="search epochs (default "
                        f"{BENCH_SEARCH_EPOCHS}; the config's max_epochs is the demo's)")
    p.add_argument("--retrain-epochs", type=int, default=None,
                   help=f"training epochs, the same for every row (default "
                        f"{BENCH_RETRAIN_EPOCHS})")
    p.add_argument("--limit-batches", type=int, default=None,
                   help="smoke test of the full configuration: at most this many train / "
                        "val / test batches per epoch (not a result; use its own --out)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at a time, each its own process (default: the CPU cores, at "
                        f"most {MAX_DEFAULT_JOBS}; --quick 1); two 1-thread runs on 2 cores "
                        "do more work than one 2-thread run")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: the CPU cores available divided by "
                        "--jobs; --quick 1)")
    p.add_argument("--executor", default=None, choices=("ray", "local"),
                   help="deprecated, ignored: every run is a Ray task in its own worker "
                        "process (a local Ray unless --address)")
    p.add_argument("--address", default=None,
                   help="a Ray cluster to run on: auto, or ray://HOST:10001 (the repository "
                        "and --out must be on a filesystem every node sees)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds after which one run is killed and recorded as failed")
    p.add_argument("--plan", action="store_true",
                   help="print what would run (and what is done) and exit")
    p.add_argument("--report", action="store_true",
                   help="write accuracy.md / accuracy.png from the runs finished so far and "
                        "exit (runs nothing; safe while a bench is writing to the folder)")
    return p


def csv_list(text: str, what: str) -> list[str]:
    """The non-empty items of a comma-separated option; :class:`BenchError` for none."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise BenchError(f"{what} is empty")
    return values


def check_count(value: int, flag: str, minimum: int) -> int:
    """``value``, or :class:`BenchError` when it is below ``minimum``."""
    if value < minimum:
        raise BenchError(f"{flag} must be >= {minimum}, got {value}")
    return value


def anti_collapse_values() -> tuple[str, ...]:
    """The anti-collapse regularisers :class:`supernet.search.SearchModule` accepts (read from
    its signature)."""
    try:
        hint = typing.get_type_hints(SearchModule.__init__)["anti_collapse"]
        values = tuple(str(v) for v in typing.get_args(hint))
    except Exception:  # noqa: BLE001 - an unexpected annotation: fall back to the docs
        values = ()
    return values or ("none", "beta_decay", "entropy")


def load_config(path: str) -> dict[str, Any]:
    """A search or retrain YAML config with a ``data:`` mapping and a ``model:`` mapping
    (empty when the config sets none); :class:`BenchError` (one line) otherwise."""
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"config {path} does not exist")
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise BenchError(f"config {path} is not valid YAML ({' '.join(str(err).split())})"
                         ) from None
    if isinstance(doc, dict) and doc.get("model") is None:
        doc["model"] = {}  # the module's defaults (the shipped search configs set none)
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict) \
            or not isinstance(doc.get("data"), dict):
        raise BenchError(f"config {path} needs a 'data:' section (and 'model:' a mapping)")
    return doc
