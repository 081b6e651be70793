"""The accuracy / search-cost benchmark: does the searched cell beat non-local blocks?

    python -m benchmarks.run                 # the full benchmark (about 2 h on 2 CPU cores)
    python -m benchmarks.run --quick         # the whole chain at toy scale (< 2 min)
    python -m benchmarks.run --plan          # what would run, and what is already done
    attnas bench ...                         # the same

Steps, all on the embedded synthetic benchmark with the proxy backbone and the documented
defaults (``configs/search/synthetic.yaml``, ``configs/retrain/synthetic.yaml``):

1. **search** with ``--search-seeds`` seeds, derive each cell (genotype JSON + PNG under
   ``<out>/genotypes``); optional study axes ``--remedy`` and ``--positions`` add searches
   (one group per value that differs from the config, each with every search seed);
   ``--repeat-search`` re-runs the first seed to check that the same seed gives the same
   genotype;
2. **retrain** from scratch, with the same budget (the retrain config) for every row:
   the ``--blocks`` baselines, every searched cell and ``--random-cells`` random cells of
   the same space (``derive.random_genotype`` with seeds 0, 1, ...; same cell settings),
   each with ``--train-seeds`` seeds; test = the final weights, multi-view, video-level
   top-1 on the held-out test split;
3. **tables** (``accuracy.md``): params and MACs at the benchmark clip, top-1 mean ± std
   over seeds, Δ vs ``none`` and vs ``nonlocal``, the random-cell mean, the searched-cell
   mean; a scatter plot of top-1 vs MACs (``accuracy.png``);
4. **search cost**: wall time and peak RSS of every search, and the supernet-step /
   derived-network-step time ratio on the proxy;
5. **reproducibility**: how often each node's op is chosen across search seeds, and
   whether repeated same-seed searches gave the same genotype.

Every search / training run is its own subprocess (``benchmarks._jobs``): a crash or an
out-of-memory kill fails that row only (recorded with its one-line error), the memory of
each run is its own (peak RSS per search), and nothing leaks from one row into the next.
Results are appended to ``<out>/accuracy.csv`` and ``<out>/search.csv`` as each run ends;
re-running the command skips every finished (``ok``) run and retries failed ones.
Decoded clips are shared by all runs through a disk cache in the work folder (decoding is
deterministic, so this changes speed, not results).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import cpu_name
from benchmarks.groups import (
    DEFAULT_GROUPS,
    budget_lines,
    group_name,
    group_table_lines,
    parse_group,
    target_lines,
)

__all__ = ["main", "BenchError", "Ledger", "build_plan"]

REPO = Path(__file__).resolve().parents[1]
SEARCH_CONFIG = REPO / "configs" / "search" / "synthetic.yaml"
RETRAIN_CONFIG = REPO / "configs" / "retrain" / "synthetic.yaml"
DEFAULT_OUT = REPO / "benchmarks" / "results"
QUICK_OUT = DEFAULT_OUT / "quick"
DEFAULT_BLOCKS = ("none", "nonlocal", "a2", "cinst", "stinc")
#: the benchmark's budget when --search-epochs / --retrain-epochs are not given: what fits
#: the full run (2 searches, 30 trainings) in about two hours on 2 CPU cores
BENCH_SEARCH_EPOCHS = 3
BENCH_RETRAIN_EPOCHS = 3
#: most runs at a time by default (each gets the cores divided among them)
MAX_DEFAULT_JOBS = 4
#: the remedy weight used for a ``--remedy`` value when the config's weight is 0
DEFAULT_REMEDY_WEIGHT = 1.0
#: toy scale of ``--quick``
QUICK_DATA = {"classes": 2, "videos_per_class": 12, "frames": 8, "size": 16, "seed": 3}
QUICK_PROXY = {"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}
QUICK_TRAINER = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                 "log_every_n_steps": 1}
#: data settings that change speed only (left out of the settings fingerprint)
_SPEED_ONLY = {"num_workers", "cache", "cache_dir", "cache_memory_mb", "persistent_workers",
               "pin_memory", "decode_threads", "root"}

ACC_FIELDS = ["row", "label", "kind", "block", "seed", "status", "video_top1", "clip_top1",
              "val_top1", "params", "macs", "epochs", "wall_s", "peak_rss_mib", "settings",
              "finished", "error", "log"]
SEARCH_FIELDS = ["search", "label", "group", "seed", "repeat", "status", "supernet", "select",
                 "remedy", "remedy_weight", "position", "nodes", "genotype", "val_acc",
                 "wall_s", "select_s", "total_s", "peak_rss_mib", "worker_peak_rss_mib",
                 "flagged", "decisions", "settings", "finished", "error", "log",
                 "alpha_softmax"]
STEP_FIELDS = ["key", "status", "genotype", "shape", "steps", "threads",
               "supernet_iteration_s", "supernet_weight_step_s", "supernet_single_path_s",
               "derived_step_s",
               "none_step_s", "wall_s", "settings", "finished", "error", "log"]


class BenchError(ValueError):
    """Bad benchmark input: reported as one line, exit code 2."""


# ------------------------------------------------------------------------------ the CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line on stderr, exit code 2
        raise BenchError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="attnas bench", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
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
    p.add_argument("--search-config", default=str(SEARCH_CONFIG), help="search YAML")
    p.add_argument("--retrain-config", default=str(RETRAIN_CONFIG), help="retrain YAML")
    p.add_argument("--search-seeds", type=int, default=None,
                   help="search seeds 0..S-1 (default 2; --quick 1)")
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
    p.add_argument("--remedy", default=None,
                   help="anti-collapse study: comma-separated remedies (none, beta_decay, "
                        "entropy); each value other than the config's adds a search group")
    p.add_argument("--remedy-weight", type=float, default=None,
                   help="remedy weight for --remedy groups when the config's is 0 "
                        f"(default {DEFAULT_REMEDY_WEIGHT:g})")
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
                   help="runs at a time, each its own subprocess (default: the CPU cores, at "
                        f"most {MAX_DEFAULT_JOBS}; --quick 1); two 1-thread runs on 2 cores "
                        "do more work than one 2-thread run")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: the CPU cores available divided by "
                        "--jobs; --quick 1)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds after which one run is killed and recorded as failed")
    p.add_argument("--plan", action="store_true",
                   help="print what would run (and what is done) and exit")
    return p


def _csv_list(text: str, what: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise BenchError(f"{what} is empty")
    return values


def _check_count(value: int, flag: str, minimum: int) -> int:
    if value < minimum:
        raise BenchError(f"{flag} must be >= {minimum}, got {value}")
    return value


def _remedies() -> tuple[str, ...]:
    """The remedies :class:`supernet.search.SearchModule` accepts (read from its signature)."""
    import typing

    from supernet.search import SearchModule

    try:
        hint = typing.get_type_hints(SearchModule.__init__)["remedy"]
        values = tuple(str(v) for v in typing.get_args(hint))
    except Exception:  # noqa: BLE001 - an unexpected annotation: fall back to the docs
        values = ()
    return values or ("none", "beta_decay", "entropy")


def _search_default(name: str) -> Any:
    """The default of a :class:`supernet.search.SearchModule` argument."""
    import inspect

    from supernet.search import SearchModule

    return inspect.signature(SearchModule.__init__).parameters[name].default


def _load_yaml(path: str) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise BenchError(f"config {path} does not exist")
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise BenchError(f"config {path} is not valid YAML ({' '.join(str(err).split())})"
                         ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict) \
            or not isinstance(doc.get("data"), dict):
        raise BenchError(f"config {path} needs 'model:' and 'data:' sections")
    return doc


def _fingerprint(doc: Any) -> str:
    return hashlib.sha1(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------ the plan
@dataclass
class SearchJob:
    """One search: ``group`` is ``default`` or ``remedy=...`` / ``position=...``."""

    key: str
    label: str
    group: str
    seed: int
    repeat: int
    model: dict[str, Any]
    genotype: Path
    settings: str = ""
    trainer: dict[str, Any] | None = None  # a group with its own search length


@dataclass
class Row:
    """One row of the accuracy table (trained with every training seed)."""

    key: str
    label: str
    kind: str  # baseline | searched | random
    block: str  # a block name or a genotype .json path
    search: SearchJob | None = None
    group: str = ""
    epochs: int | None = None  # a budget-study row's own retrain epochs
    settings: str = ""


@dataclass
class Plan:
    """Everything one invocation runs, with the resolved settings."""

    args: argparse.Namespace
    quick: bool
    out: Path
    work: Path
    threads: int
    search_model: dict[str, Any]
    search_data: dict[str, Any]
    search_trainer: dict[str, Any]
    retrain_model: dict[str, Any]
    retrain_data: dict[str, Any]
    retrain_trainer: dict[str, Any]
    synth: dict[str, int]
    clip: tuple[int, int]
    notes: list[str]
    searches: list[SearchJob]
    rows: list[Row]
    train_seeds: list[int]
    settings: str
    command: str
    groups: list[str] = field(default_factory=list)
    default_group: str = "default"
    steptime_settings: str = ""

    def trainer_for(self, row: Row) -> dict[str, Any]:
        """The retrain trainer settings of ``row`` (a budget row has its own epochs)."""
        if row.epochs is None:
            return self.retrain_trainer
        return {**self.retrain_trainer, "max_epochs": row.epochs}


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return keep.strip("_")


def _block_names() -> tuple[str, ...]:
    from supernet.factory import BLOCK_NAMES

    return tuple(b for b in BLOCK_NAMES if b not in ("search", "cell"))


def build_plan(argv: list[str]) -> Plan:
    """Parse and validate ``argv``; raises :class:`BenchError` on bad input."""
    args = _parser().parse_args(argv)
    quick = args.quick
    search_seeds = _check_count(args.search_seeds if args.search_seeds is not None
                                else 1 if quick else 3, "--search-seeds", 1)
    train_seeds = _check_count(args.train_seeds if args.train_seeds is not None
                               else 1 if quick else 3, "--train-seeds", 1)
    random_cells = _check_count(args.random_cells if args.random_cells is not None
                                else 1 if quick else 3, "--random-cells", 0)
    repeats = _check_count(args.repeat_search if args.repeat_search is not None
                           else 1 if quick else 0, "--repeat-search", 0)
    for flag, value in (("--search-epochs", args.search_epochs),
                        ("--retrain-epochs", args.retrain_epochs)):
        if value is not None:
            _check_count(value, flag, 1)
    cores = len(os.sched_getaffinity(0))
    if args.jobs is None:
        args.jobs = 1 if quick else max(1, min(MAX_DEFAULT_JOBS, cores))
    _check_count(args.jobs, "--jobs", 1)
    if not quick:
        if args.search_epochs is None:
            args.search_epochs = BENCH_SEARCH_EPOCHS
        if args.retrain_epochs is None:
            args.retrain_epochs = BENCH_RETRAIN_EPOCHS
    if args.threads is not None:
        _check_count(args.threads, "--threads", 1)
    if args.limit_batches is not None:
        _check_count(args.limit_batches, "--limit-batches", 1)
    if args.timeout is not None and args.timeout <= 0:
        raise BenchError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    if args.remedy_weight is not None and (args.remedy_weight < 0
                                           or not math.isfinite(args.remedy_weight)):
        raise BenchError(f"--remedy-weight must be a finite number >= 0, got "
                         f"{args.remedy_weight:g}")

    accepted = _block_names()
    # "" = no baseline rows: a study or investigation whose baselines live in another folder
    blocks = _csv_list(args.blocks, "--blocks") if args.blocks.strip() else []
    for b in blocks:
        if b.endswith(".json"):
            from derive.genotype import load_genotype

            try:
                load_genotype(b)
            except (ValueError, OSError) as err:
                raise BenchError(f"--blocks: {' '.join(str(err).split())}") from None
        elif b not in accepted:
            raise BenchError(f"unknown block {b!r}; accepted: {', '.join(accepted)}, or a "
                             f"genotype .json file")
    if len(set(blocks)) != len(blocks):
        raise BenchError(f"--blocks lists a block twice: {args.blocks}")

    from supernet.space import POSITIONS

    remedies = _remedies()
    scfg, rcfg = _load_yaml(args.search_config), _load_yaml(args.retrain_config)
    smodel, rmodel = dict(scfg["model"]), dict(rcfg["model"])
    base_remedy = smodel.get("remedy", _search_default("remedy"))
    base_position = smodel.get("position", _search_default("position"))
    study_remedy = _csv_list(args.remedy, "--remedy") if args.remedy else [base_remedy]
    study_position = (_csv_list(args.positions, "--positions") if args.positions
                      else [base_position])
    for value in study_remedy:
        if value not in remedies:
            raise BenchError(f"unknown remedy {value!r}; accepted: {', '.join(remedies)}")
    for value in study_position:
        if value not in POSITIONS:
            raise BenchError(f"unknown position {value!r}; accepted: {', '.join(POSITIONS)}")

    out = Path(args.out) if args.out else QUICK_OUT if quick else DEFAULT_OUT
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} exists and is not a folder")
    work = (Path(args.work) if args.work else out / "_work").resolve()
    threads = args.threads or (1 if quick else max(1, cores // args.jobs))

    # -- data: the synthetic benchmark, read whole (the class needs every frame) ---------
    from datamodules.synth import DEFAULTS

    notes: list[str] = []
    sdata, rdata = dict(scfg["data"]), dict(rcfg["data"])
    if quick:
        synth = dict(QUICK_DATA)
        root = work / "data"
    else:
        if not sdata.get("synthetic") or not rdata.get("synthetic"):
            raise BenchError("the benchmark runs on the embedded synthetic benchmark: both "
                             "configs need data.synthetic: true")
        synth = {**DEFAULTS, **(sdata.get("synthetic_params") or {})}
        root = Path(sdata.get("root", "data/synth")).resolve()
        if Path(rdata.get("root", "data/synth")).resolve() != root:
            raise BenchError("the search and retrain configs read different data roots")
    clip = (int(synth["frames"]), int(synth["size"]))
    for name, data in (("search", sdata), ("retrain", rdata)):
        given = (data.get("num_frames"), data.get("crop_size"), data.get("sampling_rate", 1))
        if given != (clip[0], clip[1], 1) and not quick:
            notes.append(f"the {name} config reads {given[0]} frames x {given[1]} px "
                         f"(sampling rate {given[2]}) but the synthetic videos are "
                         f"{clip[0]} x {clip[1]} px: the benchmark reads whole videos "
                         f"({clip[0]} frames, {clip[1]} px, rate 1)")
        data.update(root=str(root), synthetic=True, synthetic_params=synth,
                    num_frames=clip[0], crop_size=clip[1], sampling_rate=1,
                    cache="disk", cache_dir=str(work / "clip_cache"))
        data.pop("search", None)
        if quick:
            data.update(batch_size=4, num_workers=0)

    def trainer_of(cfg: dict[str, Any], epochs: int | None) -> dict[str, Any]:
        t = {k: v for k, v in (cfg.get("trainer") or {}).items()
             if k not in ("logger", "callbacks", "default_root_dir", "enable_progress_bar",
                          "enable_checkpointing")}
        if quick:
            t.update(QUICK_TRAINER)
        if args.limit_batches is not None:
            t.update({f"limit_{k}_batches": args.limit_batches for k in ("train", "val", "test")})
        if epochs is not None:
            t["max_epochs"] = epochs
        return t

    strainer = trainer_of(scfg, args.search_epochs)
    rtrainer = trainer_of(rcfg, args.retrain_epochs)
    if quick:
        for m in (smodel, rmodel):
            m["backbone_kwargs"] = {**(m.get("backbone_kwargs") or {}), **QUICK_PROXY}
    for key in ("block", "num_classes"):
        rmodel.pop(key, None)
    smodel.pop("num_classes", None)

    # -- searches: one group per way of searching ------------------------------------------
    remedy_weight = (args.remedy_weight if args.remedy_weight is not None
                     else float(smodel.get("remedy_weight", 0.0)) or DEFAULT_REMEDY_WEIGHT)
    for key in ("supernet", "select", "position", "remedy"):
        smodel.setdefault(key, _search_default(key))
    # the first group is the default one (its targets are checked); '' = the config's group
    specs = args.groups if args.groups is not None else "" if quick else ",".join(DEFAULT_GROUPS)
    overrides: list[dict[str, Any]] = []
    for spec in (_csv_list(specs, "--groups") if specs.strip() else []):
        try:
            overrides.append(parse_group(spec))
        except ValueError as err:
            raise BenchError(f"--groups: {err}") from None
    overrides = overrides or [{}]
    for value in study_remedy:
        if value != base_remedy:
            weight = remedy_weight if value != "none" else 0.0
            overrides.append({"remedy": value, "remedy_weight": weight})
    for value in study_position:
        if value != base_position:
            overrides.append({"position": value})
    groups: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for over in overrides:
        over = dict(over)
        epochs = over.pop("search_epochs", None)
        model = {**smodel, **over}
        trainer = dict(strainer)
        name = group_name(model)
        if epochs is not None and epochs != strainer.get("max_epochs"):
            trainer["max_epochs"] = epochs
            name += f"+{epochs}ep"
        if name not in [g[0] for g in groups]:
            groups.append((name, model, trainer))

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in _SPEED_ONLY}

    # Each run's fingerprint covers what that run depends on: a search its model, data and
    # trainer; a retrain row the retrain settings (and its search's fingerprint).
    retrain_fp = _fingerprint({"retrain": [rmodel, strip(rdata), rtrainer], "quick": quick})
    gdir = out / "genotypes"
    searches: list[SearchJob] = []
    rows: list[Row] = [Row(b, b if not b.endswith(".json") else Path(b).stem, "baseline",
                           str(Path(b).resolve()) if b.endswith(".json") else b,
                           settings=retrain_fp)
                       for b in blocks]
    for group, model, trainer in groups:
        search_fp = _fingerprint({"search": [model, strip(sdata), trainer], "quick": quick})
        for seed in range(search_seeds):
            key = f"searched[{group}]/s{seed}"
            label = f"{group} (seed {seed})"
            job = SearchJob(key, label, group, seed, 0, model,
                            gdir / f"{_slug(key.replace('/', '_'))}.json", search_fp,
                            trainer if trainer != strainer else None)
            searches.append(job)
            rows.append(Row(key, label, "searched", str(job.genotype), job, group,
                            settings=_fingerprint([retrain_fp, search_fp])))
    first = searches[0]
    for r in range(1, repeats + 1):
        searches.append(SearchJob(f"{first.key}#repeat{r}", f"{first.label}, repeat {r}",
                                  first.group, first.seed, r, dict(first.model),
                                  gdir / f"{_slug(first.key.replace('/', '_'))}_repeat{r}.json",
                                  first.settings, first.trainer))
    for i in range(random_cells):
        rows.append(Row(f"random/{i}", f"random cell {i}", "random",
                        str(gdir / f"random_{i}.json"), settings=retrain_fp))
    budgets = args.budget_epochs if args.budget_epochs is not None else "" if quick else "6"
    for text in (_csv_list(budgets, "--budget-epochs") if budgets.strip() else []):
        if "nonlocal" not in blocks:  # the study trains `nonlocal` at other budgets
            break
        try:
            ep = int(text)
        except ValueError:
            raise BenchError(f"--budget-epochs: {text!r} is not an epoch count") from None
        _check_count(ep, "--budget-epochs", 1)
        if ep == rtrainer.get("max_epochs") or f"nonlocal@{ep}ep" in [x.key for x in rows]:
            continue
        rows.append(Row(f"nonlocal@{ep}ep", f"nonlocal, {ep} epochs", "budget", "nonlocal",
                        epochs=ep, settings=_fingerprint(
                            {"retrain": [rmodel, strip(rdata), {**rtrainer, "max_epochs": ep}],
                             "quick": quick})))

    settings = _fingerprint(sorted({x.settings for x in [*searches, *rows]}))
    command = " ".join(["python -m benchmarks.run", *map(shlex.quote, argv)])
    plan = Plan(args, quick, out, work, threads, smodel, sdata, strainer, rmodel, rdata,
                rtrainer, synth, clip, notes, searches, rows, list(range(train_seeds)),
                settings, command, [g[0] for g in groups], groups[0][0])
    plan.steptime_settings = _fingerprint([first.settings, retrain_fp])
    return plan


# ------------------------------------------------------------------------------ results
class Ledger:
    """A CSV file of finished runs, keyed by some columns, rewritten atomically per row.

    Args:
        path: the CSV file (read if it exists).
        fields: its columns.
        key: the columns that identify a run.
    """

    def __init__(self, path: Path, fields: list[str], key: tuple[str, ...]) -> None:
        self.path, self.fields, self.key = path, fields, key
        self.rows: dict[tuple[str, ...], dict[str, str]] = {}
        self._lock = threading.Lock()  # --jobs: runs finish on several threads
        if path.is_file():
            with path.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    self.rows[self._key(row)] = row

    def _key(self, row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(row.get(k, "")) for k in self.key)

    def get(self, *key: Any) -> dict[str, str] | None:
        """The recorded row for ``key`` (values as strings), or None."""
        return self.rows.get(tuple(str(k) for k in key))

    def done(self, *key: Any) -> bool:
        """Whether ``key`` finished with status ``ok``."""
        row = self.get(*key)
        return row is not None and row.get("status") == "ok"

    def put(self, row: dict[str, Any]) -> None:
        """Record (or replace) a row and rewrite the file atomically."""
        clean = {f: "" if row.get(f) is None else str(row.get(f)) for f in self.fields}
        with self._lock:
            self.rows[self._key(clean)] = clean
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(list(self.rows.values()))
            tmp.replace(self.path)

    def settings(self) -> set[str]:
        """The settings fingerprints of the rows recorded."""
        return {r.get("settings", "") for r in self.rows.values()}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _fmt_s(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


# ------------------------------------------------------------------------------ running
def escape(text: str) -> str:
    """``text`` with rich markup escaped (labels, paths and errors hold brackets)."""
    from rich.markup import escape as _escape

    return _escape(str(text))


class Runner:
    """Launches jobs (``--jobs`` at a time), records them, prints progress and the estimate."""

    def __init__(self, plan: Plan, console: Any) -> None:
        self.plan, self.console = plan, console
        self.acc = Ledger(plan.out / "accuracy.csv", ACC_FIELDS, ("row", "seed"))
        self.srch = Ledger(plan.out / "search.csv", SEARCH_FIELDS, ("search",))
        self.step = Ledger(plan.out / "steptime.csv", STEP_FIELDS, ("key",))
        self.total = len(plan.searches) + 1 + len(plan.rows) * len(plan.train_seeds)
        self.index = 0
        self.ran = 0
        self.skipped = 0
        self.failed = 0
        self.finished = 0
        self.cost_cache: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()

    def _bump(self, counter: str) -> int:
        """Add one to a progress counter (thread-safe); returns its new value."""
        with self._lock:
            value = getattr(self, counter) + 1
            setattr(self, counter, value)
            return value

    # -- estimate --------------------------------------------------------------------
    def _walls(self) -> dict[str, list[float]]:
        walls: dict[str, list[float]] = {"search": [], "retrain": [], "steptime": []}
        for r in list(self.srch.rows.values()):
            if r.get("status") == "ok" and _float(r.get("total_s")):
                walls["search"].append(float(r["total_s"]))
        for r in list(self.acc.rows.values()):
            if r.get("status") == "ok" and _float(r.get("wall_s")):
                walls["retrain"].append(float(r["wall_s"]))
        for r in list(self.step.rows.values()):
            if r.get("status") == "ok" and _float(r.get("wall_s", None)):
                walls["steptime"].append(float(r["wall_s"]))
        return walls

    def estimate(self) -> tuple[float | None, float | None]:
        """(whole run, still left) in seconds from the runs timed so far."""
        walls = self._walls()
        mean = {k: statistics.fmean(v) if v else None for k, v in walls.items()}
        sep = self.plan.search_trainer.get("max_epochs") or 1
        rep = self.plan.retrain_trainer.get("max_epochs") or 1
        if mean["search"] is None and mean["retrain"] is not None:
            mean["search"] = mean["retrain"] * sep / rep
        if mean["retrain"] is None and mean["search"] is not None:
            # per epoch, a retrain does N/b training steps where a search does N/(2b)
            # iterations; the step-time job measured both at one batch size
            step = self.step.get("steptime") or {}
            ratio = 1.0
            if step.get("status") == "ok":
                ratio = 2 * float(step["derived_step_s"]) / float(step["supernet_iteration_s"])
            mean["retrain"] = mean["search"] * ratio * rep / sep
        if mean["steptime"] is None:
            mean["steptime"] = 30.0 if not self.plan.quick else 5.0
        if mean["search"] is None:
            return None, None
        total = left = 0.0
        for job in self.plan.searches:
            row = self.srch.get(job.key)
            if row and row.get("status") == "ok" and _float(row.get("total_s")):
                total += float(row["total_s"])
            else:
                total += mean["search"]
                left += mean["search"]
        total += mean["steptime"]
        if not self.step.done("steptime"):
            left += mean["steptime"]
        for row in self.plan.rows:
            for seed in self.plan.train_seeds:
                rec = self.acc.get(row.key, seed)
                if rec and rec.get("status") == "ok" and _float(rec.get("wall_s")):
                    total += float(rec["wall_s"])
                else:
                    total += mean["retrain"]
                    left += mean["retrain"]
        jobs = max(1, self.plan.args.jobs)  # runs overlap; walls were measured that way
        return total / jobs, left / jobs

    def _progress(self, what: str, status: str, detail: str) -> None:
        total, left = self.estimate()
        eta = (f" | full run ≈ {_fmt_s(total)}, left ≈ {_fmt_s(left)}"
               if total is not None else "")
        colour = {"ok": "green", "failed": "red", "skip": "dim"}.get(status, "white")
        done = self._bump("finished")
        self.console.print(f"\\[{done:>3}/{self.total} done] {escape(what)}: "
                           f"[{colour}]{status}"
                           f"[/{colour}] {escape(detail)}{eta}", highlight=False)

    def _start(self, what: str) -> None:
        index = self._bump("index")
        self.console.print(f"\\[{index:>3}/{self.total}] {escape(what)} … "
                           f"[dim]started {time.strftime('%H:%M:%S')}[/dim]", highlight=False)

    # -- one subprocess ------------------------------------------------------------------
    def launch(self, slug: str, spec: dict[str, Any]) -> tuple[dict[str, Any], float, Path]:
        """Run one job in a subprocess; returns (result, wall seconds, log path)."""
        work = self.plan.work
        run_dir = work / "runs" / slug
        log = work / "logs" / f"{slug}.log"
        if run_dir.is_dir():  # a previous attempt's Lightning logs
            shutil.rmtree(run_dir)
        for d in (run_dir, log.parent, work / "specs"):
            d.mkdir(parents=True, exist_ok=True)
        spec = {**spec, "run_dir": str(run_dir), "threads": self.plan.threads}
        spec_path = work / "specs" / f"{slug}.json"
        spec_path.write_text(json.dumps(spec, indent=1, default=str) + "\n")
        result_path = run_dir / "result.json"
        result_path.unlink(missing_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.plan.threads),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                           os.environ.get("PYTHONPATH")]))}
        t0 = time.perf_counter()
        error = None
        with log.open("w") as fh:
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "benchmarks._jobs", str(spec_path), str(result_path)],
                    cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env,
                    timeout=self.plan.args.timeout, check=False)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code, error = None, f"timed out after {_fmt_s(self.plan.args.timeout)}"
        wall = time.perf_counter() - t0
        result: dict[str, Any] = {}
        if result_path.is_file():
            try:
                result = json.loads(result_path.read_text())
            except ValueError:
                result = {}
        if result.get("status") not in ("ok", "failed"):
            if error is None:
                if code is not None and code < 0:
                    error = f"killed by signal {-code}" + (" (out of memory?)"
                                                            if -code == 9 else "")
                else:
                    lines = [ln for ln in log.read_text(errors="replace").splitlines()
                             if ln.strip()]
                    error = lines[-1].strip()[:300] if lines else f"exit code {code}"
            result = {"status": "failed", "error": error}
        return result, wall, log

    def _rel(self, path: Path | str) -> str:
        p = Path(path)
        try:
            return str(p.relative_to(self.plan.out))
        except ValueError:
            return str(p)

    # -- the steps -----------------------------------------------------------------------
    def run_search(self, job: SearchJob) -> None:
        """Search (or skip, if finished) one job."""
        what = f"search {job.label}"
        if self.srch.done(job.key) and job.genotype.is_file():
            self._bump("index")
            self._bump("skipped")
            return
        self._start(what)
        spec = {
            "kind": "search", "key": job.key, "seed": job.seed, "model": job.model,
            "data": self.plan.search_data, "trainer": job.trainer or self.plan.search_trainer,
            "genotype": str(job.genotype), "title": job.label,
            "provenance": {"benchmark": job.key, "group": job.group},
        }
        result, wall, log = self.launch(_slug("search_" + job.key.replace("/", "_")), spec)
        self._bump("ran")
        nodes = result.get("nodes")
        row = {
            "search": job.key, "label": job.label, "group": job.group, "seed": job.seed,
            "repeat": job.repeat, "status": result["status"],
            "supernet": job.model.get("supernet"), "select": job.model.get("select"),
            "remedy": job.model.get("remedy", "none"),
            "remedy_weight": job.model.get("remedy_weight", 0.0),
            "position": job.model.get("position"),
            "nodes": json.dumps(nodes) if nodes else "",
            "genotype": self._rel(job.genotype) if result["status"] == "ok" else "",
            "val_acc": result.get("val_acc"), "wall_s": result.get("wall_s"),
            "select_s": result.get("select_s"),
            "total_s": round(wall, 2), "peak_rss_mib": result.get("peak_rss_mib"),
            "worker_peak_rss_mib": result.get("worker_peak_rss_mib"),
            "flagged": result.get("flagged"),
            "decisions": json.dumps(result["decisions"]) if result.get("decisions") else "",
            "settings": job.settings, "finished": _now(), "error": result.get("error"),
            "log": self._rel(log),
            "alpha_softmax": json.dumps(result.get("alpha_softmax"))
            if result.get("alpha_softmax") else "",
        }
        self.srch.put(row)
        if result["status"] == "ok":
            cell = "; ".join(f"{op} ← {_source(i)}" for op, i in nodes)
            self._progress(what, "ok", f"{_fmt_s(wall)}, peak RSS "
                           f"{result.get('peak_rss_mib', 0):.0f} MiB; cell {cell}")
        else:
            self._bump("failed")
            self._progress(what, "failed", f"{result['error']} (log: {log})")

    def run_steptime(self) -> None:
        """Time supernet vs derived-network training steps (once)."""
        if self.step.done("steptime"):
            self._bump("index")
            self._bump("skipped")
            return
        ok = [j for j in self.plan.searches if j.group == self.plan.default_group
              and j.repeat == 0
              and self.srch.done(j.key) and j.genotype.is_file()]
        what = "step time: supernet vs derived network"
        self._start(what)
        if not ok:
            self.step.put({"key": "steptime", "status": "failed",
                           "settings": self.plan.steptime_settings,
                           "finished": _now(), "error": "no searched cell to time"})
            self._bump("failed")
            self._progress(what, "failed", "no searched cell to time")
            return
        batch = int(self.plan.search_data.get("batch_size", 16))
        spec = {"kind": "steptime", "key": "steptime", "genotype": str(ok[0].genotype),
                "search_model": self.plan.search_model, "retrain_model": self.plan.retrain_model,
                "num_classes": int(self.plan.synth["classes"]),
                "shape": [batch, 3, self.plan.clip[0], self.plan.clip[1], self.plan.clip[1]],
                "steps": 2 if self.plan.quick else 5}
        result, wall, log = self.launch("steptime", spec)
        self._bump("ran")
        self.step.put({**{k: result.get(k) for k in STEP_FIELDS}, "key": "steptime",
                       "genotype": self._rel(ok[0].genotype),
                       "shape": "x".join(map(str, result.get("shape", []))),
                       "settings": self.plan.steptime_settings, "finished": _now(),
                       "log": self._rel(log), "wall_s": round(wall, 2)})
        if result["status"] == "ok":
            ratio = result["supernet_iteration_s"] / result["derived_step_s"]
            self._progress(what, "ok", f"search iteration / derived step = {ratio:.1f}×")
        else:
            self._bump("failed")
            self._progress(what, "failed", f"{result['error']} (log: {log})")

    def cost(self, row: Row) -> dict[str, Any]:
        """Params and MACs of the proxy with ``row``'s block at the benchmark clip."""
        with self._lock:  # one MAC count at a time (the counter is a global mode)
            return self._cost(row)

    def _cost(self, row: Row) -> dict[str, Any]:
        if row.key in self.cost_cache:
            return self.cost_cache[row.key]
        from supernet.cost import model_cost

        m = self.plan.retrain_model
        try:
            res = model_cost(m.get("backbone", "proxy"), row.block, m.get("positions"),
                             frames=self.plan.clip[0], size=self.plan.clip[1], batch=1,
                             num_classes=int(self.plan.synth["classes"]),
                             block_kwargs=m.get("block_kwargs"), latency=False,
                             backbone_kwargs=m.get("backbone_kwargs"))
            out = {"params": res["params"], "macs": res["macs"]}
        except Exception as err:  # noqa: BLE001 - a row whose cost fails still trains
            from benchmarks._jobs import one_line

            out = {"params": None, "macs": None, "error": one_line(err)}
        self.cost_cache[row.key] = out
        return out

    def run_row(self, row: Row, seed: int) -> None:
        """Train and test one (row, seed), or skip it if finished."""
        what = f"train {row.label} seed {seed}"
        if self.acc.done(row.key, seed):
            self._bump("index")
            self._bump("skipped")
            return
        self._start(what)
        base = {"row": row.key, "label": row.label, "kind": row.kind,
                "block": self._rel(row.block), "seed": seed, "settings": row.settings}
        if row.search is not None and not (self.srch.done(row.search.key)
                                           and Path(row.block).is_file()):
            self.acc.put({**base, "status": "failed", "finished": _now(),
                          "error": f"its search {row.search.key} failed"})
            self._bump("failed")
            self._progress(what, "failed", f"its search {row.search.key} failed")
            return
        cost = self.cost(row)
        spec = {"kind": "retrain", "key": row.key, "seed": seed, "data": self.plan.retrain_data,
                "trainer": self.plan.trainer_for(row),
                "model": {**self.plan.retrain_model, "block": row.block}}
        slug = _slug(f"train_{row.key.replace('/', '_')}_seed{seed}")
        result, wall, log = self.launch(slug, spec)
        self._bump("ran")
        self.acc.put({**base, **{k: result.get(k) for k in
                                 ("status", "video_top1", "clip_top1", "val_top1", "epochs",
                                  "peak_rss_mib", "error")},
                      "params": cost.get("params"), "macs": cost.get("macs"),
                      "wall_s": round(wall, 2), "finished": _now(), "log": self._rel(log)})
        if result["status"] == "ok":
            self._progress(what, "ok", f"video top-1 {100 * result['video_top1']:.1f} % "
                           f"in {_fmt_s(wall)}")
        else:
            self._bump("failed")
            self._progress(what, "failed", f"{result['error']} (log: {log})")


