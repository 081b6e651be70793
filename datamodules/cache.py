"""Optional cache of decoded clips (``uint8`` ``(T, H, W, 3)``).

Keyed by the file (absolute path, size, modification time, so an edited file misses) and
the frame indices of the clip (the sampling). Two back ends:

* ``memory`` -- an LRU dict bounded in bytes, private to each process (each DataLoader
  worker has its own; use ``persistent_workers`` so it survives epochs);
* ``disk`` -- one ``.npy`` file per clip under a directory, written atomically
  (temp file + rename), shared by workers, ranks and runs.

Useful when a dataset's clips are few and small (the synthetic benchmark: every epoch
decodes the same 16-frame clip of every video); pointless when random clips of long videos
rarely repeat. ``benchmarks/decode.py`` measures it.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_save_npy

__all__ = ["ClipCache", "CACHE_MODES"]

CACHE_MODES = ("none", "memory", "disk")


class ClipCache:
    """Decoded-clip cache.

    Args:
        mode: ``none`` | ``memory`` | ``disk``.
        directory: folder for ``disk`` mode (created if missing).
        max_memory_mb: bound of ``memory`` mode per process (least recently used clips go).
    """

    def __init__(self, mode: str = "none", directory: str | Path | None = None,
                 max_memory_mb: float = 1024.0) -> None:
        if mode not in CACHE_MODES:
            raise ValueError(f"cache mode must be one of {CACHE_MODES}, got {mode!r}")
        if mode == "disk" and not directory:
            raise ValueError("cache mode 'disk' needs a directory (cache_dir)")
        self.mode = mode
        self.directory = Path(directory) if directory else None
        if self.directory is not None and mode == "disk":
            self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_memory_mb * 2**20)
        self._mem: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @staticmethod
    def key(path: str | Path, indices: Sequence[int]) -> str:
        """Hex digest of (absolute path, size, mtime, indices)."""
        p = os.path.abspath(path)
        st = os.stat(p)
        idx = ",".join(str(int(i)) for i in indices)
        raw = f"{p}|{st.st_size}|{st.st_mtime_ns}|{idx}"
        return hashlib.sha1(raw.encode()).hexdigest()

    def get(self, path: str | Path, indices: Sequence[int]) -> np.ndarray | None:
        """The cached clip ``uint8 (T, H, W, 3)`` or ``None``."""
        if self.mode == "none":
            return None
        try:
            k = self.key(path, indices)
        except OSError:
            return None
        if self.mode == "memory":
            clip = self._mem.get(k)
            if clip is not None:
                self._mem.move_to_end(k)
        else:
            f = self.directory / f"{k}.npy"
            try:
                clip = np.load(f, allow_pickle=False)
            except (OSError, ValueError):
                clip = None
        if clip is None:
            self.misses += 1
        else:
            self.hits += 1
        return clip

    def put(self, path: str | Path, indices: Sequence[int], clip: np.ndarray) -> None:
        """Store ``clip`` (``uint8 (T, H, W, 3)``)."""
        if self.mode == "none":
            return
        try:
            k = self.key(path, indices)
        except OSError:
            return
        if self.mode == "memory":
            if clip.nbytes > self.max_bytes:
                return
            old = self._mem.pop(k, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._mem[k] = clip
            self._bytes += clip.nbytes
            while self._bytes > self.max_bytes:
                _, gone = self._mem.popitem(last=False)
                self._bytes -= gone.nbytes
        else:
            final = self.directory / f"{k}.npy"
            if final.exists():
                return
            atomic_save_npy(final, np.ascontiguousarray(clip))

    def __getstate__(self) -> dict:
        # DataLoader workers start with an empty memory cache (no copy of the parent's)
        state = self.__dict__.copy()
        state["_mem"] = OrderedDict()
        state["_bytes"] = 0
        return state
