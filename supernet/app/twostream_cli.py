"""``attnas search twostream``: the progressive two-stream search from one config.

    attnas search twostream -c configs/search/twostream.yaml [--out DIR] [--stage S]
                            [--force] [--key value ...]

Runs stage ``streams``, then ``fusion`` (with the streams found), then ``attention`` (with
both), each a LightningCLI fit of :class:`~.search.TwoStreamSearch` whose run folder is
``DIR/<stage>/version_N`` and whose result is ``DIR/<stage>.json`` (+ ``.png``). It is
resumable: a stage whose result exists is skipped (``--force`` reruns it), and a stage that
was interrupted continues from its last checkpoint. ``--stage S`` runs one stage only (it
needs the previous stage's result in ``DIR``). Every other option goes to the LightningCLI
(``--trainer.max_epochs 3``, ``--model.supernet single_path``, ...). The searched network is
then trained with ``attnas retrain fit --model.backbone twostream
--model.backbone_kwargs '{"arch": "DIR/attention.json"}'``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from datamodules import BrokenVideoMonitor
from derive.twostream import TwoStreamWriter
from supernet.twostream.search import TwoStreamSearch
from supernet.twostream.space import STAGES, load_arch, variables_of

from .checkpointing import RunCheckpoint
from .lightning_cli import run
from .threads import AllCoresOnceCached

__all__ = ["main", "trainer_defaults"]

_USAGE = ("usage: attnas search twostream -c CONFIG [--out DIR] [--stage "
          f"{{{','.join(STAGES)},all}}] [--force] [LightningCLI options]")


def trainer_defaults(root: str, stage: str) -> dict:
    """CSV logs, checkpoints and the stage's writer under ``root/<stage>/version_N``."""
    return {
        "logger": {"class_path": "supernet.app.run_logs.RunLogger",
                   "init_args": {"save_dir": root, "name": stage}},
        "callbacks": [BrokenVideoMonitor(),
                      RunCheckpoint(save_last=True, save_top_k=-1, every_n_epochs=1,
                                    filename="epoch{epoch:02d}",
                                    auto_insert_metric_name=False),
                      TwoStreamWriter(), AllCoresOnceCached()],
        "max_epochs": 3,
        "log_every_n_steps": 10,
        "num_sanity_val_steps": 0,
    }


def _error(msg: str) -> int:
    print(f"attnas search twostream: error: {msg}", file=sys.stderr)
    return 2


def _done(path: Path, stage: str) -> bool:
    """Whether ``path`` holds a finished result of ``stage`` (a broken file is an error)."""
    if not path.is_file():
        return False
    arch = load_arch(path)
    missing = [v.name for v in variables_of(stage) if v.name not in arch.decided]
    if missing:
        raise ValueError(f"{path} does not decide {', '.join(missing)} (not a result of "
                         f"stage {stage!r}); remove it or run with --force")
    return True


def _last_checkpoint(root: Path, stage: str) -> Path | None:
    found = sorted((root / stage).glob("version_*/checkpoints/last.ckpt"),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def main(argv: list[str]) -> int:
    """Entry point of ``attnas search twostream``; returns the exit code."""
    argv = list(argv)
    if argv and argv[0] == "fit":
        argv.pop(0)
    if any(a in ("-h", "--help") for a in argv):
        print(_USAGE + "\n\n" + (__doc__ or "").strip().split("\n\n", 1)[1] + "\n")
        return run("search", TwoStreamSearch, ["fit", "--help"], trainer_defaults("runs",
                                                                                  "streams"))
    out, stage_arg, force, rest = "runs/twostream", "all", False, []
    it = iter(argv)
    for a in it:
        key, eq, value = a.partition("=")
        if key in ("--out", "--stage"):
            if not eq:
                value = next(it, None)
                if value is None:
                    return _error(f"{key} needs a value")
            if key == "--out":
                out = value
            else:
                stage_arg = value
        elif a == "--force":
            force = True
        elif key in ("--model.stage", "--model.previous", "--model.out"):
            return _error(f"{key} is set by the progressive search; use --stage / --out")
        else:
            rest.append(a)
    if stage_arg != "all" and stage_arg not in STAGES:
        return _error(f"unknown stage {stage_arg!r}; accepted: {', '.join(STAGES)}, all")
    root = Path(out)
    stages = STAGES if stage_arg == "all" else (stage_arg,)
    if any(a.startswith("--print_config") for a in rest):  # the first stage's config only
        return run("search", TwoStreamSearch, ["fit", *rest, f"--model.stage={stages[0]}"],
                   trainer_defaults(str(root), stages[0]))
    for stage in stages:
        result = root / f"{stage}.json"
        previous = root / f"{STAGES[STAGES.index(stage) - 1]}.json" if stage != STAGES[0] \
            else None
        try:
            if previous is not None and not _done(previous, STAGES[STAGES.index(stage) - 1]):
                return _error(f"stage {stage!r} needs the previous stage's result {previous} "
                              f"(run --stage {STAGES[STAGES.index(stage) - 1]} first)")
            if not force and _done(result, stage):
                print(f"[twostream] stage {stage}: done ({result}), skipped "
                      f"(--force reruns it)", flush=True)
                continue
        except ValueError as err:
            return _error(str(err))
        args = ["fit", *rest, f"--model.stage={stage}", f"--model.out={result}"]
        if previous is not None:
            args.append(f"--model.previous={previous}")
        last = None if force else _last_checkpoint(root, stage)
        if last is not None and not any(a.startswith("--ckpt_path") for a in rest):
            print(f"[twostream] stage {stage}: resuming from {last}", flush=True)
            args.append(f"--ckpt_path={last}")
        print(f"[twostream] stage {stage} ({', '.join(v.name for v in variables_of(stage))})",
              flush=True)
        code = run("search", TwoStreamSearch, args, trainer_defaults(str(root), stage))
        if code:
            return code
        if not result.is_file():
            return _error(f"stage {stage} ended without a result (no epoch finished?)")
    return 0
