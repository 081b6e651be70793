"""Up-front check of a split's files: which videos cannot even be opened.

A broken video is skipped when it is read (and counted), but a split with too many of them
used to fail only when that split was read -- for the validation set, after a whole
training epoch. :func:`probe_files` opens every file's header once when the datamodule is
set up (about 0.5 ms a file; the answers are cached in a small JSON file keyed by path,
size and modification time, so a later run only stats the files), so a split over its
``max_fail_fraction`` fails before training with one line naming the first bad files.
Files whose header is fine but whose frames do not decode are still caught when read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .atomic import atomic_write_text
from .decode import DecodeError, probe

__all__ = ["probe_files", "PROBE_CACHE_NAME"]

#: the probe cache's file name (in the data root)
PROBE_CACHE_NAME = ".attnas_probe.json"


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def probe_files(paths: Sequence[str], cache_file: str | Path | None = None) -> dict[str, str]:
    """Open every file's header; returns ``{path: reason}`` for those that fail (missing,
    not a video, no video stream). ``cache_file`` (optional) keeps the answers between
    runs, keyed by path, size and modification time; it is written atomically and
    silently skipped when it cannot be written."""
    cache: dict[str, list] = {}
    cache_path = Path(cache_file) if cache_file else None
    if cache_path is not None and cache_path.is_file():
        try:
            loaded = json.loads(cache_path.read_text())
            cache = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            cache = {}
    broken: dict[str, str] = {}
    changed = False
    for path in paths:
        stamp = _stamp(path)
        if stamp is None:
            broken[path] = f"{path}: no such file"
            continue
        hit = cache.get(path)
        if isinstance(hit, list) and len(hit) == 2 and hit[0] == stamp:
            if hit[1]:
                broken[path] = str(hit[1])
            continue
        try:
            probe(path)
            reason = ""
        except DecodeError as err:
            reason = str(err)
        cache[path] = [stamp, reason]
        changed = True
        if reason:
            broken[path] = reason
    if changed and cache_path is not None:
        try:
            atomic_write_text(cache_path, json.dumps(cache))
        except OSError:
            pass  # a read-only folder: probe again next time
    return broken
