"""``attnas search`` and ``attnas retrain``: LightningCLIs with one-line errors.

Both are ``LightningCLI(..., run=False)``: this module parses the subcommand itself
(``fit`` / ``validate`` / ``test``), instantiates model, datamodule and trainer from YAML
configs and dotted overrides, checks the data and any ``--ckpt_path`` *before* training,
then calls the trainer. Input problems (unknown block or backbone, a missing data path, a
malformed genotype, a checkpoint of the wrong kind) end with one line on stderr and exit
code 2; a non-finite loss ends with one line and exit code 1.
"""

from __future__ import annotations

import argparse
import inspect
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import (
    ModelSummary,
    ProgressBar,
    RichModelSummary,
    RichProgressBar,
)
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities.exceptions import SIGTERMException
from rich import get_console
from rich.table import Table

from datamodules import TooManyBrokenVideosError, VideoDataModule
from datamodules.synth import SynthError
from derive.rules import check_rule, get_rule
from supernet.counting import count_flops
from supernet.hparams import (
    RENAMED_BACKBONE_KWARGS,
    RENAMED_OPTIONS,
    deprecated_key_line,
    deprecation_line,
    rename_backbone_kwargs,
)
from supernet.paths import check_writable, need_file
from supernet.score_fusion import SCORES_FILE, load_scores
from supernet.search import LEGACY_DEFAULTS

from .parsing import parse_error_line
from .quiet import HeldBack, quiet_lightning
from .run_logs import RunLogger

SUBCOMMANDS = ("fit", "validate", "test")


class RankSafeRichProgressBar(RichProgressBar):
    """Lightning's rich progress bar, safe under DDP.

    At the end of a training epoch the bar reads ``trainer.progress_bar_metrics``, which
    computes every epoch-level value logged with ``sync_dist=True`` (or as a torchmetrics
    object) -- a collective. The bar is active on rank 0 only, so rank 0 entered that
    collective while the other ranks went on to the next one (the module's
    ``on_train_epoch_end``): a deadlock on the first epoch of every DDP search. This bar
    reads the metrics on *every* rank at that point, so all ranks compute the same pending
    values in the same order, then draws on rank 0 as before.
    """

    def get_metrics(self, trainer, pl_module) -> dict:  # noqa: D102
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the run folder's number: not a metric
        return items

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: D102
        if trainer.world_size > 1:
            trainer.progress_bar_metrics  # noqa: B018 - the read runs the pending reductions
        super().on_train_epoch_end(trainer, pl_module)


class RunSummary(RichModelSummary):
    """The model summary at the start of a run: each top-level module's type, parameters
    and mode, the totals, and the network's MACs per clip (one inference forward at the
    data's clip, attention counted: :func:`supernet.counting.count_flops`). Lightning's own
    prints a FLOPs column that reads 0 unless the module sets an ``example_input_array``."""

    _macs: tuple[int, tuple[int, ...]] | None = None

    def on_fit_start(self, trainer, pl_module) -> None:  # noqa: D102
        self._macs = None
        dm = trainer.datamodule
        if trainer.is_global_zero and dm is not None and hasattr(dm, "crop_size"):
            shape = (1, 3, int(dm.num_frames), int(dm.crop_size), int(dm.crop_size))
            try:
                net = getattr(pl_module, "model", pl_module)
                self._macs = (count_flops(net, shape)["macs"], shape)
            except Exception:  # noqa: BLE001 - the summary must never stop a run
                self._macs = None
        super().on_fit_start(trainer, pl_module)

    def summarize(self, summary_data, total_parameters: int,  # noqa: D102
                  trainable_parameters: int, model_size: float, total_training_modes: dict,
                  total_flops: int, **kwargs) -> None:
        columns = [(name, values) for name, values in summary_data
                   if name != "FLOPs" or total_flops]
        table = Table(header_style="bold")
        for name, _ in columns:
            table.add_column(name, justify="right" if name in ("Params", "FLOPs") else "left")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        console.print(f"params: {trainable_parameters:,} trainable"
                      + (f", {frozen:,} frozen" if frozen else "")
                      + f" ({model_size:.1f} MB); modules in train mode "
                      f"{total_training_modes.get('train', 0)}, eval mode "
                      f"{total_training_modes.get('eval', 0)}"
                      + (f"; {self._macs[0] / 1e9:.2f} GMACs per clip "
                         f"{'x'.join(map(str, self._macs[1][1:]))} (attention counted)"
                         if self._macs else ""))


