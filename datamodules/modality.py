"""Input modalities: RGB, optical flow (OpenCV, computed once per video and cached on disk)
and RGB difference.

``data.modality``:

* ``rgb`` -- decoded frames, ``uint8 (T, H, W, 3)``;
* ``flow`` -- dense optical flow between consecutive frames of the video (OpenCV's
  Farneback, or DIS with ``flow_algorithm: dis``), ``uint8 (T, H, W, 2)`` (x, y). Flow is
  clipped to +-:data:`FLOW_BOUND` pixels and stored as ``round((u / bound + 1) * 127.5)``,
  as two-stream I3D does (so 0..255, no motion at 127.5; a horizontal flip negates x
  exactly as ``255 - q``). Frame t holds the flow from t to t+1 (the last frame repeats
  the one before it);
* ``rgbdiff`` -- the difference of consecutive sampled frames, ``(f[t+1] - f[t]) / 2 + 128``
  per channel, ``uint8 (T, H, W, 3)`` (cheap motion, no flow needed).

Flow is computed for the whole video the first time it is read (or for every video in
:meth:`FlowStore.prepare`, with a progress bar) and saved as ``<flow dir>/<settings>/<id>.npy``.
``<settings>`` is a digest of the algorithm, the bound and the format version, and the
folder holds a ``settings.json`` that is checked on open: a cache made with other settings
is never read -- it lives in another folder, or, if its ``settings.json`` disagrees, it is
deleted and rebuilt. ``<id>`` digests the video's path, size and modification time, so a
re-encoded video gets new flow.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_save_npy, atomic_write_text
from .decode import DecodeError

__all__ = ["MODALITIES", "FLOW_ALGORITHMS", "FLOW_BOUND", "modality_channels",
           "check_modality", "compute_flow", "rgb_difference", "FlowStore"]

MODALITIES: tuple[str, ...] = ("rgb", "flow", "rgbdiff")
FLOW_ALGORITHMS: tuple[str, ...] = ("farneback", "dis")
#: flow magnitudes are clipped here (pixels), as two-stream I3D's TV-L1 flow is
FLOW_BOUND = 20.0
_FORMAT = 1


def check_modality(modality: str) -> str:
    """``modality`` if known, else ``ValueError`` naming the accepted ones."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; accepted: {', '.join(MODALITIES)}")
    return modality


def modality_channels(modality: str) -> int:
    """Input channels of a modality (rgb 3, flow 2, rgbdiff 3)."""
    return {"rgb": 3, "flow": 2, "rgbdiff": 3}[check_modality(modality)]


def _quantise(flow: np.ndarray, bound: float) -> np.ndarray:
    q = (np.clip(flow, -bound, bound) / bound + 1.0) * 127.5
    return np.rint(q).astype(np.uint8)


def compute_flow(frames: np.ndarray, algorithm: str = "farneback",
                 bound: float = FLOW_BOUND) -> np.ndarray:
    """Dense flow of ``uint8 (T, H, W, 3)`` frames -> ``uint8 (T, H, W, 2)`` (see the
    module docstring). Deterministic for the same frames and algorithm."""
    import cv2

    if algorithm not in FLOW_ALGORITHMS:
        raise ValueError(f"unknown flow algorithm {algorithm!r}; accepted: "
                         f"{', '.join(FLOW_ALGORITHMS)}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 (T, H, W, 3) frames, got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    t, h, w, _ = frames.shape
    out = np.full((t, h, w, 2), 128, dtype=np.uint8)
    if t < 2:
        return out
    cv2.setNumThreads(1)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) \
        if algorithm == "dis" else None
    for i in range(t - 1):
        if dis is not None:
            flow = dis.calc(gray[i], gray[i + 1], None)
        else:
            flow = cv2.calcOpticalFlowFarneback(gray[i], gray[i + 1], None, pyr_scale=0.5,
                                                levels=3, winsize=15, iterations=3,
                                                poly_n=5, poly_sigma=1.2, flags=0)
        out[i] = _quantise(flow, bound)
    out[t - 1] = out[t - 2]
    return out


