"""Video decoding with PyAV that decodes only what a clip needs.

:class:`VideoReader` opens a file once, reads its frame count / rate from the stream (or,
when the stream has none, as WebM/VP9 and Matroska do, from the stream or container
duration) and :meth:`VideoReader.get_frames` returns the frames at the requested indices as
``uint8`` ``(T, H, W, 3)`` RGB. It seeks to the keyframe at or before the first requested
frame (``seconds -> pts`` with the stream's time base), decodes forward, and stops right after
the last requested frame. Frames are identified by their presentation time
(``index = round((pts - start_pts) * time_base * fps)``), so the result is the same as
slicing a full decode (:func:`decode_all`).

Indices past the end of a video are clamped to its last frame by the samplers
(:mod:`datamodules.sampling`); if a file has fewer decodable frames than its header says
by more than a small tolerance (a truncated file) the read fails with :class:`DecodeError`.
Every failure to read a file (missing, zero-byte, not a video, no video stream, truncated,
undecodable) is raised as :class:`DecodeError` naming the file.

A **frame folder** (the "rawframes" layout: one folder of JPEG/PNG images per video) is read
by :class:`FrameFolderReader` through the same interface; :func:`open_video` picks the reader
for a path (a folder -> frames, a file -> PyAV), so clips are sampled the same way from both.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

__all__ = ["DecodeError", "VideoInfo", "VideoReader", "FrameFolderReader", "open_video",
           "probe", "read_frames", "read_all_frames", "decode_all", "frame_to_rgb",
           "IMAGE_EXTENSIONS"]

#: the frame images a frame folder may hold
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

#: how many frames a file may fall short of its header before it counts as truncated
#: (header frame counts derived from durations can be off by one or two).
SHORTFALL_TOLERANCE = 2


#: PyAV >= 17 converts pixel formats with a swscale thread pool unless told otherwise; on
#: the small frames of a clip that pool costs ~20x the conversion itself (measured with PyAV
#: 18.1 on a 32-frame 24x24 h264 video: 80 ms with the pool, 4 ms with one thread; the
#: output is the same). Older PyAV has no ``threads`` argument and converts on one thread.
_ONE_SWS_THREAD = int(av.__version__.split(".")[0]) >= 17


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as ``uint8`` ``(H, W, 3)`` RGB, converted on the calling thread."""
    if _ONE_SWS_THREAD:
        return frame.to_ndarray(format="rgb24", threads=1)
    return frame.to_ndarray(format="rgb24")


