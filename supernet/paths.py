"""Output folders: say at once, in one line, when one cannot be written."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["check_writable"]


def check_writable(folder: str | Path) -> Path:
    """``folder``, created if missing, after checking a file can be written in it.

    Raises:
        ValueError: it cannot be created or written (read-only file system, a regular file
            on its path, no permission), in one line.
    """
    p = Path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
        test = p / f".attnas-write-test-{os.getpid()}"
        test.write_bytes(b"")
        test.unlink()
    except OSError as e:
        raise ValueError(f"cannot write to {p} ({e.strerror or type(e).__name__})") from None
    return p