def _random_genotypes(plan: Plan) -> None:
    """Write the random cells' genotype JSON + PNG (deterministic from their seeds)."""
    from derive.draw import draw_cell
    from derive.genotype import load_genotype, random_genotype, save_genotype

    m = plan.search_model
    for row in plan.rows:
        if row.kind != "random":
            continue
        path = Path(row.block)
        seed = int(row.key.split("/")[1])
        g = random_genotype(int(m.get("num_nodes", 3)), seed,
                            inner_ratio=float(m.get("inner_ratio", 0.5)),
                            kv_pool=bool(m.get("kv_pool", True)),
                            position=str(m.get("position", _search_default("position"))),
                            provenance={"benchmark": row.key})
        if path.is_file():
            old = load_genotype(path)
            if old.nodes == g.nodes and old.cell_kwargs() == g.cell_kwargs():
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        save_genotype(g, path)
        draw_cell(g, path.with_suffix(".png"), title=row.label)


# ------------------------------------------------------------------------------ reports
def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def summarise(plan: Plan, acc: Ledger) -> list[dict[str, Any]]:
    """One entry per table row (rows, then the summary rows), top-1 in percent."""
    table: list[dict[str, Any]] = []
    for row in plan.rows:
        recs = [acc.get(row.key, s) for s in plan.train_seeds]
        ok = [r for r in recs if r and r.get("status") == "ok" and _float(r.get("video_top1"))
              is not None]
        vals = [100 * float(r["video_top1"]) for r in ok]
        any_rec = next((r for r in recs if r), {}) or {}
        entry = {"key": row.key, "label": row.label, "kind": row.kind, "group": row.group,
                 "epochs": row.epochs,
                 "params": _float(any_rec.get("params")), "macs": _float(any_rec.get("macs")),
                 "values": vals, "n": len(vals),
                 "failed": sum(1 for r in recs if r and r.get("status") == "failed"),
                 "missing": sum(1 for r in recs if not r), "summary": False,
                 "wall": statistics.fmean([float(r["wall_s"]) for r in ok]) if ok else None}
        if vals:
            entry["mean"], entry["std"] = _stats(vals)
        table.append(entry)

    def summary(label: str, kind: str, members: list[dict[str, Any]], group: str = ""
                ) -> None:
        done = [e for e in members if e["n"]]
        if len(done) < 1:
            return
        means = [e["mean"] for e in done]
        mean, std = _stats(means)
        table.append({"key": f"{kind}-mean{group}", "label": label, "kind": kind,
                      "group": group, "summary": True, "n": len(done),
                      "values": means, "mean": mean, "std": std,
                      "params": statistics.fmean([e["params"] for e in done if e["params"]]
                                                 or [math.nan]),
                      "macs": statistics.fmean([e["macs"] for e in done if e["macs"]]
                                               or [math.nan]),
                      "failed": 0, "missing": 0, "wall": None})

    for group in plan.groups:
        members = [e for e in table if e["kind"] == "searched" and e["group"] == group
                   and not e["summary"]]
        if len(members) > 1:
            name = "searched cells (mean)" if group == plan.default_group else \
                f"searched cells, {group} (mean)"
            summary(name, "searched", members, group)
    summary("random cells (mean)", "random",
            [e for e in table if e["kind"] == "random" and not e["summary"]])
    return table


