"""Paths a dataset is given: say what a path is and what was expected (``dataset root x
is a file, expected a directory``), never "does not exist" for a path that exists."""

from __future__ import annotations

from pathlib import Path

__all__ = ["need_dir", "need_file", "what_is"]


def what_is(path: str | Path) -> str:
    """What ``path`` is, as the end of a sentence: ``does not exist``, ``is a directory``,
    ``is a file``, ``is an empty file``, ``is not a file or a directory``; a missing path
    under a regular file says so (``does not exist (x is a file)``)."""
    p = Path(path)
    if p.is_dir():
        return "is a directory"
    if p.is_file():
        return "is an empty file" if p.stat().st_size == 0 else "is a file"
    if p.exists() or p.is_symlink():
        return "is a broken link" if p.is_symlink() and not p.exists() else \
            "is not a file or a directory"
    for parent in p.parents:
        if parent.is_file():
            return f"does not exist ({parent} is a file)"
        if parent.exists():
            break
    return "does not exist"


def need_file(path: str | Path, what: str) -> Path:
    """``Path(path)`` if it is a regular file; else ``FileNotFoundError``: ``{what} {path}
    {what_is}, expected a file``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {path} {what_is(p)}, expected a file")
    return p


def need_dir(path: str | Path, what: str) -> Path:
    """``Path(path)`` if it is a directory; else ``FileNotFoundError``: ``{what} {path}
    {what_is}, expected a directory``."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} {path} {what_is(p)}, expected a directory")
    return p
