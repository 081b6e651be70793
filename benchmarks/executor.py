"""Where the benchmark's runs execute: Ray tasks, one fresh worker process per run.

:func:`start` starts a local Ray in this process (``--jobs`` x ``--threads`` CPUs) or joins a
cluster (``--address auto`` / ``ray://host:10001``: the repository and the results folder
must then be on a filesystem every node sees, at the same path). :func:`submit` sends one
run (a :mod:`benchmarks.jobs` spec) as a task asking for its ``--threads`` CPUs; the runs
it waits for are passed as their ObjectRefs, so Ray starts it once they have ended, and
:func:`resolve` then decides, from how they ended, what it runs (a retrain whose search
failed does not run; a search re-selects from a supernet that is trained). Each task runs
in its own worker process (``max_calls=1``): a crash, a leak or an out-of-memory kill takes
down one run, the decoded-clip memory is returned between runs, and the process's
high-water RSS is that run's peak memory. Its output goes to the run's log file; an
exception, a ``--timeout`` or a dead worker come back as a failed result with one line.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, one_line
from benchmarks.common import fmt_seconds as _fmt_s
from benchmarks.jobs import run_job
from benchmarks.ray_start import start_ray

try:  # the [sweep] extra; without it `attnas bench` says so in one line (start)
    import ray
except ImportError:  # pragma: no cover - the dev install has it
    ray = None

__all__ = ["start", "stop", "submit", "ended", "outcome", "resolve"]

#: environment the runs see as the bench does, wherever they execute (tests' fault injection)
FORWARDED_ENV_PREFIX = "ATTNAS_"


def start(address: str | None, cpus: int) -> str:
    """Start a private local Ray with ``cpus`` CPUs (``address`` None) or connect to the
    cluster at ``address``; returns where the runs execute, in words. ``ValueError`` (one
    line) when Ray is missing or cannot start or be reached."""
    if ray is None:
        raise ValueError("attnas bench needs the ray package (pip install 'attnas[sweep]'; "
                         "make install brings it)")
    start_ray(address, cpus)
    return f"ray ({address})" if address else f"ray (local, {cpus} CPUs)"


def stop() -> None:
    """Stop the local Ray, killing the runs still going (a cluster is left running)."""
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def resolve(spec: dict[str, Any], done: dict[str, bool]) -> tuple[dict[str, Any] | None, str]:
    """What a run does once the runs it waited for have ended (``done``: key -> ended ok).

    ``spec`` may hold ``requires`` ``[key, file]`` (run only if ``key`` ended ok and left
    ``file``), ``supernets`` ``[[key, checkpoint], ...]`` (a search re-selects from the
    first ended-ok one whose checkpoint exists, else searches in full) and ``cells``
    ``[[key, genotype], ...]`` (a step timing times the first such cell). Returns ``(the
    spec to run, "")`` or ``(None, why it cannot run)``.
    """
    spec = dict(spec)
    requires = spec.pop("requires", None)
    if requires is not None and not (done.get(requires[0]) and Path(requires[1]).is_file()):
        return None, f"its search {requires[0]} failed"
    for key, ckpt in spec.pop("supernets", []):
        if done.get(key) and Path(ckpt).is_file():
            provenance = {**spec.get("provenance", {}), "supernet_from": key}
            spec.update(kind="reselect", checkpoint=str(ckpt), provenance=provenance)
            break
    cells = spec.pop("cells", None)
    if cells is not None:
        found = [g for key, g in cells if done.get(key) and Path(g).is_file()]
        if not found:
            return None, "no searched cell to time"
        spec["genotype"] = found[0]
    return spec, ""


@contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2: Python, C and child
    processes alike) to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("w") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise ``TimeoutError`` in this (the task's main) thread after ``seconds``."""
    if not seconds:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"timed out after {_fmt_s(seconds)}")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _run(spec: dict[str, Any], log: str, env: dict[str, str], timeout: float | None,
         keys: list[str], known: dict[str, bool], *ended: tuple[dict[str, Any], Any]
         ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The Ray task: ``ended`` are the results of the runs ``keys`` (Ray resolved their
    ObjectRefs), ``known`` how the runs it depends on that finished before this invocation
    ended. Returns ``(result, the spec it ran or None)``; a run that cannot start (its
    search failed) returns a failed result and None."""
    done = {**known, **{k: r[0].get("status") == "ok" for k, r in zip(keys, ended)}}
    spec, why = resolve(spec, done)
    if spec is None:
        return {"status": "failed", "error": why}, None
    os.environ.update(env)
    os.chdir(REPO)  # the runs name repository files (baseline genotypes) relative to it
    run_dir = Path(spec["run_dir"])
    if run_dir.is_dir():  # a previous attempt's Lightning logs
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    with _output_to(Path(log)):
        try:
            with _deadline(timeout):
                result = run_job(spec)
        except Exception as err:  # noqa: BLE001 - every failure becomes a failed row
            traceback.print_exc()
            result = {"status": "failed", "error": one_line(err)}
    result["run_s"] = time.perf_counter() - t0
    return result, spec


_task = None if ray is None else ray.remote(max_calls=1, max_retries=0)(_run)


def submit(spec: dict[str, Any], log: Path, cpus: int, timeout: float | None,
           waits: dict[str, Any], known: dict[str, bool]) -> Any:
    """Send one run to Ray; returns its ObjectRef. ``waits``: key -> ObjectRef of the runs
    it starts after; ``known``: key -> ended ok, for those that ended before."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
    return _task.options(num_cpus=cpus).remote(spec, str(log), env, timeout, list(waits),
                                               known, *waits.values())


def ended(refs: list[Any], seconds: float) -> set[Any]:
    """Those of ``refs`` whose runs have ended, waiting at most ``seconds`` for all."""
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=seconds)
    return set(ready)


def outcome(ref: Any, spec: dict[str, Any], failed: list[str]
            ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(result, the spec it ran or None)`` of the ended run ``ref`` submitted as ``spec``
    (``failed``: the runs it waited for that did not end ok). A task whose worker or node
    died comes back as a failed result -- as does one that never started because a run
    it waited for died (Ray fails it with that run's error)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        if failed:
            return {"status": "failed", "error": f"its search {failed[0]} failed"}, None
        oom = isinstance(err, ray.exceptions.OutOfMemoryError)
        return {"status": "failed", "error": f"its process died ({type(err).__name__}"
                f"{'' if oom else '; out of memory?'})"}, spec