class _AttnasCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:  # noqa: D102
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.channels", "model.in_channels", apply_on="instantiate")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="checkpoint to resume (fit) or evaluate (validate/test)")
        parser.add_argument("--fuse_scores", type=list[str] | None, default=None,
                            help="retrain test: other runs' test_scores.pt to average with "
                                 "this run's per-video scores (late fusion, e.g. RGB + flow)")

    def before_instantiate_classes(self) -> None:  # noqa: D102
        prog = self.parser.prog.split(" [")[0]
        if _has_renamed_options(self.model_class):
            warn_renamed_options(self._get(self.config, "model"), prog)
        warn_renamed_backbone_kwargs(self._get(self.config, "model"), prog)

    def instantiate_trainer(self, **kwargs):  # noqa: D102
        # a rich progress bar (safe under DDP) unless the config disables bars or brings
        # its own
        cfg = self._get(self.config_init, "trainer", default={})
        given = cfg.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        extra = []
        if cfg.get("enable_progress_bar", True) is not False and not any(
                isinstance(c, ProgressBar) for c in given):
            extra.append(RankSafeRichProgressBar())
        if cfg.get("enable_model_summary", True) is not False and not any(
                isinstance(c, ModelSummary) for c in given):
            extra.append(RunSummary())
        if extra:
            defaults = self.trainer_defaults.get("callbacks", [])
            self.trainer_defaults = {**self.trainer_defaults, "callbacks": [*defaults, *extra]}
        return super().instantiate_trainer(**kwargs)


def _has_renamed_options(model_class: type) -> bool:
    """Whether ``model_class`` takes the renamed options under both names (the old ones as
    deprecated aliases; the two-stream search keeps its own ``supernet`` option)."""
    params = inspect.signature(model_class.__init__).parameters
    return all(old in params and new in params for old, new in RENAMED_OPTIONS.items())


def warn_renamed_options(model: Any, prog: str = "attnas") -> list[str]:
    """One warning line on stderr for each option of the parsed ``model`` settings given
    under its old name (:data:`supernet.hparams.RENAMED_OPTIONS`; the model accepts them
    for one release); returns the old names found."""
    found = [old for old in RENAMED_OPTIONS
             if model is not None and getattr(model, old, None) is not None]
    for old in found:
        print(f"{prog}: {deprecation_line(old, RENAMED_OPTIONS[old])}", file=sys.stderr)
    return found


def warn_renamed_backbone_kwargs(model: Any, prog: str = "attnas") -> list[str]:
    """One warning line on stderr for each key of the parsed ``model.backbone_kwargs``
    given under its old name (:data:`supernet.hparams.RENAMED_BACKBONE_KWARGS`: SlowFast's
    ``alpha`` is ``frame_ratio``), renamed there (:func:`supernet.hparams.
    rename_backbone_kwargs`); returns the old names found."""
    found = rename_backbone_kwargs(getattr(model, "backbone_kwargs", None))
    for old in found:
        line = deprecated_key_line(old, RENAMED_BACKBONE_KWARGS[old], "--model.backbone_kwargs")
        print(f"{prog}: {line}", file=sys.stderr)
    return found


def _error(kind: str, msg: str, code: int = 2) -> int:
    print(f"attnas {kind}: error: {msg}", file=sys.stderr)
    return code


def check_checkpoint(path: str, kind: str, supernet: str | None = None,
                     modality: str | None = None, option: str = "strategy") -> None:
    """Raise ``ValueError`` unless ``path`` is a readable attnas checkpoint of ``kind``
    (and, for a search checkpoint with ``supernet`` given, of that supernet mode; with
    ``modality`` given, trained on that input modality)."""
    p = need_file(path, "checkpoint")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same input error
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict)")
    trained_on = (ckpt.get("datamodule_hyper_parameters") or {}).get("modality", "rgb")
    if modality is not None and trained_on != modality:
        raise ValueError(f"{path} was trained on {trained_on} input, but this run reads "
                         f"{modality} (give --data.modality {trained_on})")
    found = ckpt.get("attnas_kind")
    if found != kind:
        raise ValueError(f"{path} is a {found or 'foreign'} checkpoint, expected a {kind} "
                         f"checkpoint")
    if supernet is not None:
        mode = ckpt.get("attnas_supernet", LEGACY_DEFAULTS["strategy"])  # before modes: darts
        if mode != supernet:
            raise ValueError(f"{path} is a checkpoint of a {mode} supernet search, but this "
                             f"run trains a {supernet} supernet (resume it with "
                             f"--model.{option} {mode})")


