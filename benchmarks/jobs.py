"""The child side of ``benchmarks.run``: one search, one retrain or one step timing.

Each job runs in its own process, started by :mod:`benchmarks.run` as

    python -m benchmarks.jobs SPEC.json RESULT.json

``SPEC.json`` holds everything the job needs (model / data / trainer keyword arguments,
seed, threads, output paths); the job writes ``RESULT.json`` atomically and exits 0, or
writes ``{"status": "failed", "error": "<one line>"}`` and exits 1. A process per job
makes every row independent: a crash, a leak or an out-of-memory kill takes down one row
only, the decoded-clip memory is returned between rows, and the process's high-water RSS
is the peak memory of that one search (which an in-process run could not measure).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.common import one_line
from benchmarks.groups import search_default
from datamodules import VideoDataModule
from datamodules.atomic import atomic_path, atomic_write_text
from derive.callbacks import GenotypeWriter, reselect
from derive.draw import draw_cell
from derive.genotype import load_genotype, save_genotype
from derive.rules import check_rule, get_rule
from supernet.retrain import VideoClassifier
from supernet.search import SearchModule
from supernet.strategies.single_path import SinglePath

__all__ = ["run_job", "main"]


def _peak_rss_mib(who: int) -> float:
    """High-water RSS in MiB of this process (``RUSAGE_SELF``) or of its reaped children
    (``RUSAGE_CHILDREN``: the largest DataLoader worker)."""
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def _trainer(spec: dict[str, Any], log_dir: Path, callbacks: list | None = None):
    """A Trainer with the job's settings, CSV logs in ``log_dir``, no checkpoints, no bar."""
    from pytorch_lightning import Trainer
    from pytorch_lightning.loggers import CSVLogger

    kwargs = {"num_sanity_val_steps": 0, **spec["trainer"]}
    return Trainer(logger=CSVLogger(str(log_dir), name="", version=""),
                   callbacks=callbacks or [], enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, **kwargs)


