"""Paths a command is given: say at once, in one line, what a path is and what was expected.

* :func:`check_writable` -- an output folder can be written (without creating it, so a
  refused command leaves no empty folder behind);
* :func:`what_is` -- ``"does not exist"``, ``"is a directory"``, ``"is a file"``, ...;
* :func:`need_file` / :func:`need_dir` -- ``FileNotFoundError`` naming the path, what it is
  and what was expected (``checkpoint runs/x is a directory, expected a file``).
"""

from __future__ import annotations

import os
from pathlib import Path

from datamodules.paths import need_dir, need_file, what_is

__all__ = ["check_writable", "need_dir", "need_file", "output_file", "what_is"]


def output_file(path: str | Path, default_name: str) -> Path:
    """Where an ``-o PATH`` option writes: ``PATH/default_name`` when ``PATH`` is an
    existing directory (or ends in ``/``), else ``PATH``."""
    text = str(path)
    p = Path(path)
    if p.is_dir() or text.endswith(("/", os.sep)):
        return p / default_name
    return p


def check_writable(folder: str | Path, create: bool = True) -> Path:
    """``folder`` after checking a file can be written in it (created when ``create``;
    otherwise the nearest existing folder on its path is tested and nothing is left).

    Raises:
        ValueError: it cannot be created or written (read-only file system, a regular file
            on its path, no permission), in one line.
    """
    p = Path(folder)
    probe = p
    if not create:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise ValueError(f"cannot write to {p} ({probe} is a file, not a folder)")
    try:
        if create:
            p.mkdir(parents=True, exist_ok=True)
        test = probe / f".attnas-write-test-{os.getpid()}"
        test.write_bytes(b"")
        test.unlink()
    except OSError as e:
        raise ValueError(f"cannot write to {p} ({e.strerror or type(e).__name__})") from None
    return p