class DecodeError(RuntimeError):
    """A video file could not be read; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    """What :class:`VideoReader` knows about a file before decoding it."""

    path: str
    num_frames: int  #: frame count (from the stream, else estimated from the duration)
    fps: float  #: frames per second (average rate, else guessed rate)
    width: int
    height: int
    duration: float  #: seconds

    @property
    def frames_exact(self) -> bool:  # pragma: no cover - informational
        return self.num_frames > 0


def _fail(path: str | Path, why: str) -> DecodeError:
    return DecodeError(f"{path}: {why}")


class VideoReader:
    """An open video file. Use as a context manager or call :meth:`close`.

    Args:
        path: the video file (mp4, avi, webm, mkv, ... anything FFmpeg reads).
        threads: decoder threads; ``1`` (default) is fastest for short clips and inside
            DataLoader workers, ``0`` lets FFmpeg choose (slice threading).

    Raises:
        DecodeError: the file is missing, empty, not a video or has no video stream.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path = str(path)
        p = Path(path)
        if not p.is_file():
            raise _fail(path, "no such file")
        if p.stat().st_size == 0:
            raise _fail(path, "empty file (0 bytes)")
        try:
            self._container = av.open(self.path, metadata_errors="ignore")
        except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError) as err:
            raise _fail(path, f"cannot open as a video ({err})") from err
        try:
            if not self._container.streams.video:
                raise _fail(path, "no video stream")
            self._stream = self._container.streams.video[0]
            cc = self._stream.codec_context
            cc.thread_count = max(0, int(threads))
            if threads != 1:
                self._stream.thread_type = "SLICE"
            self.info = self._probe()
            self._fresh = True  # nothing decoded yet: reading from the start needs no seek
        except BaseException:
            self._container.close()
            raise

    # ------------------------------------------------------------------ metadata
    def _probe(self) -> VideoInfo:
        s = self._stream
        rate = s.average_rate or s.guessed_rate or s.base_rate
        if not rate or float(rate) <= 0:
            raise _fail(self.path, "the video stream has no frame rate")
        fps = float(rate)
        self._rate = Fraction(rate)
        self._time_base = s.time_base or Fraction(1, 1_000_000)
        self._start_pts = s.start_time if s.start_time is not None else 0
        duration = None
        if s.duration is not None and s.duration > 0:
            duration = float(s.duration * self._time_base)
        elif self._container.duration is not None and self._container.duration > 0:
            duration = self._container.duration / av.time_base  # microseconds -> s
        n = int(s.frames or 0)
        if n <= 0:
            if duration is None:
                raise _fail(self.path, "neither a frame count nor a duration in the header")
            n = int(round(duration * fps))
        if n <= 0:
            raise _fail(self.path, "the video stream has no frames")
        if duration is None:
            duration = n / fps
        return VideoInfo(self.path, n, fps, int(s.width), int(s.height), float(duration))

    @property
    def num_frames(self) -> int:
        """Frame count from the header (exact for MP4/AVI, estimated for WebM/MKV)."""
        return self.info.num_frames

    @property
    def fps(self) -> float:
        return self.info.fps

    # ------------------------------------------------------------------ index <-> time
    def index_to_pts(self, index: int) -> int:
        """Presentation timestamp (stream time base) of frame ``index``."""
        seconds = Fraction(index) / self._rate
        return self._start_pts + int(math.floor(seconds / self._time_base))

    def pts_to_index(self, pts: int) -> int:
        """Frame index of a presentation timestamp (rounded to the nearest frame)."""
        seconds = (pts - self._start_pts) * self._time_base
        return int(round(float(seconds * self._rate)))

    # ------------------------------------------------------------------ decoding
    def _decode_from(self, first: int, last: int, seek: bool):
        """Yield ``(index, frame)`` for decoded frames until ``last`` is passed."""
        if seek and first > 0:
            self._container.seek(self.index_to_pts(first), stream=self._stream,
                                 backward=True, any_frame=False)
        elif not self._fresh:
            self._container.seek(self._start_pts, stream=self._stream, backward=True,
                                 any_frame=False)
        self._fresh = False
        counter = 0
        for frame in self._container.decode(self._stream):
            idx = self.pts_to_index(frame.pts) if frame.pts is not None else None
            if idx is None:
                if seek and first > 0:
                    raise _NoPts
                idx = counter
            counter += 1
            yield idx, frame
            if idx >= last:
                return

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames at ``indices`` (any order, repeats allowed).

        Args:
            indices: frame indices in ``[0, num_frames)``.

        Returns:
            ``uint8`` array ``(len(indices), H, W, 3)``, RGB.

        Raises:
            DecodeError: undecodable data, or the file ends more than
                :data:`SHORTFALL_TOLERANCE` frames before a requested index (truncated).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError("get_frames needs at least one index")
        if idx.min() < 0:
            raise ValueError(f"negative frame index {int(idx.min())}")
        wanted = sorted(set(idx.tolist()))
        first, last = wanted[0], wanted[-1]
        try:
            try:
                got = self._collect(wanted, first, last, seek=True)
            except _SeekMissed:
                got = self._collect(wanted, first, last, seek=False)
            except _NoPts:
                got = self._collect(wanted, first, last, seek=False)
        except (av.FFmpegError, ValueError, OSError) as err:
            raise _fail(self.path, f"undecodable ({err})") from err
        if not got:
            raise _fail(self.path, f"no frame decodable at or after index {first} "
                                   f"(header says {self.num_frames} frames; truncated?)")
        last_got = max(got)
        if last - last_got > SHORTFALL_TOLERANCE:
            raise _fail(self.path, f"truncated: decoding stopped at frame {last_got} but the "
                                   f"header says {self.num_frames} frames (wanted {last})")
        # fill frames the decoder did not produce (duplicated pts, header off by one) with
        # the nearest earlier frame, else the nearest later one
        have = sorted(got)
        out_frames = []
        for i in idx.tolist():
            if i not in got:
                pos = np.searchsorted(have, i, side="right") - 1
                i = have[max(pos, 0)]
            out_frames.append(got[i])
        return np.stack(out_frames)

    def _collect(self, wanted: list[int], first: int, last: int, seek: bool) -> dict:
        want = set(wanted)
        got: dict[int, np.ndarray] = {}
        started = False
        for i, frame in self._decode_from(first, last, seek):
            if not started:
                started = True
                if seek and first > 0 and i > first:
                    raise _SeekMissed  # the demuxer landed after the clip start
            if i in want and i not in got:
                got[i] = frame_to_rgb(frame)
        return got

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SeekMissed(Exception):
    pass


class _NoPts(Exception):
    pass


