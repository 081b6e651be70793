"""``attnas search`` and ``attnas retrain``: LightningCLIs with one-line errors.

Both are ``LightningCLI(..., run=False)``: this module parses the subcommand itself
(``fit`` / ``validate`` / ``test``), instantiates model, datamodule and trainer from YAML
configs and dotted overrides, checks the data and any ``--ckpt_path`` *before* training,
then calls the trainer. Input problems (unknown block or backbone, a missing data path, a
malformed genotype, a checkpoint of the wrong kind) end with one line on stderr and exit
code 2; a non-finite loss ends with one line and exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar
from pytorch_lightning.cli import LightningCLI

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

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: D102
        if trainer.world_size > 1:
            trainer.progress_bar_metrics  # noqa: B018 - the read runs the pending reductions
        super().on_train_epoch_end(trainer, pl_module)


class _AttnasCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:  # noqa: D102
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="checkpoint to resume (fit) or evaluate (validate/test)")

    def instantiate_trainer(self, **kwargs):  # noqa: D102
        # a rich progress bar (safe under DDP) unless the config disables bars or brings
        # its own
        cfg = self._get(self.config_init, "trainer", default={})
        given = cfg.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        if cfg.get("enable_progress_bar", True) is not False and not any(
                isinstance(c, ProgressBar) for c in given):
            defaults = self.trainer_defaults.get("callbacks", [])
            self.trainer_defaults = {**self.trainer_defaults,
                                     "callbacks": [*defaults, RankSafeRichProgressBar()]}
        return super().instantiate_trainer(**kwargs)


def _error(kind: str, msg: str, code: int = 2) -> int:
    print(f"attnas {kind}: error: {msg}", file=sys.stderr)
    return code


def check_checkpoint(path: str, kind: str, supernet: str | None = None) -> None:
    """Raise ``ValueError`` unless ``path`` is a readable attnas checkpoint of ``kind``
    (and, for a search checkpoint with ``supernet`` given, of that supernet mode)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same input error
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict)")
    found = ckpt.get("attnas_kind")
    if found != kind:
        raise ValueError(f"{path} is a {found or 'foreign'} checkpoint, expected a {kind} "
                         f"checkpoint")
    if supernet is not None:
        mode = ckpt.get("attnas_supernet", "darts")
        if mode != supernet:
            raise ValueError(f"{path} is a checkpoint of a {mode} supernet search, but this "
                             f"run trains a {supernet} supernet (resume it with "
                             f"--model.supernet {mode})")


def _check_search(model, dm) -> None:
    """Before a search trains: its selection rule exists and, if it scores on validation
    data, the datamodule has some (the CLI layer may import derive)."""
    from derive.select import check_rule

    rule = check_rule(model.hparams.get("select", "argmax"))
    if rule != "argmax" and not len(dm.datasets.get("val") or []):
        raise ValueError(f"selection rule {rule!r} scores on validation data, and the "
                         f"dataset has no validation split (give --data.val_list, or use "
                         f"--model.select argmax)")


def run(kind: str, model_class: type, argv: list[str], trainer_defaults: dict) -> int:
    """Run ``attnas <kind> [subcommand] ...``; returns the exit code."""
    from datamodules import TooManyBrokenVideosError, VideoDataModule

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
                           "description": f"attnas {kind}: {model_class.__doc__.splitlines()[0]}"},
        )
    except SystemExit as e:  # --help, --print_config, or a parse error (already printed)
        return int(e.code or 0)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as e:
        return _error(kind, str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
    finally:
        sys.argv = saved_argv
    ckpt_path = cli.config.get("ckpt_path")
    dm = cli.datamodule
    if ckpt_path and sub == "fit" and isinstance(cli.trainer.logger, RunLogger):
        cli.trainer.logger.continue_run(ckpt_path)  # a resumed run continues its folder
    try:
        if ckpt_path:
            check_checkpoint(ckpt_path, kind, cli.model.hparams.get("supernet", "darts")
                             if kind == "search" else None)
        if cli.trainer.is_global_zero:
            dm.prepare_data()
        dm.setup("fit" if sub == "fit" else sub)
        if kind == "search" and sub == "fit":
            _check_search(cli.model, dm)
    except (ValueError, FileNotFoundError, KeyError, TooManyBrokenVideosError) as e:
        return _error(kind, str(e).strip().splitlines()[0])
    try:
        getattr(cli.trainer, sub)(cli.model, datamodule=dm, ckpt_path=ckpt_path)
    except FloatingPointError as e:
        return _error(kind, str(e), code=1)
    except (ValueError, FileNotFoundError) as e:
        return _error(kind, str(e).strip().splitlines()[0])
    return 0
