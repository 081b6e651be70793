"""Atomic file writes: a temporary file in the target's folder, renamed over the target
(``os.replace``), so a reader sees the old file or the new one, never half of one, and an
interrupted write leaves no partial target behind.

The one helper of the project (datamodules is its lowest layer); the genotype format, the
run logs, the benchmarks and the table all write through it. Temporary names are
``.<name>.<random><suffix>`` (hidden, unique per writer, ending in ``.tmp`` by default).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["FILE_MODE", "atomic_path", "atomic_write_text", "atomic_save_npy"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Permissions for files we create: what ``open()`` would give under the umask (read once
#: at import, since ``os.umask`` can only be read by setting it).
FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (its parent folder created) for the caller to
    write; on a clean exit it replaces ``path``, on an exception it is removed.

    ``suffix`` ends the temporary name: a writer that picks its format by the file name
    (``savefig``, PIL) wants e.g. ``".tmp.png"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, FILE_MODE)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, newline: str | None = None) -> Path:
    """Write ``text`` (UTF-8; ``newline`` as :func:`open`'s) to ``path`` atomically, flushed
    to disk (fsync) before the rename. Creates the parent folder. Returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """:func:`numpy.save` ``array`` (no pickles) to ``path`` atomically. Returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    return path