def rgb_difference(frames: np.ndarray) -> np.ndarray:
    """``uint8 (T + 1, H, W, 3)`` -> ``uint8 (T, H, W, 3)``: ``(f[t+1] - f[t]) / 2 + 128``."""
    d = frames[1:].astype(np.int16) - frames[:-1].astype(np.int16)
    return (d // 2 + 128).astype(np.uint8)


class FlowStore:
    """Whole-video optical flow, computed once per video and kept on disk.

    Args:
        directory: the flow cache folder (a subfolder per settings is made in it).
        algorithm: ``farneback`` | ``dis``.
        bound: flow clipping bound in pixels.
    """

    def __init__(self, directory: str | Path, algorithm: str = "farneback",
                 bound: float = FLOW_BOUND) -> None:
        if algorithm not in FLOW_ALGORITHMS:
            raise ValueError(f"unknown flow algorithm {algorithm!r}; accepted: "
                             f"{', '.join(FLOW_ALGORITHMS)}")
        self.algorithm = algorithm
        self.bound = float(bound)
        self.settings = {"format": _FORMAT, "algorithm": algorithm, "bound": self.bound}
        digest = hashlib.sha1(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()
        self.folder = Path(directory) / f"{algorithm}-{digest[:10]}"
        self._checked = False

    def _check_folder(self) -> None:
        """Create the settings folder, or rebuild it when its settings.json disagrees."""
        if self._checked:
            return
        meta = self.folder / "settings.json"
        if self.folder.is_dir():
            try:
                ok = json.loads(meta.read_text()) == self.settings
            except (OSError, ValueError):
                ok = False
            if not ok:  # made with other settings: never reuse it
                shutil.rmtree(self.folder, ignore_errors=True)
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(meta, json.dumps(self.settings, sort_keys=True))
        self._checked = True

    def path_for(self, video: str | Path) -> Path:
        """The cache file of ``video`` (its path, size and mtime are in the name)."""
        p = Path(video).resolve()
        st = p.stat()
        key = hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
        return self.folder / f"{key}.npy"

    def load(self, video: str | Path, decode: Callable[[], np.ndarray]) -> np.ndarray:
        """The video's flow ``uint8 (F, H, W, 2)`` (memory-mapped), computed with
        ``decode()`` (all its frames, ``uint8 (F, H, W, 3)``) if not cached yet."""
        self._check_folder()
        path = self.path_for(video)
        if path.is_file():
            try:
                return np.load(path, mmap_mode="r")
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a truncated file: compute it again
        flow = compute_flow(decode(), self.algorithm, self.bound)
        atomic_save_npy(path, flow)
        return flow

    def prepare(self, videos: Sequence[str], decode: Callable[[str], np.ndarray],
                progress: bool = True) -> dict[str, Any]:
        """Compute the flow of every video not cached yet (a rich progress bar when
        ``progress``); a video that fails to decode is left for the dataset to skip.
        Returns ``{"computed", "cached", "failed"}`` counts."""
        self._check_folder()
        todo = [v for v in videos if not self.path_for(v).is_file()]
        counts = {"computed": 0, "cached": len(videos) - len(todo), "failed": 0}
        if not todo:
            return counts
        bar = None
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            bar = Progress("[progress.description]{task.description}", BarColumn(),
                           MofNCompleteColumn(), TimeRemainingColumn(), transient=False)
            bar.start()
            task = bar.add_task(f"optical flow ({self.algorithm})", total=len(todo))
        try:
            for v in todo:
                try:
                    self.load(v, lambda v=v: decode(v))
                    counts["computed"] += 1
                except DecodeError:
                    counts["failed"] += 1
                if bar is not None:
                    bar.advance(task)
        finally:
            if bar is not None:
                bar.stop()
        return counts