def _delta(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b or "mean" not in a or "mean" not in b:
        return "—"
    d = a["mean"] - b["mean"]
    if a["n"] > 1 and b["n"] > 1:
        se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
        return f"{d:+.1f} ± {se:.1f}"
    return f"{d:+.1f}"


def _source(index: int) -> str:
    """A node's input as written in the tables: ``in`` (the projected cell input) or
    ``nK`` (node K)."""
    return "in" if index == 0 else f"n{index - 1}"


def _num(value: float | None, scale: float, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value / scale:,.{digits}f}"


def accuracy_table(table: list[dict[str, Any]]) -> list[str]:
    """The markdown accuracy table."""
    by_key = {e["key"]: e for e in table}
    none, nl = by_key.get("none"), by_key.get("nonlocal")
    lines = ["| block | params | MMACs | video top-1 (%) | n | Δ vs none | Δ vs nonlocal "
             "| time / run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in table:
        label = f"**{e['label']}**" if e["summary"] else e["label"]
        if "mean" in e:
            acc = f"{e['mean']:.1f} ± {e['std']:.1f}" if e["n"] > 1 else f"{e['mean']:.1f}"
        else:
            acc = "failed" if e["failed"] else "not run"
        if e["failed"] and "mean" in e:
            acc += f" ({e['failed']} failed)"
        lines.append(f"| {label} | {_num(e['params'], 1, 0)} | {_num(e['macs'], 1e6, 1)} | "
                     f"{acc} | {e['n']} | {_delta(e, none) if e is not none else '—'} | "
                     f"{_delta(e, nl) if e is not nl else '—'} | "
                     f"{_fmt_s(e['wall']) if e['wall'] else '—'} |")
    return lines


def plot(table: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Scatter of video top-1 vs MACs with std error bars; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"baseline": "#1f77b4", "searched": "#d62728", "random": "#7f7f7f"}
    pts = [e for e in table if "mean" in e and e["macs"] and math.isfinite(e["macs"])]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for kind, colour in colours.items():
        mine = [e for e in pts if e["kind"] == kind and not e["summary"]]
        if mine:
            ax.errorbar([e["macs"] / 1e6 for e in mine], [e["mean"] for e in mine],
                        yerr=[e["std"] for e in mine], fmt="o", color=colour, capsize=3,
                        label={"baseline": "baselines", "searched": "searched cells",
                               "random": "random cells"}[kind])
            for i, e in enumerate(sorted(mine, key=lambda e: e["macs"])):
                ax.annotate(e["label"].replace(" (seed ", " s").rstrip(")"),
                            (e["macs"] / 1e6, e["mean"]), textcoords="offset points",
                            xytext=(5, 4 if i % 2 == 0 else -10), fontsize=7, color=colour)
    ax.margins(x=0.12)
    for e in pts:
        if e["summary"]:
            ax.axhline(e["mean"], ls="--", lw=1, color=colours.get(e["kind"], "k"), alpha=0.6)
            ax.annotate(e["label"], (ax.get_xlim()[1], e["mean"]), textcoords="offset points",
                        xytext=(-4, 3), ha="right", fontsize=7,
                        color=colours.get(e["kind"], "k"))
    ax.set_xlabel("MACs per clip (M), proxy backbone")
    ax.set_ylabel("video top-1 on the test split (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    tmp.replace(path)
    return path


def _machine() -> str:
    cpu = cpu_name()
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores available{gpu}, {platform.system()}"


def _versions() -> str:
    import pytorch_lightning
    import torch

    return (f"python {platform.python_version()}, torch {torch.__version__}, "
            f"pytorch_lightning {pytorch_lightning.__version__}")


def search_lines(plan: Plan, srch: Ledger) -> list[str]:
    """Search-cost table: wall time and peak RSS of each search."""
    lines = ["| search | status | cell (op ← input) | supernet val acc | search wall | "
             "process wall | peak RSS (MiB) | worker peak RSS (MiB) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for job in plan.searches:
        r = srch.get(job.key)
        if not r:
            lines.append(f"| {job.label} | not run | | | | | | |")
            continue
        nodes = json.loads(r["nodes"]) if r.get("nodes") else []
        cell = "; ".join(f"{op} ← {_source(i)}" for op, i in nodes)
        cell = cell or (r.get("error") or "")
        val = _float(r.get("val_acc"))
        lines.append(f"| {job.label} | {r['status']} | {cell} | "
                     f"{'—' if val is None else f'{100 * val:.1f} %'} | "
                     f"{_fmt_s(_float(r.get('wall_s')))} | {_fmt_s(_float(r.get('total_s')))} | "
                     f"{_num(_float(r.get('peak_rss_mib')) or None, 1, 0)} | "
                     f"{_num(_float(r.get('worker_peak_rss_mib')) or None, 1, 0)} |")
    return lines


def step_lines(step: Ledger) -> list[str]:
    """Supernet vs derived-network step time."""
    r = step.get("steptime")
    if not r:
        return ["Not run."]
    if r.get("status") != "ok":
        return [f"Failed: {r.get('error')}"]
    it, ws = float(r["supernet_iteration_s"]), float(r["supernet_weight_step_s"])
    der, none = float(r["derived_step_s"]), float(r["none_step_s"])
    return [
        f"Batch {r['shape']} (N×C×T×H×W), median of {r['steps']} steps after one warm-up, "
        f"{r['threads']} thread(s) on CPU; derived cell: `{r['genotype']}`.",
        "",
        "| network | one training step (s) | vs derived |",
        "|---|---:|---:|",
        f"| supernet, `darts` iteration (arch step + weight step) | {it:.3f} | {it / der:.2f}× |",
        f"| supernet, weight step only (= a `uniform` iteration) | {ws:.3f} | {ws / der:.2f}× |",
        *([f"| supernet, `single_path` step (one sampled path) | "
           f"{float(r['supernet_single_path_s']):.3f} | "
           f"{float(r['supernet_single_path_s']) / der:.2f}× |"]
          if _float(r.get("supernet_single_path_s")) else []),
        f"| derived network (searched cell) | {der:.3f} | 1.00× |",
        f"| no attention (`none`) | {none:.3f} | {none / der:.2f}× |",
    ]


def repro_lines(plan: Plan, srch: Ledger) -> list[str]:
    """Op frequency per node across search seeds, and the same-seed check."""
    lines: list[str] = []
    for group in plan.groups:
        jobs = [j for j in plan.searches if j.group == group and j.repeat == 0]
        cells = [json.loads(srch.get(j.key)["nodes"]) for j in jobs
                 if srch.done(j.key) and srch.get(j.key).get("nodes")]
        if not cells:
            continue
        lines += [f"Search group `{group}`: {len(cells)} of {len(jobs)} search seeds finished.",
                  "", "| node | op chosen (seeds) | input chosen (seeds) |", "|---|---|---|"]
        for k in range(max(len(c) for c in cells)):
            ops = Counter(c[k][0] for c in cells if len(c) > k)
            ins = Counter(_source(c[k][1]) for c in cells if len(c) > k)
            lines.append(f"| {k} | " + ", ".join(f"{op} ×{n}" for op, n in ops.most_common())
                         + " | " + ", ".join(f"{i} ×{n}" for i, n in ins.most_common()) + " |")
        fam = Counter(op.split(".")[0] + "." + op.split(".")[1] for c in cells for op, _ in c)
        lines += ["", "Family.dimension over all nodes: "
                  + ", ".join(f"{k} ×{n}" for k, n in fam.most_common()) + ".", ""]
    reps = [j for j in plan.searches if j.repeat > 0]
    if not reps:
        lines.append("Same-seed check: not run at this scale (`--repeat-search 1` adds it; "
                     "the `--quick` run and `tests/test_bench.py` check it at toy scale).")
    for j in reps:
        a, b = srch.get(plan.searches[0].key), srch.get(j.key)
        if not (a and b and a.get("status") == "ok" and b.get("status") == "ok"):
            lines.append(f"Same-seed check ({j.label}): not available (a search failed).")
            continue
        same = json.loads(a["nodes"]) == json.loads(b["nodes"])
        diff = "?"
        if a.get("alpha_softmax") and b.get("alpha_softmax"):
            x, y = json.loads(a["alpha_softmax"]), json.loads(b["alpha_softmax"])
            diff = f"{max(abs(p - q) for ra, rb in zip(x, y) for p, q in zip(ra, rb)):.2g}"
        lines.append(f"Same-seed check: search seed {j.seed} run twice → "
                     f"{'**identical genotype**' if same else '**different genotypes**'} "
                     f"(max |Δ softmax(α)| = {diff}).")
    return lines or ["No finished search."]


def write_markdown(plan: Plan, runner: Runner, table: list[dict[str, Any]],
                   png: Path | None) -> Path:
    """Write ``accuracy.md``: every table, the settings, machine, versions and command."""
    acc, srch = runner.acc, runner.srch
    stamps = sorted(r["finished"] for r in [*acc.rows.values(), *srch.rows.values()]
                    if r.get("finished"))
    meta = {}
    meta_file = Path(plan.retrain_data["root"]) / "meta.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError:
            meta = {}
    counts = meta.get("counts", {})
    s, r = plan.search_trainer, plan.retrain_trainer
    search_seeds = [j.seed for j in plan.searches if j.group == plan.default_group
                    and not j.repeat]
    n_random = sum(1 for x in plan.rows if x.kind == "random")
    title = "Accuracy benchmark" + (" (--quick: toy scale, not a result)" if plan.quick else "")
    lines = [
        f"# {title}",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M')}; runs finished "
        f"{stamps[0] if stamps else '—'} … {stamps[-1] if stamps else '—'}.",
        "",
        f"- Command: `{plan.command}`",
        f"- Machine: {_machine()}; {plan.threads} torch thread(s) per run, "
        f"{plan.args.jobs} run(s) at a time.",
        f"- Versions: {_versions()}.",
        f"- Data: synthetic benchmark `{plan.retrain_data['root']}` "
        f"({plan.synth['classes']} classes × {plan.synth['videos_per_class']} videos, "
        f"{plan.clip[0]} frames × {plan.clip[1]}² px, seed {plan.synth['seed']}; train / val / "
        f"test = {counts.get('train', '?')} / {counts.get('val', '?')} / "
        f"{counts.get('test', '?')}); each clip is the whole video.",
        f"- Search: `{Path(plan.args.search_config).name}` defaults, {s.get('max_epochs')} "
        f"epoch(s), search seeds {search_seeds}; study groups: {', '.join(plan.groups)}.",
        f"- Retrain: `{Path(plan.args.retrain_config).name}` defaults, the same budget for every "
        f"row ({r.get('max_epochs')} epoch(s), batch {plan.retrain_data.get('batch_size')}), "
        f"training seeds {plan.train_seeds}; test = final weights, "
        f"{plan.retrain_data.get('test_clips', 1)} clip(s) × "
        f"{plan.retrain_data.get('test_crops', 1)} crop(s) per video, scores averaged per "
        f"video.",
        f"- Random cells: `derive.random_genotype` seeds 0..{n_random - 1}, uniform over the "
        "24 ops and the inputs, same cell settings as the search.",
        f"- Settings fingerprint: `{plan.settings}`.",
    ]
    if plan.quick:
        lines.append(f"- --quick: proxy {json.dumps(QUICK_PROXY)}, trainer "
                     f"{json.dumps(QUICK_TRAINER)}.")
    if plan.args.limit_batches:
        lines.append(f"- --limit-batches {plan.args.limit_batches}: a smoke test, not a result.")
    lines += [f"- Note: {n}" for n in plan.notes]
    lines += ["", "## Accuracy (video-level top-1 on the test split)", "",
              *accuracy_table(table), "",
              "Mean ± std over training seeds (summary rows: over cells). Δ in points: "
              "difference of means ± its standard error (√(s₁²/n₁ + s₂²/n₂)). MACs: one clip "
              f"1×3×{plan.clip[0]}×{plan.clip[1]}×{plan.clip[1]}, attention counted "
              "(`supernet.cost.model_cost`).", ""]
    if png is not None:
        lines += [f"![top-1 vs MACs]({png.name})", ""]
    lines += ["## Targets", "", *target_lines(plan, table, srch), ""]
    lines += ["## Search groups", "", *group_table_lines(plan, table, srch)]
    budget = budget_lines(table, int(plan.retrain_trainer.get("max_epochs") or 1))
    if budget:
        lines += ["## Retrain budget", "", *budget]
    lines += ["## Search cost", "", *search_lines(plan, srch), "",
              "Cell: each node's op ← its input (`in` = the projected cell input, `nK` = "
              "node K). Search wall = `trainer.fit`; process wall includes start-up and data "
              "set-up. Peak RSS: the search process's high-water mark (its largest DataLoader "
              "worker separately).",
              "", "### Supernet step vs derived-network step", "", *step_lines(runner.step), ""]
    lines += ["## Reproducibility", "", *repro_lines(plan, srch), ""]
    cells = [j for j in plan.searches if j.repeat == 0 and srch.done(j.key)]
    if cells:
        lines += ["## Searched cells", ""]
        for j in cells:
            rel = runner._rel(j.genotype)
            lines += [f"- {j.label}: [`{rel}`]({rel}) ![{j.label}]"
                      f"({runner._rel(j.genotype.with_suffix('.png'))})"]
        lines.append("")
    failed = [x for x in acc.rows.values() if x.get("status") == "failed"]
    failed += [x for x in srch.rows.values() if x.get("status") == "failed"]
    if failed:
        lines += ["## Failed runs", "", "| run | seed | error | log |", "|---|---|---|---|"]
        for x in failed:
            lines.append(f"| {x.get('row') or x.get('search')} | {x.get('seed', '')} | "
                         f"{(x.get('error') or '').replace('|', '/')} | {x.get('log', '')} |")
        lines.append("")
    path = plan.out / "accuracy.md"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------ main
def _split_counts(plan: Plan) -> dict[str, int]:
    """Videos per split: the data's meta.json, else the generator's 70/15/15 split."""
    meta_file = Path(plan.retrain_data["root"]) / "meta.json"
    if meta_file.is_file():
        try:
            counts = json.loads(meta_file.read_text()).get("counts")
            if isinstance(counts, dict):
                return {k: int(v) for k, v in counts.items()}
        except ValueError:
            pass
    n, c = int(plan.synth["videos_per_class"]), int(plan.synth["classes"])
    train, val = round(n * 0.70), round(n * 0.15)
    return {"train": c * train, "val": c * val, "test": c * (n - train - val)}


def _limit(value: Any, full: int) -> int:
    if value is None:
        return full
    return min(full, int(value)) if isinstance(value, int) or float(value) > 1 \
        else int(full * float(value))


#: per-run start-up (interpreter, imports, Trainer) and one-off decoding, in seconds
RUN_OVERHEAD_S, DECODE_S_PER_VIDEO = 10.0, 0.02


def upfront_estimate(plan: Plan, runner: Runner, console: Any) -> dict[str, float] | None:
    """Estimate each run's duration from a few timed steps (before any run finished):
    steps per epoch x step time, evaluation forwards at a third of a step, plus start-up.
    Returns ``{row key or 'search': seconds}``, or None if the calibration failed."""
    from derive.genotype import random_genotype, save_genotype

    m = plan.search_model
    cell = plan.work / "calibrate_cell.json"
    cell.parent.mkdir(parents=True, exist_ok=True)
    save_genotype(random_genotype(int(m.get("num_nodes", 3)), 0,
                                  inner_ratio=float(m.get("inner_ratio", 0.5)),
                                  kv_pool=bool(m.get("kv_pool", True)),
                                  position=str(m.get("position", _search_default("position")))),
                  cell)
    blocks = sorted({r.block for r in plan.rows if r.kind == "baseline"} | {str(cell)})
    sb, rb = int(plan.search_data.get("batch_size", 16)), int(plan.retrain_data["batch_size"])
    t, px = plan.clip
    console.print(f"calibrating: a few training steps of the supernet and of {len(blocks)} "
                  f"networks ({plan.threads} thread(s)) …")
    result, wall, log = runner.launch("calibrate", {
        "kind": "calibrate", "key": "calibrate", "search_model": plan.search_model,
        "retrain_model": plan.retrain_model, "num_classes": int(plan.synth["classes"]),
        "search_shape": [sb, 3, t, px, px], "retrain_shape": [rb, 3, t, px, px],
        "blocks": blocks, "steps": 2})
    if result.get("status") != "ok":
        console.print(f"calibration failed: {result.get('error')} (log: {log})", markup=False)
        return None
    counts = _split_counts(plan)
    st, rt = plan.search_trainer, plan.retrain_trainer
    rdata = plan.retrain_data
    ebs = int(rdata.get("eval_batch_size") or rb)
    val_views = counts["val"] * int(rdata.get("val_clips", 1))
    test_views = counts["test"] * int(rdata.get("test_clips", 1)) * int(rdata.get("test_crops", 1))
    r_steps = _limit(rt.get("limit_train_batches"), counts["train"] // rb)
    r_val = _limit(rt.get("limit_val_batches"), math.ceil(val_views / ebs))
    r_test = _limit(rt.get("limit_test_batches"), math.ceil(test_views / ebs))

    def retrain_s(step: float) -> float:
        per_epoch = r_steps * step + r_val * step / 3
        return int(rt.get("max_epochs", 1)) * per_epoch + r_test * step / 3 + RUN_OVERHEAD_S

    it = float(result["supernet_iteration_s"])
    s_steps = _limit(st.get("limit_train_batches"), counts["train"] // 2 // sb)
    s_val = _limit(st.get("limit_val_batches"), math.ceil(counts["val"] / sb))
    est = {"search": int(st.get("max_epochs", 1)) * (s_steps * it + s_val * it / 6)
           + RUN_OVERHEAD_S}
    times = result["blocks"]
    for row in plan.rows:
        step = times.get(row.block, times[str(cell)])
        est[row.key] = retrain_s(float(step))
    est["decode"] = sum(counts.values()) * DECODE_S_PER_VIDEO
    console.print(f"  supernet search iteration (batch {sb}): {it:.3f} s; training step "
                  f"(batch {rb}): " + ", ".join(
                      f"{Path(b).stem if b.endswith('.json') else b} {float(v):.3f} s"
                      for b, v in times.items()) + f" (calibration took {_fmt_s(wall)})",
                  markup=False)
    return est


def _print_plan(plan: Plan, runner: Runner, console: Any) -> None:
    console.print(f"results: {plan.out}\nwork:    {plan.work}", markup=False)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
    todo_search = [j for j in plan.searches if not runner.srch.done(j.key)]
    todo_rows = {r.key: sum(not runner.acc.done(r.key, s) for s in plan.train_seeds)
                 for r in plan.rows}
    for job in plan.searches:
        state = "done" if job not in todo_search else "to run"
        console.print(f"  search {job.label}: {state}", markup=False)
    for row in plan.rows:
        done = len(plan.train_seeds) - todo_rows[row.key]
        console.print(f"  train  {row.label}: {done}/{len(plan.train_seeds)} seeds done",
                      markup=False)
    if not todo_search and not any(todo_rows.values()) and runner.step.done("steptime"):
        console.print(f"runs: {runner.total}; all done")
        return
    total, left = runner.estimate()
    if total is not None:
        console.print(f"runs: {runner.total}; from the runs timed so far: full run ≈ "
                      f"{_fmt_s(total)}, left ≈ {_fmt_s(left)}")
        return
    est = upfront_estimate(plan, runner, console)
    if est is None:
        return
    n_train = sum(todo_rows.values())
    left = (len(todo_search) * est["search"] + est["decode"] + 30.0
            + sum(est[k] * n for k, n in todo_rows.items()))
    per_row = statistics.fmean(est[r.key] for r in plan.rows)
    console.print(f"runs: {runner.total} ({len(todo_search)} searches ≈ "
                  f"{_fmt_s(est['search'])} each, {n_train} trainings ≈ {_fmt_s(per_row)} each "
                  f"on average); calibrated estimate of what is left ≈ "
                  f"{_fmt_s(left / plan.args.jobs)} with {plan.threads} thread(s) per run, "
                  f"{plan.args.jobs} at a time")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.run`` / ``attnas bench``; returns the exit code (0: all ok,
    1: some run failed, 2: bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        plan = build_plan(argv)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except BenchError as err:
        print(f"attnas bench: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the parent only counts MACs and draws
    try:
        return _main(plan)
    finally:
        torch.set_num_threads(threads)


def _stale(plan: Plan, runner: Runner) -> list[str]:
    """The planned runs whose recorded row was made with other settings than the plan's
    (each run's fingerprint covers what it depends on; rows of runs the plan does not
    name are left alone)."""
    out = []
    for job in plan.searches:
        r = runner.srch.get(job.key)
        if r and r.get("settings") != job.settings:
            out.append(f"search {job.key}: {r.get('settings')}, now {job.settings}")
    for row in plan.rows:
        for seed in plan.train_seeds:
            r = runner.acc.get(row.key, seed)
            if r and r.get("settings") != row.settings:
                out.append(f"{row.key} seed {seed}: {r.get('settings')}, now {row.settings}")
    r = runner.step.get("steptime")
    if r and r.get("settings") != plan.steptime_settings:
        out.append(f"steptime: {r.get('settings')}, now {plan.steptime_settings}")
    return out


def _main(plan: Plan) -> int:
    """Check the results folder, then plan or run."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    runner = Runner(plan, console)
    stale = _stale(plan, runner)
    if stale:
        print(f"attnas bench: error: {plan.out} holds results made with other settings "
              f"({'; '.join(stale[:3])}{' …' if len(stale) > 3 else ''}); use another "
              f"--out or remove its CSV files", file=sys.stderr)
        return 2
    if plan.args.plan:
        _print_plan(plan, runner, console)
        return 0
    plan.out.mkdir(parents=True, exist_ok=True)
    plan.work.mkdir(parents=True, exist_ok=True)
    import fcntl

    lock = (plan.work / "bench.lock").open("w")  # one writer per results folder
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"attnas bench: error: another attnas bench is writing to {plan.out}",
              file=sys.stderr)
        return 2
    try:
        return _run(plan, runner, console)
    finally:
        lock.close()


def _tasks(plan: Plan, runner: Runner) -> list[tuple[Any, set[str], str]]:
    """Every run as (callable, the search keys it waits for, its own key), in the order
    that gives the main answer first: the default group's searches, then its rows with
    the baselines, random cells and budget rows seed by seed, the step-time job, then the
    other groups' searches and rows."""
    tasks: list[tuple[Any, set[str], str]] = []
    default = plan.default_group

    def searches(first: bool) -> None:
        for job in plan.searches:
            if (job.group == default) == first:
                tasks.append((lambda job=job: runner.run_search(job), set(), job.key))

    def rows(first: bool) -> None:
        for seed in plan.train_seeds:
            for row in plan.rows:
                if (row.kind != "searched" or row.group == default) != first:
                    continue
                needs = {row.search.key} if row.search is not None else set()
                tasks.append((lambda row=row, seed=seed: runner.run_row(row, seed), needs,
                              f"{row.key}/{seed}"))

    searches(True)
    rows(True)
    first = [j.key for j in plan.searches if j.group == default and j.repeat == 0]
    tasks.append((runner.run_steptime, set(first), "steptime"))
    searches(False)
    rows(False)
    return tasks


def _schedule(plan: Plan, runner: Runner) -> None:
    """Run every task, ``--jobs`` at a time; a task starts once the searches it needs
    have ended (ok or failed: a failed search fails its rows)."""
    jobs = plan.args.jobs
    pending = _tasks(plan, runner)
    if jobs <= 1:
        for fn, _, _ in pending:
            fn()
        return
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    ended: set[str] = set()
    running: dict[Future[Any], str] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            while pending or running:
                for task in list(pending):
                    if len(running) >= jobs:
                        break
                    fn, needs, key = task
                    if needs <= ended:
                        pending.remove(task)
                        running[pool.submit(fn)] = key
                if not running:  # cannot happen: every dependency is a task of the plan
                    raise RuntimeError(f"unschedulable runs: {[k for _, _, k in pending]}")
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    ended.add(running.pop(fut))
                    fut.result()  # re-raise a bug in the runner itself
        except BaseException:
            for fut in running:
                fut.cancel()
            raise


def _run(plan: Plan, runner: Runner, console: Any) -> int:
    """Every step, then the reports; the exit code."""
    t0 = time.perf_counter()
    console.print(f"[bold]attnas bench[/bold]{' --quick' if plan.quick else ''}: "
                  f"{len(plan.searches)} searches, {len(plan.rows)} rows × "
                  f"{len(plan.train_seeds)} training seeds, {plan.threads} thread(s) per run → "
                  f"{plan.out}")
    for note in plan.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    from datamodules.synth import SynthError, ensure_synthetic

    console.print(f"data: {escape(plan.retrain_data['root'])} (generated if missing)")
    try:
        ensure_synthetic(plan.retrain_data["root"], **plan.synth, progress=not plan.quick)
    except (SynthError, ValueError, OSError) as err:
        print(f"attnas bench: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    _random_genotypes(plan)
    interrupted = False
    try:
        _schedule(plan, runner)
    except KeyboardInterrupt:
        interrupted = True
        console.print("[red]interrupted[/red]: finished runs are kept; re-run the same "
                      "command to resume")
    table = summarise(plan, runner.acc)
    png = plot(table, plan.out / "accuracy.png",
               f"proxy on synthetic {plan.clip[0]}×{plan.clip[1]}² "
               f"({len(plan.train_seeds)} training seed(s))")
    md = write_markdown(plan, runner, table, png)
    if runner.skipped:
        console.print(f"skipped {runner.skipped} finished runs (recorded in {plan.out})")
    console.print(f"ran {runner.ran} runs in {_fmt_s(time.perf_counter() - t0)}; "
                  f"{runner.failed} failed; tables: {md}")
    if interrupted:
        return 130
    all_ok = all(r.get("status") == "ok" for r in runner.acc.rows.values()) and \
        all(r.get("status") == "ok" for r in runner.srch.rows.values())
    return 0 if all_ok and runner.failed == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
