"""The benchmark's plan: what one invocation runs.

:func:`build_plan` parses and validates the command line (:mod:`benchmarks.arguments`: the
parser, its defaults, :class:`BenchError`) and the configs, and resolves them into a
:class:`Plan`: the searches (:class:`SearchJob`) and the table rows (:class:`Row`), each
with the settings fingerprint of what it depends on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.arguments import (
    BENCH_RETRAIN_EPOCHS,
    BENCH_SEARCH_EPOCHS,
    DEFAULT_ANTI_COLLAPSE_WEIGHT,
    DEFAULT_OUT,
    MAX_DEFAULT_JOBS,
    QUICK_DATA,
    QUICK_OUT,
    QUICK_PROXY,
    QUICK_TRAINER,
    BenchError,
    anti_collapse_values,
    check_count,
    csv_list,
    load_config,
    parser,
)
from benchmarks.common import REPO
from benchmarks.groups import DEFAULT_GROUPS, group_name, parse_group, search_default
from datamodules import VideoDataModule
from datamodules.synth import DEFAULTS
from derive.genotype import load_genotype
from supernet.factory import BLOCK_NAMES
from supernet.hparams import RENAMED_OPTIONS, deprecation_line, rename_options
from supernet.space import POSITIONS

__all__ = ["BenchError", "Plan", "Row", "SearchJob", "build_plan"]


#: data settings that change speed only (left out of the settings fingerprint)
_SPEED_ONLY = {"num_workers", "cache", "cache_dir", "cache_memory_mb", "persistent_workers",
               "pin_memory", "decode_threads", "root"}
#: the cell settings round 1's random cells were drawn with (their rows' fingerprint is the
#: retrain settings alone; other cell settings add themselves to it)
ROUND1_RANDOM_CELL_SETTINGS = {"num_nodes": 3, "inner_ratio": 0.5, "kv_pool": True,
                               "position_encoding": "none"}
#: the search settings a plan's search model always holds (the config's value, else
#: SearchModule's default): those the shipped search config wrote out before the defaults
#: moved into the signature, so a run's fingerprint (which covers its model dict) stayed
#: the same and no finished run is redone
PLAN_MODEL_KEYS = ("backbone", "num_nodes", "inner_ratio", "kv_pool", "position_encoding",
                   "optimizer", "lr", "lr_min", "momentum", "weight_decay", "arch_lr",
                   "arch_betas", "arch_weight_decay", "arch_order", "warmup_epochs",
                   "grad_clip", "anti_collapse", "anti_collapse_weight", "strategy", "select",
                   "select_bn")
#: the fingerprints hash the settings under the names they had when the results so far were
#: written (``position``, ``remedy``, ``supernet``), so a rename redoes no finished run
_FINGERPRINT_NAMES = {new: old for old, new in RENAMED_OPTIONS.items()}
#: version of the validation data a selection rule scores on, part of every search's
#: fingerprint: 2 = class-interleaved validation batches (1 read a list sorted by class, so
#: the first batches -- all a rule scores on -- were one class)
SELECTION_DATA_VERSION = 2
#: search settings that only decide how the trained supernet becomes a cell: two groups that
#: differ in these alone train the same supernet, so the later one re-selects from the
#: earlier one's checkpoint instead of training it again
SELECTION_KEYS = frozenset({"select", "select_val_batches", "select_calib_batches",
                            "select_finetune_steps", "select_bn"})


#: the default of a :class:`supernet.search.SearchModule` argument
_search_default = search_default


def _fingerprint_names(model: dict[str, Any]) -> dict[str, Any]:
    """``model`` with the renamed options under their old names (:data:`_FINGERPRINT_NAMES`)."""
    return {_FINGERPRINT_NAMES.get(k, k): v for k, v in model.items()}


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
    #: fingerprint of what trains the supernet (the settings less :data:`SELECTION_KEYS`)
    supernet: str = ""
    #: the key of an earlier search that trains the same supernet with the same seed: this
    #: one re-selects from its checkpoint (a full search if that checkpoint is missing)
    source: str | None = None


@dataclass
class Row:
    """One row of the accuracy table (trained with every training seed)."""

    key: str
    label: str
    kind: str  # baseline | searched | random | random_cost (fitted to a budget) | budget
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
    synth: dict[str, int] | None  # the synthetic benchmark's parameters (None: a dataset)
    clip: tuple[int, int]
    notes: list[str]
    searches: list[SearchJob]
    rows: list[Row]
    train_seeds: list[int]
    settings: str
    command: str
    groups: list[str] = field(default_factory=list)
    num_classes: int = 0
    default_group: str = "default"
    steptime_settings: str = ""

    def trainer_for(self, row: Row) -> dict[str, Any]:
        """The retrain trainer settings of ``row`` (a budget row has its own epochs)."""
        if row.epochs is None:
            return self.retrain_trainer
        return {**self.retrain_trainer, "max_epochs": row.epochs}


def _cell_of(path: str) -> dict[str, Any]:
    """What a genotype-file baseline trains: its nodes and cell settings (its fingerprint:
    another cell under the same file name is another row)."""
    doc = json.loads(Path(path).read_text())
    cell = doc.get("cell")
    if isinstance(cell, dict) and "position_encoding" in cell:  # under its old name, as the
        cell = {("position" if k == "position_encoding" else k): v  # results so far hashed it
                for k, v in cell.items()}
    return {"nodes": doc.get("nodes"), "cell": cell}


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return keep.strip("_")


def _block_names() -> tuple[str, ...]:
    return tuple(b for b in BLOCK_NAMES if b not in ("search", "cell"))


def build_plan(argv: list[str]) -> Plan:
    """Parse and validate ``argv``; raises :class:`BenchError` on bad input."""
    args = parser().parse_args(argv)
    for old, new in (("--remedy", "--anti-collapse"),
                     ("--remedy-weight", "--anti-collapse-weight")):
        if any(a == old or a.startswith(old + "=") for a in argv):
            print(f"attnas bench: {deprecation_line(old[2:], new[2:], '--')}", file=sys.stderr)
    if args.executor is not None:
        print("attnas bench: warning: --executor is deprecated and ignored: every run is a "
              "Ray task (a local Ray unless --address)", file=sys.stderr)
    quick = args.quick
    search_seeds = check_count(args.search_seeds if args.search_seeds is not None
                                else 1 if quick else 3, "--search-seeds", 1)
    train_seeds = check_count(args.train_seeds if args.train_seeds is not None
                               else 1 if quick else 3, "--train-seeds", 1)
    random_cells = check_count(args.random_cells if args.random_cells is not None
                                else 1 if quick else 3, "--random-cells", 0)
    repeats = check_count(args.repeat_search if args.repeat_search is not None
                           else 1 if quick else 0, "--repeat-search", 0)
    for flag, value in (("--search-epochs", args.search_epochs),
                        ("--retrain-epochs", args.retrain_epochs)):
        if value is not None:
            check_count(value, flag, 1)
    cores = len(os.sched_getaffinity(0))
    if args.jobs is None:
        args.jobs = 1 if quick else max(1, min(MAX_DEFAULT_JOBS, cores))
    check_count(args.jobs, "--jobs", 1)
    if not quick:
        if args.search_epochs is None:
            args.search_epochs = BENCH_SEARCH_EPOCHS
        if args.retrain_epochs is None:
            args.retrain_epochs = BENCH_RETRAIN_EPOCHS
    if args.threads is not None:
        check_count(args.threads, "--threads", 1)
    if args.limit_batches is not None:
        check_count(args.limit_batches, "--limit-batches", 1)
    if args.timeout is not None and args.timeout <= 0:
        raise BenchError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    if args.anti_collapse_weight is not None and (
            args.anti_collapse_weight < 0 or not math.isfinite(args.anti_collapse_weight)):
        raise BenchError(f"--anti-collapse-weight must be a finite number >= 0, got "
                         f"{args.anti_collapse_weight:g}")

    accepted = _block_names()
    # "" = no baseline rows: a study or investigation whose baselines live in another folder
    blocks = csv_list(args.blocks, "--blocks") if args.blocks.strip() else []
    # a genotype file is found from the working folder, else from the repository (the
    # shipped control baselines), and keeps the name it was given as its row key
    where = {b: (b if Path(b).is_file() or not (REPO / b).is_file() else str(REPO / b))
             for b in blocks}
    for b in blocks:
        if b.endswith(".json"):
            try:
                load_genotype(where[b])
            except (ValueError, OSError) as err:
                raise BenchError(f"--blocks: {' '.join(str(err).split())}") from None
        elif b not in accepted:
            raise BenchError(f"unknown block {b!r}; accepted: {', '.join(accepted)}, or a "
                             f"genotype .json file")
    if len(set(blocks)) != len(blocks):
        raise BenchError(f"--blocks lists a block twice: {args.blocks}")

    regularisers = anti_collapse_values()
    scfg, rcfg = load_config(args.search_config), load_config(args.retrain_config)
    smodel, rmodel = dict(scfg["model"]), dict(rcfg["model"])
    try:
        for old in rename_options(smodel):
            print(f"attnas bench: {args.search_config}: "
                  f"{deprecation_line(old, RENAMED_OPTIONS[old], 'model.')}", file=sys.stderr)
    except ValueError as err:
        raise BenchError(f"{args.search_config}: {err}") from None
    base_remedy = smodel.get("anti_collapse", _search_default("anti_collapse"))
    base_position = smodel.get("position_encoding", _search_default("position_encoding"))
    study_remedy = (csv_list(args.anti_collapse, "--anti-collapse") if args.anti_collapse
                    else [base_remedy])
    study_position = (csv_list(args.positions, "--positions") if args.positions
                      else [base_position])
    for value in study_remedy:
        if value not in regularisers:
            raise BenchError(f"unknown anti-collapse regulariser {value!r}; accepted: "
                             f"{', '.join(regularisers)}")
    for value in study_position:
        if value not in POSITIONS:
            raise BenchError(f"unknown position {value!r}; accepted: {', '.join(POSITIONS)}")

    out = Path(args.out) if args.out else QUICK_OUT if quick else DEFAULT_OUT
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} exists and is not a folder")
    work = (Path(args.work) if args.work else out / "_work").resolve()
    threads = args.threads or (1 if quick else max(1, cores // args.jobs))

    # -- data: the synthetic benchmark read whole (its class needs every frame), or a
    #    dataset of the user's (--data-root, or configs that read one) as the configs say
    notes: list[str] = []
    sdata, rdata = dict(scfg["data"]), dict(rcfg["data"])
    synth: dict[str, int] | None
    if args.data_root is not None:
        for data in (sdata, rdata):
            for key in ("synthetic", "synthetic_params", "train_list", "val_list", "test_list"):
                data.pop(key, None)
            data["root"] = args.data_root
    synthetic = bool(sdata.get("synthetic")) and bool(rdata.get("synthetic"))
    if quick and args.data_root is None:
        synth = dict(QUICK_DATA)
        root = work / "data"
    elif synthetic:
        synth = {**DEFAULTS, **(sdata.get("synthetic_params") or {})}
        root = Path(sdata.get("root", "data/synth")).resolve()
        if Path(rdata.get("root", "data/synth")).resolve() != root:
            raise BenchError("the search and retrain configs read different data roots")
    else:
        synth, root = None, Path(str(rdata.get("root", ""))).resolve()
        if bool(sdata.get("synthetic")) != bool(rdata.get("synthetic")):
            raise BenchError("one config reads the synthetic benchmark and the other a "
                             "dataset; give both the same data (or --data-root DIR)")
        source_keys = ("root", "train_list", "val_list", "test_list", "path_prefix")
        if [str(sdata.get(k) or "") for k in source_keys] != \
                [str(rdata.get(k) or "") for k in source_keys]:
            raise BenchError("the search and retrain configs read different data; give "
                             "both the same (or --data-root DIR)")
        if not root.exists():
            raise BenchError(f"dataset {root} does not exist")
    if synth is not None:
        clip = (int(synth["frames"]), int(synth["size"]))
        for name, data in (("search", sdata), ("retrain", rdata)):
            given = (data.get("num_frames"), data.get("crop_size"), data.get("sampling_rate", 1))
            if given != (clip[0], clip[1], 1) and not quick:
                notes.append(f"the {name} config reads {given[0]} frames x {given[1]} px "
                             f"(sampling rate {given[2]}) but the synthetic videos are "
                             f"{clip[0]} x {clip[1]} px: the benchmark reads whole videos "
                             f"({clip[0]} frames, {clip[1]} px, rate 1)")
            data.update(synthetic=True, synthetic_params=synth, num_frames=clip[0],
                        crop_size=clip[1], sampling_rate=1)
        num_classes = int(synth["classes"])
    else:
        clip = (int(rdata.get("num_frames", 8)), int(rdata.get("crop_size", 224)))
        try:
            probe = {k: v for k, v in rdata.items() if k != "search"}
            num_classes = VideoDataModule(**{**probe, "root": str(root)}).num_classes
        except (ValueError, FileNotFoundError, TypeError) as err:
            raise BenchError(f"dataset {root}: {' '.join(str(err).split())}") from None
    for data in (sdata, rdata):
        data.update(root=str(root), cache="disk", cache_dir=str(work / "clip_cache"))
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
    remedy_weight = (args.anti_collapse_weight if args.anti_collapse_weight is not None
                     else float(smodel.get("anti_collapse_weight", 0.0))
                     or DEFAULT_ANTI_COLLAPSE_WEIGHT)
    for key in PLAN_MODEL_KEYS:  # the signature's defaults, where the config sets none
        smodel.setdefault(key, _search_default(key))
    # the first group is the default one (its targets are checked); '' = the config's group
    specs = args.groups if args.groups is not None else "" if quick else ",".join(DEFAULT_GROUPS)
    overrides: list[dict[str, Any]] = []
    for spec in (csv_list(specs, "--groups") if specs.strip() else []):
        try:
            overrides.append(parse_group(spec))
        except ValueError as err:
            raise BenchError(f"--groups: {err}") from None
    overrides = overrides or [{}]
    for value in study_remedy:
        if value != base_remedy:
            weight = remedy_weight if value != "none" else 0.0
            overrides.append({"anti_collapse": value, "anti_collapse_weight": weight})
    for value in study_position:
        if value != base_position:
            overrides.append({"position_encoding": value})
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
        # a dataset is named by its folder; the synthetic benchmark by its parameters
        return {k: v for k, v in d.items()
                if k not in _SPEED_ONLY or (k == "root" and synth is None)}

    # Each run's fingerprint covers what that run depends on: a search its model, data and
    # trainer; a retrain row the retrain settings (and its search's fingerprint).
    retrain_fp = _fingerprint({"retrain": [rmodel, strip(rdata), rtrainer], "quick": quick})
    gdir = out / "genotypes"
    searches: list[SearchJob] = []
    rows: list[Row] = [Row(b, b if not b.endswith(".json") else Path(b).stem, "baseline",
                           str(Path(where[b]).resolve()) if b.endswith(".json") else b,
                           settings=retrain_fp if not b.endswith(".json")
                           else _fingerprint([retrain_fp, _cell_of(where[b])]))
                       for b in blocks]
    trains: dict[tuple[str, int], str] = {}  # (supernet fingerprint, seed) -> first search
    for group, model, trainer in groups:
        search_fp = _fingerprint({"search": [_fingerprint_names(model), strip(sdata), trainer],
                                  "quick": quick, "selection_data": SELECTION_DATA_VERSION})
        # a budget only changes the selection of a supernet whose alpha does not see it
        # (not darts, or darts with a zero cost weight): such groups share the supernets
        cost_in_alpha = (model.get("strategy") == "darts" and model.get("cost_target") is not None
                         and float(model.get("cost_weight", 1.0)) != 0.0)
        select_only = SELECTION_KEYS | {"cost_min_width"} | (
            set() if cost_in_alpha else {"cost_target", "cost_weight"})
        supernet_fp = _fingerprint({"supernet": [
            _fingerprint_names({k: v for k, v in model.items() if k not in select_only}),
            strip(sdata), trainer],
            "quick": quick})
        for seed in range(search_seeds):
            key = f"searched[{group}]/s{seed}"
            label = f"{group} (seed {seed})"
            job = SearchJob(key, label, group, seed, 0, model,
                            gdir / f"{_slug(key.replace('/', '_'))}.json", search_fp,
                            trainer if trainer != strainer else None, supernet_fp,
                            trains.setdefault((supernet_fp, seed), key))
            if job.source == key:
                job.source = None
            searches.append(job)
            rows.append(Row(key, label, "searched", str(job.genotype), job, group,
                            settings=_fingerprint([retrain_fp, search_fp])))
    first = searches[0]
    for r in range(1, repeats + 1):
        searches.append(SearchJob(f"{first.key}#repeat{r}", f"{first.label}, repeat {r}",
                                  first.group, first.seed, r, dict(first.model),
                                  gdir / f"{_slug(first.key.replace('/', '_'))}_repeat{r}.json",
                                  first.settings, first.trainer, first.supernet))
    # a random cell is drawn with the search config's cell settings (position, nodes, ...):
    # when they are not round 1's, they are part of the row's fingerprint, so a config
    # change re-draws and re-trains the random cells instead of mixing old and new rows
    cell = {k: smodel.get(k, _search_default(k)) for k in ROUND1_RANDOM_CELL_SETTINGS}
    random_fp = (retrain_fp if cell == ROUND1_RANDOM_CELL_SETTINGS
                 else _fingerprint([retrain_fp, {"random_cell": _fingerprint_names(cell)}]))
    for i in range(random_cells):
        rows.append(Row(f"random/{i}", f"random cell {i}", "random",
                        str(gdir / f"random_{i}.json"), settings=random_fp))
    # random cells of matched cost: the same random cells, each fitted to a budget group's
    # target (the inner width the budget allows), so a budgeted search meets its own control
    specs = list(dict.fromkeys(str(m["cost_target"]) for _, m, _ in groups
                               if m.get("cost_target") is not None))
    for spec in specs:
        for i in range(random_cells):
            rows.append(Row(f"random@cost{spec}/{i}", f"random cell {i}, budget {spec}",
                            "random_cost", str(gdir / f"random_{i}_cost{_slug(spec)}.json"),
                            group=f"cost{spec}",
                            settings=_fingerprint([random_fp, {"cost_target": spec}])))
    budgets = args.budget_epochs if args.budget_epochs is not None else "" if quick else "6"
    for text in (csv_list(budgets, "--budget-epochs") if budgets.strip() else []):
        if "nonlocal" not in blocks:  # the study trains `nonlocal` at other budgets
            break
        try:
            ep = int(text)
        except ValueError:
            raise BenchError(f"--budget-epochs: {text!r} is not an epoch count") from None
        check_count(ep, "--budget-epochs", 1)
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
                settings, command, groups=[g[0] for g in groups], default_group=groups[0][0],
                num_classes=num_classes)
    plan.steptime_settings = _fingerprint([first.settings, retrain_fp])
    return plan