def _datamodule(spec: dict[str, Any], search: bool):
    dm = VideoDataModule(**{**spec["data"], "search": search})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _metric(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else round(float(value), 6)


def run_search(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one supernet search; its selection rule (``model.select``) derives the cell at
    the end of ``fit`` (:class:`derive.callbacks.GenotypeWriter`), which is copied with its
    picture to ``spec['genotype']``. The trained supernet is kept as ``<run>/last.ckpt``.
    With ``spec['resume_dir']`` a search killed part-way resumes from its last finished
    epoch (see :func:`run_retrain`); its ``wall_s`` counts every attempt's training."""
    from pytorch_lightning import seed_everything

    seed_everything(spec["seed"], workers=True)
    run_dir = Path(spec["run_dir"])
    dm = _datamodule(spec, search=True)
    module = SearchModule(num_classes=dm.num_classes, **spec["model"])
    resume_path = _resume_path(spec)  # as for retrains: a killed search resumes
    ckpt_path, prior_s, done_epochs = _resumable(resume_path)
    callbacks = [GenotypeWriter(draw=True)]
    if resume_path is not None:
        callbacks.append(_epoch_saver(resume_path, prior_s))
    trainer = _trainer(spec, run_dir, callbacks)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    wall = time.perf_counter() - t0 + prior_s
    # the trained supernet, so another rule can re-select from it without searching again:
    # attnas derive <run>/last.ckpt --select RULE
    trainer.save_checkpoint(str(run_dir / "last.ckpt"))
    written = Path(trainer.log_dir or run_dir) / "genotype.json"
    if not written.is_file():
        raise RuntimeError(f"the search wrote no genotype ({written})")
    genotype = load_genotype(written)
    if resume_path is not None:
        resume_path.unlink(missing_ok=True)
    return {**_written(genotype, spec), "wall_s": round(wall, 2),
            "val_acc": _metric(trainer.callback_metrics, "val/acc"),
            "prior_s": round(prior_s, 2), "resumed_at_epoch": done_epochs}


def _written(genotype: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Copy the derived ``genotype`` (with the spec's provenance) and its picture to
    ``spec['genotype']``; returns the result fields that describe the cell and its
    selection."""
    genotype.provenance.update(spec.get("provenance", {}))
    out = Path(spec["genotype"])
    out.parent.mkdir(parents=True, exist_ok=True)
    save_genotype(genotype, out)
    draw_cell(genotype, out.with_suffix(".png"), title=spec.get("title"))
    selection = genotype.provenance.get("selection") or {}
    return {
        "status": "ok",
        "select_s": selection.get("seconds"),
        "flagged": selection.get("flagged"),
        "decisions": [{k: d.get(k) for k in ("node", "what", "choice", "runner_up", "margin",
                                               "ci", "significant", "factors")}
                      for d in selection.get("decisions", []) if d.get("runner_up")],
        "nodes": [[nd.op, nd.input] for nd in genotype.nodes],
        "alpha_softmax": genotype.provenance.get("alpha_softmax"),
        "beta_softmax": genotype.provenance.get("beta_softmax"),
    }


def run_reselect(spec: dict[str, Any]) -> dict[str, Any]:
    """Derive the cell of a search whose supernet another search already trained: load
    ``spec['checkpoint']`` (that search's ``last.ckpt``) and run this search's selection
    rule and options (``model.select*``) on it, with the same data and seed as the search
    would have used at the end of its ``fit`` (:func:`derive.callbacks.reselect`, the path
    ``attnas derive`` takes too). Settings the spec leaves out are SearchModule's defaults."""
    from pytorch_lightning import seed_everything

    seed_everything(spec["seed"], workers=True)
    model = spec["model"]
    options = {k: model[k] for k in ("select_val_batches", "select_calib_batches",
                                     "select_finetune_steps", "select_bn")
               if k in model}
    # this search's budget, or none: never the budget of the search that trained the
    # supernet (a group may re-select from a budgeted sibling's checkpoint)
    for key in ("cost_target", "cost_min_width"):
        options[key] = model[key] if key in model else search_default(key)
    rule = check_rule(str(model["select"] if "select" in model else search_default("select")))
    needs_data = get_rule(rule).needs_data
    genotype = reselect(spec["checkpoint"], rule, None, options,
                        lambda _: _datamodule(spec, search=True) if needs_data else None,
                        run=str(spec["run_dir"]))
    return _written(genotype, spec)


def torch_load(path: str) -> dict[str, Any]:
    """A Lightning checkpoint as a dict (CPU tensors)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def _resume_path(spec: dict[str, Any]) -> Path | None:
    """Where a retrain keeps its end-of-epoch checkpoint (``spec['resume_dir']``, named by
    the hash of everything that decides the run), or None when the caller gave no folder."""
    if not spec.get("resume_dir"):
        return None
    import hashlib

    decides = {k: v for k, v in spec.items() if k not in ("run_dir", "resume_dir", "threads")}
    digest = hashlib.sha1(json.dumps(decides, sort_keys=True, default=str).encode())
    return Path(spec["resume_dir"]) / f"{spec.get('kind', 'job')}-{digest.hexdigest()[:16]}.ckpt"


def _epoch_saver(path: Path, prior_s: float) -> Any:
    """A callback that saves the whole training state to ``path`` (temp file + rename) at
    the end of every training epoch but the last, with the seconds trained so far."""
    from pytorch_lightning import Callback

    class EpochSaver(Callback):
        def __init__(self) -> None:
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.current_epoch + 1 >= (trainer.max_epochs or 0):
                return  # the run is about to finish: nothing left to resume
            with atomic_path(path) as tmp:
                trainer.save_checkpoint(str(tmp))
            if os.environ.get(KILL_ENV) == str(trainer.current_epoch):  # tests: a session ends
                os.kill(os.getpid(), signal.SIGKILL)

        def on_save_checkpoint(self, trainer: Any, pl_module: Any,
                               checkpoint: dict[str, Any]) -> None:
            checkpoint["attnas_trained_s"] = prior_s + time.perf_counter() - self.t0

    return EpochSaver()


def _resumable(path: Path | None) -> tuple[str | None, float, int]:
    """``(checkpoint to resume from or None, seconds trained before, epochs done)``; a
    checkpoint that does not load (a kill while it was written) is dropped."""
    if path is None or not path.is_file():
        return None, 0.0, 0
    try:
        ckpt = torch_load(str(path))
        return str(path), float(ckpt.get("attnas_trained_s", 0.0)), int(ckpt["epoch"]) + 1
    except Exception:  # noqa: BLE001 - unreadable: train from the start
        path.unlink(missing_ok=True)
        return None, 0.0, 0


def run_retrain(spec: dict[str, Any]) -> dict[str, Any]:
    """Train a :class:`supernet.retrain.VideoClassifier` from scratch, then test the final
    weights (multi-view, video-level top-1). With ``spec['resume_dir']`` the training
    state is saved there after every epoch, and a run killed part-way (a session that
    ended) resumes from its last finished epoch instead of from scratch; ``prior_s`` and
    ``resumed_at_epoch`` in the result say so."""
    from pytorch_lightning import seed_everything

    seed_everything(spec["seed"], workers=True)
    dm = _datamodule(spec, search=False)
    module = VideoClassifier(num_classes=dm.num_classes, **spec["model"])
    resume_path = _resume_path(spec)
    ckpt_path, prior_s, done_epochs = _resumable(resume_path)
    callbacks = [] if resume_path is None else [_epoch_saver(resume_path, prior_s)]
    trainer = _trainer(spec, Path(spec["run_dir"]), callbacks)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    fit_s = time.perf_counter() - t0
    val = {k: float(v) for k, v in trainer.callback_metrics.items()}
    tested = trainer.test(module, datamodule=dm, verbose=False)
    test = tested[0] if tested else {}
    if test.get("test/video_top1") is None:
        raise RuntimeError("the test stage logged no test/video_top1")
    if resume_path is not None:
        resume_path.unlink(missing_ok=True)
    bad = int(test.get("test/nonfinite", 0.0))
    return {
        "status": "ok",
        # an ok row's note: clips whose logits overflowed in eval count as errors
        "error": f"{bad} test clips gave non-finite logits (counted as errors)" if bad else "",
        "video_top1": _metric(test, "test/video_top1"),
        "clip_top1": _metric(test, "test/top1"),
        "val_top1": _metric(val, "val/top1"),
        "train_top1": _metric(val, "train/top1"),
        "fit_s": round(fit_s, 2),
        "epochs": int(trainer.current_epoch),
        "prior_s": round(prior_s, 2),
        "resumed_at_epoch": done_epochs,
    }


def _timed(step: Any, steps: int) -> float:
    """Median seconds of ``step()`` over ``steps`` calls after one warm-up call."""
    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _batch(shape: list[int], classes: int):
    import torch

    g = torch.Generator().manual_seed(0)
    return (torch.randn(*shape, generator=g),
            torch.randint(0, classes, (shape[0],), generator=g))


def time_supernet(search_model: dict[str, Any], classes: int, shape: list[int], steps: int
                  ) -> tuple[float, float, float]:
    """(darts search iteration, weight step, single-path step) median seconds.

    As :class:`~supernet.search.SearchModule` trains per batch: ``darts`` (first order) is
    an architecture step (forward, gradients of alpha/beta only, Adam) then a weight step;
    ``uniform`` is the weight step alone (forward, backward, SGD on the weights);
    ``single_path`` pins one sampled op and input per node and takes a weight step.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    x, y = _batch(shape, classes)
    module = SearchModule(num_classes=classes, **search_model)
    sup = module.model
    w_opt = torch.optim.SGD(sup.weight_parameters(), lr=1e-3, momentum=0.9)
    arch = list(sup.arch_parameters())
    for p in arch:
        p.requires_grad_(True)
    a_opt = torch.optim.Adam(arch, lr=3e-4)

    def weight_step() -> None:
        w_opt.zero_grad(set_to_none=True)
        F.cross_entropy(sup(x), y).backward()
        for p in arch:
            p.grad = None
        w_opt.step()

    def search_iteration() -> None:
        a_opt.zero_grad(set_to_none=True)
        grads = torch.autograd.grad(F.cross_entropy(sup(x), y), arch, allow_unused=True)
        for p, g in zip(arch, grads):
            p.grad = g
        a_opt.step()
        weight_step()

    step = [0]

    def single_path_step() -> None:
        step[0] += 1
        sup.arch.set_restrictions(SinglePath.sample_path(sup.arch.num_nodes, step[0]))
        try:
            weight_step()
        finally:
            sup.arch.clear_restrictions()

    return (_timed(search_iteration, steps), _timed(weight_step, steps),
            _timed(single_path_step, max(steps, 8)))


def time_network(retrain_model: dict[str, Any], block: str, classes: int, shape: list[int],
                 steps: int) -> float:
    """Median seconds of one ordinary training step (forward, backward, SGD) of the
    retrain network with ``block``."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    x, y = _batch(shape, classes)
    net = VideoClassifier(num_classes=classes, **{**retrain_model, "block": block}).model
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return _timed(step, steps)


def run_steptime(spec: dict[str, Any]) -> dict[str, Any]:
    """Median time of a training step of the supernet and of the derived network (and of
    the network without attention), all on the same random batch ``spec['shape']``."""
    import torch

    shape, classes, steps = spec["shape"], spec["num_classes"], spec["steps"]
    it, ws, sp = time_supernet(spec["search_model"], classes, shape, steps)
    out = {"status": "ok", "shape": shape, "steps": steps, "threads": torch.get_num_threads(),
           "supernet_iteration_s": it, "supernet_weight_step_s": ws,
           "supernet_single_path_s": sp,
           "derived_step_s": time_network(spec["retrain_model"], spec["genotype"], classes,
                                          shape, steps),
           "none_step_s": time_network(spec["retrain_model"], "none", classes, shape, steps)}
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in out.items()}


def run_calibrate(spec: dict[str, Any]) -> dict[str, Any]:
    """Step times used by ``--plan`` to estimate the run before any run has finished:
    the supernet's search iteration at the search batch, and one training step of each
    block in ``spec['blocks']`` at the retrain batch."""
    import torch

    classes, steps = spec["num_classes"], spec["steps"]
    it, _, _ = time_supernet(spec["search_model"], classes, spec["search_shape"], steps)
    blocks = {b: round(time_network(spec["retrain_model"], b, classes, spec["retrain_shape"],
                                    steps), 5)
              for b in spec["blocks"]}
    return {"status": "ok", "threads": torch.get_num_threads(),
            "supernet_iteration_s": round(it, 5), "blocks": blocks}


#: fault injection for tests: a comma-separated list of run keys (``nonlocal``,
#: ``searched/s0``, ``steptime``) whose job raises at once
CRASH_ENV = "ATTNAS_BENCH_CRASH"
#: tests: a retrain with a resume folder kills itself after saving this epoch (0-based)
KILL_ENV = "ATTNAS_BENCH_KILL_AFTER_EPOCH"

JOBS = {"search": run_search, "reselect": run_reselect, "retrain": run_retrain,
        "steptime": run_steptime, "calibrate": run_calibrate}


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the job ``spec['kind']`` in this process; adds process wall time and peak RSS."""
    import torch

    torch.set_num_threads(int(spec.get("threads", 1)))
    if spec.get("key") in os.environ.get(CRASH_ENV, "").split(","):
        raise RuntimeError(f"injected crash ({CRASH_ENV})")
    t0 = time.perf_counter()
    result = JOBS[spec["kind"]](spec)
    result["total_s"] = round(time.perf_counter() - t0, 2)
    result["peak_rss_mib"] = _peak_rss_mib(resource.RUSAGE_SELF)
    result["worker_peak_rss_mib"] = _peak_rss_mib(resource.RUSAGE_CHILDREN)
    return result


def _write(path: Path, doc: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.jobs SPEC.json RESULT.json``; exit 0 on success, else 1."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m benchmarks.jobs SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text())
    try:
        result = run_job(spec)
    except BaseException as err:  # noqa: BLE001 - every failure becomes a failed row
        traceback.print_exc()
        _write(result_path, {"status": "failed", "error": one_line(err)})
        return 1
    _write(result_path, result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
