"""Starting Ray for the project's runs: a private local instance or a cluster's address."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["start_ray"]


def start_ray(address: str | None, cpus: int) -> None:
    """Start a private local Ray with ``cpus`` CPUs (``address`` None) or connect to the
    cluster at ``address`` (``auto``, ``ray://host:10001``).

    Raises:
        ValueError: one line, when Ray cannot start or be reached; Ray is left shut down
            (a failed client connection would otherwise break the next start).
        ImportError: the ray package is missing.
    """
    import ray  # optional: the [sweep] extra

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, in-process cluster
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False, "ignore_reinit_error": True}
    if address:
        kwargs["address"] = address
    else:  # a new private instance, even if another Ray runs on this machine
        kwargs.update(address="local", num_cpus=cpus)
    try:
        ray.init(**kwargs)
    except Exception as err:  # noqa: BLE001 - unreachable cluster, bad address
        ray.shutdown()
        raise ValueError(f"cannot start or reach Ray ({address or 'local'}): "
                         f"{' '.join(str(err).split())[:200]}") from None
