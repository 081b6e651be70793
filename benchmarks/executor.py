"""Where the benchmark's runs execute: Ray (default) or plain local subprocesses.

Every run is one ``python -m benchmarks.jobs SPEC RESULT`` process (isolation: a crash, a
leak or an out-of-memory kill takes down one row; the process's high-water RSS is the
run's peak memory). :class:`RayExecutor` starts that process inside a Ray task that asks
for the run's CPUs (its ``--threads``), so the runs are placed by Ray -- on this machine
with no setup (a local Ray started in-process, resources = the machine's cores), or on a
cluster with ``--address auto`` / ``ray://host:10001`` (the repository and the results
folder must then be on a filesystem every node sees, at the same path). A task that dies
(its node lost, the process killed) comes back as a failed run; the others go on.
:class:`LocalExecutor` runs the same process directly (``--executor local``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

__all__ = ["EXECUTORS", "LocalExecutor", "RayExecutor", "make_executor"]

EXECUTORS = ("ray", "local")


def _run_process(cmd: list[str], env: dict[str, str], cwd: str, log: str,
                 timeout: float | None) -> tuple[int | None, str | None]:
    """Run ``cmd`` with stdout/stderr into ``log``: ``(exit code, None)`` or ``(None,
    "timed out")``."""
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return None, "timed out"
    return proc.returncode, None


class LocalExecutor:
    """Runs each job as a subprocess of this process."""

    name = "local"

    def run(self, cmd: list[str], env: dict[str, str], cwd: Path, log: Path,
            timeout: float | None, cpus: int) -> tuple[int | None, str | None]:
        """``(exit code or None, error or None)`` of one job."""
        return _run_process(cmd, env, str(cwd), str(log), timeout)

    def close(self) -> None:  # noqa: D102
        return


class RayExecutor:
    """Runs each job as a subprocess inside a Ray task with ``num_cpus`` = its threads.

    Args:
        address: ``None`` (a local Ray in this process, with ``cpus`` CPUs) or a cluster
            address (``auto``, ``ray://host:10001``).
        cpus: CPUs of the local Ray.
    """

    name = "ray"

    def __init__(self, address: str | None, cpus: int) -> None:
        import os

        import ray  # optional (the [sweep] extra): only this executor needs it

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, in-process cluster
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False, "ignore_reinit_error": True}
        if address:
            kwargs["address"] = address
        else:  # a new private instance, even if another bench's Ray runs on this machine
            kwargs.update(address="local", num_cpus=cpus)
        try:
            ray.init(**kwargs)
        except Exception as err:  # noqa: BLE001 - unreachable cluster, bad address
            msg = " ".join(str(err).split())[:200]
            raise ValueError(f"cannot start or reach Ray ({address or 'local'}): "
                             f"{msg}") from None
        self._ray = ray
        self._task = ray.remote(max_retries=0)(_run_process)

    def run(self, cmd: list[str], env: dict[str, str], cwd: Path, log: Path,
            timeout: float | None, cpus: int) -> tuple[int | None, str | None]:
        """``(exit code or None, error or None)`` of one job, run by Ray."""
        ray = self._ray
        ref = self._task.options(num_cpus=cpus).remote(cmd, env, str(cwd), str(log), timeout)
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as err:  # the task or its node died
            return None, f"Ray task failed ({type(err).__name__})"

    def close(self) -> None:
        """Stop the local Ray (a cluster is left running)."""
        self._ray.shutdown()


def make_executor(kind: str, address: str | None, cpus: int) -> LocalExecutor | RayExecutor:
    """The executor named ``kind`` (:data:`EXECUTORS`); ``ValueError`` naming the problem."""
    if kind == "local":
        return LocalExecutor()
    if kind != "ray":
        raise ValueError(f"unknown executor {kind!r}; accepted: {', '.join(EXECUTORS)}")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError("--executor ray needs the ray package (make install brings it; "
                         "or use --executor local)") from None
    return RayExecutor(address, cpus)