def _check_search(model, dm) -> None:
    """Before a search trains: its selection rule exists and, if it scores on validation
    data, the datamodule has some."""
    rule = check_rule(model.hparams.select)
    if get_rule(rule).needs_data and not len(dm.datasets.get("val") or []):
        raise ValueError(f"selection rule {rule!r} scores on validation data, and the "
                         f"dataset has no validation split (give --data.val_list, or use "
                         f"--model.select argmax)")
    if hasattr(model, "check_clip"):  # a two-stream stage: every frame ratio divides the clip
        model.check_clip(int(dm.hparams.num_frames))
    if model.hparams.cost_target is not None:  # a budget no cell can meet: refuse now
        crop = int(dm.hparams.crop_size)
        model.cost_budget((int(dm.hparams.num_frames), crop, crop))


def _check_batches(kind: str, dm, world: int) -> None:
    """Before a fit: every training loader makes at least one batch (with ``drop_last``, a
    set smaller than the batch size makes none and Lightning would exit 0 with no
    genotype and no checkpoint)."""
    names = ("weights", "arch") if kind == "search" else ("train",)
    for name in names:
        ds = dm.datasets.get(name)
        if ds is None:
            continue
        per_rank = -(-len(ds) // max(1, world))
        if dm.drop_last and per_rank < dm.batch_size:
            what = {"weights": "the weights half of the training set",
                    "arch": "the architecture half of the training set"}.get(
                        name, "the training set")
            raise ValueError(
                f"{what} has {len(ds)} videos" + (f" ({per_rank} per rank)" if world > 1 else "")
                + f", fewer than --data.batch_size {dm.batch_size}: no full training batch "
                f"(drop_last); use --data.batch_size {max(1, per_rank)} or less")


def _trains_nothing(trainer) -> str | None:
    """The option that makes a fit train no step (``--trainer.max_epochs 0``,
    ``--trainer.max_steps 0``, ``--trainer.limit_train_batches 0``), or None."""
    if trainer.max_epochs == 0:
        return "--trainer.max_epochs 0"
    if trainer.max_steps == 0:
        return "--trainer.max_steps 0"
    if trainer.limit_train_batches == 0:
        return "--trainer.limit_train_batches 0"
    return None


def _follow_default_root(cli, trainer_defaults: dict) -> None:
    """``--trainer.default_root_dir DIR`` moves every output under ``DIR`` (run folder,
    checkpoints): the logger's ``save_dir`` follows it unless it was set to something other
    than the default ``runs``."""
    trainer_cfg = cli.config.get("trainer") or {}
    root = trainer_cfg.get("default_root_dir")
    logger = cli.trainer.logger
    if not root or not isinstance(logger, RunLogger):
        return
    default = ((trainer_defaults.get("logger") or {}).get("init_args") or {}).get("save_dir")
    if str(logger.save_dir) == str(default):
        logger._save_dir = str(root)


def _untrained_ok(argv: list[str], ckpt_path: str | None) -> bool:
    """``validate`` / ``test`` evaluate a trained model: a missing ``--ckpt_path`` is a
    mistake (it would score random weights), ``--ckpt_path none`` says it is meant."""
    given = any(a == "--ckpt_path" or a.startswith("--ckpt_path=") for a in argv)
    return given and (ckpt_path is None or str(ckpt_path).lower() in ("none", "null"))


#: the hyper-parameters that decide a retrain model's layers
_ARCH_KEYS = ("backbone", "block", "positions", "block_kwargs", "backbone_kwargs")


def _model_of_checkpoint(cli, model_class: type, argv: list[str], ckpt_path: str):
    """For ``retrain validate/test``: the model built with the checkpoint's architecture.

    A setting the checkpoint disagrees with is taken from the checkpoint (so ``-c`` and
    ``--model.block`` need not be repeated), unless the command line gives it explicitly,
    which is refused in one line; a class count that differs from the data's is refused.
    """
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    saved = dict(ckpt.get("hyper_parameters") or {})
    if isinstance(saved.get("backbone_kwargs"), dict):  # saved under old names (alpha)
        saved["backbone_kwargs"] = dict(saved["backbone_kwargs"])
        rename_backbone_kwargs(saved["backbone_kwargs"])
    current = dict(cli.model.hparams)
    if saved.get("num_classes") not in (None, current.get("num_classes")):
        raise ValueError(f"{ckpt_path} was trained on {saved['num_classes']} classes, the data "
                         f"has {current.get('num_classes')}")
    differ = [k for k in _ARCH_KEYS if k in saved and saved[k] != current.get(k)]
    if not differ:
        return cli.model
    given = [k for k in differ if any(a == f"--model.{k}" or a.startswith(f"--model.{k}=")
                                      for a in argv)]
    if given:
        k = given[0]
        raise ValueError(f"{ckpt_path} was trained with {k} {saved[k]!r}, but --model.{k} says "
                         f"{current.get(k)!r}; leave --model.{k} out (it is read from the "
                         f"checkpoint) or give the matching checkpoint")
    print("note: using the checkpoint's " + ", ".join(f"{k} {saved[k]!r}" for k in differ)
          + " (the config says " + ", ".join(f"{current.get(k)!r}" for k in differ) + ")",
          file=sys.stderr)
    args = {k: v for k, v in current.items() if not k.startswith("_")}
    args.update({k: saved[k] for k in differ})
    return model_class(**args)


def run(kind: str, model_class: type, argv: list[str], trainer_defaults: dict) -> int:
    """Run ``attnas <kind> [subcommand] ...``; returns the exit code. Lightning's start-up
    lines (``Seed set to 0``, ``GPU available``) are held back until the input is checked:
    a refusal is the only line on stderr."""
    quiet_lightning()
    held = HeldBack().start()
    try:
        return _run(kind, model_class, argv, trainer_defaults, held)
    finally:
        held.drop()  # a refusal: its lines are not printed (released when a run starts)


def _run(kind: str, model_class: type, argv: list[str], trainer_defaults: dict,
         held) -> int:
    argv = list(argv)
    sub = "fit"
    if argv and argv[0] in SUBCOMMANDS:
        sub = argv.pop(0)
    elif argv and not argv[0].startswith("-"):
        return _error(kind, f"unknown subcommand {argv[0]!r}; expected one of "
                            f"{', '.join(SUBCOMMANDS)}")
    if kind == "search" and sub == "test":
        return _error(kind, "search has no test stage; derive the cell and retrain it")
    saved_argv, sys.argv = sys.argv, sys.argv[:1]  # args come from `argv`, not the shell
    try:
        cli = _AttnasCLI(
            model_class, VideoDataModule, run=False, args=argv,
            trainer_defaults=trainer_defaults, seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": f"attnas {kind} [{'|'.join(SUBCOMMANDS)}]",
                           "exit_on_error": False,
                           "description": f"attnas {kind}: {model_class.__doc__.splitlines()[0]}"},
        )
    except SystemExit as e:  # --help or --print_config
        return int(e.code or 0)
    except argparse.ArgumentError as e:  # a value of the wrong type, an unknown option
        return _error(kind, parse_error_line(str(e)))
    except ImportError as e:  # e.g. --trainer.precision transformer-engine without the package
        return _error(kind, f"{str(e).strip().splitlines()[0]} (an option needs a package "
                            f"that is not installed)")
    except (ValueError, FileNotFoundError, KeyError, TypeError) as e:
        return _error(kind, str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
    finally:
        sys.argv = saved_argv
    ckpt_path = cli.config.get("ckpt_path")
    if sub in ("validate", "test"):
        if _untrained_ok(argv, ckpt_path):
            ckpt_path = None  # the untrained model, on purpose
        elif not ckpt_path:
            return _error(kind, f"{sub} scores a trained model: give --ckpt_path CKPT (or "
                                f"--ckpt_path none to score the untrained weights on purpose)")
    dm = cli.datamodule
    _follow_default_root(cli, trainer_defaults)
    try:  # the run folder's parent must be writable, or the run fails after it started
        logger = cli.trainer.logger
        check_writable(logger.root_dir if logger is not None and logger.root_dir
                       else cli.trainer.default_root_dir, create=False)
    except ValueError as e:
        return _error(kind, f"{e}; choose another --trainer.default_root_dir or "
                            "--trainer.logger.init_args.save_dir")
    fuse = list(cli.config.get("fuse_scores") or [])
    if fuse and not (kind == "retrain" and sub == "test"):
        return _error(kind, "--fuse_scores is an option of `attnas retrain test`")
    continued = (bool(ckpt_path) and sub == "fit" and isinstance(cli.trainer.logger, RunLogger)
                 and cli.trainer.logger.continue_run(ckpt_path))  # a resumed run's folder
    try:
        if ckpt_path:
            hp = cli.model.hparams
            option = "strategy" if "strategy" in hp else "supernet"  # two-stream: supernet
            check_checkpoint(ckpt_path, kind, hp.get(option) if kind == "search" else None,
                             str(getattr(dm, "modality", "rgb")), option)
            if kind == "retrain" and sub != "fit":
                cli.model = _model_of_checkpoint(cli, model_class, argv, ckpt_path)
        if cli.trainer.is_global_zero:
            dm.prepare_data()
        dm.setup("fit" if sub == "fit" else sub)
        if kind == "search" and sub == "fit":
            _check_search(cli.model, dm)
        if sub == "fit":
            _check_batches(kind, dm, int(cli.trainer.world_size))
        ratio = getattr(getattr(cli.model, "model", None), "frame_ratio", None)
        if isinstance(ratio, int) and dm.num_frames % ratio:
            raise ValueError(f"the clip's --data.num_frames {dm.num_frames} is not a multiple "
                             f"of the backbone's fast/slow frame_ratio={ratio}")
    except (ValueError, FileNotFoundError, KeyError, TooManyBrokenVideosError, SynthError) as e:
        return _error(kind, str(e).strip().splitlines()[0])
    if kind == "retrain" and sub == "test":
        try:
            for path in fuse:  # readable before the test runs
                load_scores(path)
        except ValueError as e:
            return _error(kind, str(e))
        log_dir = cli.trainer.log_dir or cli.trainer.default_root_dir
        cli.model.scores_path = str(Path(log_dir) / SCORES_FILE)
        cli.model.fuse_scores = fuse
    if sub == "fit":
        nothing = _trains_nothing(cli.trainer)
        if nothing:
            return _error(kind, f"{nothing} trains nothing (no checkpoint"
                                + (", no genotype" if kind == "search" else "")
                                + "); give at least 1")
    if continued:  # the killed run's rows after the checkpoint are logged again
        cli.trainer.logger.trim_to(ckpt_path)
    held.release()
    try:
        getattr(cli.trainer, sub)(cli.model, datamodule=dm, ckpt_path=ckpt_path)
    except FloatingPointError as e:
        return _error(kind, str(e), code=1)
    except (ValueError, FileNotFoundError) as e:
        return _error(kind, str(e).strip().splitlines()[0])
    except (SIGTERMException, RuntimeError) as e:
        # SIGTERM (a scheduler's stop, `timeout`, `kill`): Lightning stops at the next
        # step, or PyTorch reports the loader workers the same signal ended first
        if not getattr(cli.trainer, "received_sigterm", False):
            raise
        # the loader workers the same SIGTERM ended may be reaped only at interpreter exit,
        # where PyTorch's SIGCHLD handler would print a traceback after our one line
        if hasattr(signal, "SIGCHLD"):
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        return _error(kind, f"stopped by SIGTERM ({type(e).__name__}); " + _resume_hint(cli),
                      code=143)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # end the process group here, not in the interpreter's exit, where a DDP rank's gloo
        # threads were once torn down mid-flight ("terminate called without an active
        # exception", the rank aborted after its run had finished)
        torch.distributed.destroy_process_group()
    return 0


def _resume_hint(cli: LightningCLI) -> str:
    """Where the last finished epoch is and how to resume from it."""
    last = getattr(cli.trainer.checkpoint_callback, "last_model_path", "") or ""
    if last and Path(last).is_file():
        return f"the last finished epoch is in {last}: rerun with --ckpt_path {last} to resume"
    return "no epoch had finished, so there is no checkpoint to resume from"
