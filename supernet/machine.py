"""The machine at hand, as the measured caches key it: a readable device name and the folder
the caches live in.

:mod:`supernet.latency` (the latency table) and :mod:`supernet.dispatch` (kernels chosen by
measurement) keep their results in ``$ATTNAS_CACHE`` (default ``~/.cache/attnas``), one
JSON file each, keyed by :func:`device_name` among other things, so that two machines
sharing a home folder do not read each other's timings.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

__all__ = ["cache_dir", "device_name"]


def cache_dir() -> Path:
    """``$ATTNAS_CACHE``, else ``~/.cache/attnas`` (read at each call)."""
    return Path(os.environ.get("ATTNAS_CACHE") or Path.home() / ".cache" / "attnas")


@functools.cache
def _cpu_name() -> str:
    try:  # Linux: the CPU model
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} CPU"


def device_name(device: torch.device) -> str:
    """A readable name of ``device`` for a cache key and a table's title: the GPU's name,
    or the CPU model (read once per process)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_name()