def _natural_key(name: str) -> list:
    """``img_2.jpg`` before ``img_10.jpg``: digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class FrameFolderReader:
    """A folder of frame images read like a video (the rawframes layout).

    Frame ``i`` is the ``i``-th JPEG/PNG image in natural order of the names (``img_00001.jpg``,
    ``img_00002.jpg``, ...); when some names start with ``img_`` (mmaction2 keeps
    ``flow_x_*`` / ``flow_y_*`` next to them) only those are frames. Same interface as
    :class:`VideoReader`: ``num_frames``, ``fps``, ``info``, :meth:`get_frames`, a context
    manager.

    Args:
        path: the frame folder.
        threads: unused (images decode on the calling thread); kept for the interface.
        fps: the frame rate to report (a folder has none; 30 by default).

    Raises:
        DecodeError: the folder is missing or holds no frame image.
    """

    def __init__(self, path: str | Path, threads: int = 1, fps: float = 30.0) -> None:
        self.path = str(path)
        if not os.path.isdir(self.path):
            raise _fail(path, "no such frame folder")
        names = [e.name for e in os.scandir(self.path)
                 if e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file()]
        if any(n.startswith("img_") for n in names):
            names = [n for n in names if n.startswith("img_")]
        if not names:
            raise _fail(path, f"no frame images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
        self.files = [os.path.join(self.path, n) for n in sorted(names, key=_natural_key)]
        first = self._read(0)
        h, w = first.shape[:2]
        self.info = VideoInfo(self.path, len(self.files), float(fps), int(w), int(h),
                              len(self.files) / float(fps))

    @property
    def num_frames(self) -> int:
        """Number of frame images."""
        return self.info.num_frames

    @property
    def fps(self) -> float:
        return self.info.fps

    def _read(self, i: int) -> np.ndarray:
        img = cv2.imread(self.files[i], cv2.IMREAD_COLOR)
        if img is None:
            raise _fail(self.files[i], "not a readable JPEG/PNG image")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """The images at ``indices`` (any order, repeats allowed): ``uint8 (T, H, W, 3)``
        RGB. Raises :class:`DecodeError` for an unreadable image or one of another size."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError("get_frames needs at least one index")
        if idx.min() < 0:
            raise ValueError(f"negative frame index {int(idx.min())}")
        n = self.num_frames
        got = {i: self._read(min(i, n - 1)) for i in sorted(set(idx.tolist()))}
        size = (self.info.height, self.info.width)
        for i, img in got.items():
            if img.shape[:2] != size:
                raise _fail(self.files[min(i, n - 1)], f"frame of size {img.shape[1]}x"
                                                       f"{img.shape[0]}, the folder's first "
                                                       f"is {size[1]}x{size[0]}")
        return np.stack([got[i] for i in idx.tolist()])

    def close(self) -> None:
        """Nothing to close (kept for the interface)."""

    def __enter__(self) -> FrameFolderReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video(path: str | Path, threads: int = 1) -> VideoReader | FrameFolderReader:
    """The reader of ``path``: :class:`FrameFolderReader` for a folder, else
    :class:`VideoReader`. Raises :class:`DecodeError`."""
    if os.path.isdir(path):
        return FrameFolderReader(path, threads=threads)
    return VideoReader(path, threads=threads)


def probe(path: str | Path) -> VideoInfo:
    """Header information of a video or frame folder (no decoding of a video's frames).
    Raises :class:`DecodeError`."""
    with open_video(path) as r:
        return r.info


def read_frames(path: str | Path, indices: Sequence[int], threads: int = 1) -> np.ndarray:
    """Open ``path`` (a video or a frame folder), decode the frames at ``indices``:
    ``uint8`` ``(T, H, W, 3)``."""
    with open_video(path, threads=threads) as r:
        return r.get_frames(indices)


def read_all_frames(path: str | Path, threads: int = 1) -> np.ndarray:
    """Every frame of a video or a frame folder, read by :meth:`VideoReader.get_frames`:
    ``uint8`` ``(F, H, W, 3)`` (what optical flow is computed on). Raises
    :class:`DecodeError`."""
    with open_video(path, threads=threads) as reader:
        return reader.get_frames(np.arange(reader.num_frames))


def decode_all(path: str | Path, threads: int = 1) -> np.ndarray:
    """Decode every frame of a video in order: ``uint8`` ``(N, H, W, 3)``.

    The reference for :meth:`VideoReader.get_frames` and the "decode everything, then
    slice" baseline of ``benchmarks/decode.py``. Raises :class:`DecodeError`.
    """
    with VideoReader(path, threads=threads) as r:
        frames = []
        try:
            r._container.seek(r._start_pts, stream=r._stream, backward=True, any_frame=False)
            for frame in r._container.decode(r._stream):
                frames.append(frame_to_rgb(frame))
        except (av.FFmpegError, ValueError, OSError) as err:
            raise _fail(path, f"undecodable ({err})") from err
    if not frames:
        raise _fail(path, "no decodable frame")
    return np.stack(frames)
