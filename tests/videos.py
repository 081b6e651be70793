"""Helpers for the data tests: write small real video files with PyAV.

Frame ``i`` of a pattern video has a bright bar whose column and a grey level both encode
``i`` (see :func:`pattern_frame`), so a decoded frame's index can be read back
(:func:`frame_index`) independently of the decoder under test.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

#: (codec, container format, suffix, encoder options)
CODECS = {
    "h264-mp4": ("libx264", "mp4", ".mp4", {"crf": "4", "preset": "ultrafast", "g": "8",
                                            "threads": "1"}),
    "mpeg4-avi": ("mpeg4", "avi", ".avi", {"qscale": "1", "g": "8"}),
    "vp9-webm": ("libvpx-vp9", "webm", ".webm", {"crf": "4", "b": "0", "g": "8",
                                                 "deadline": "realtime", "cpu-used": "8"}),
    "h264-mkv": ("libx264", "matroska", ".mkv", {"crf": "4", "preset": "ultrafast", "g": "8",
                                                 "threads": "1"}),
}

STEP = 5  # grey level per frame index


def pattern_frame(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """``uint8 (H, W, 3)``: grey level ``STEP * i`` (mod 250) with a white bar at column
    ``(4 * i) % (W - 4)``."""
    img = np.full((height, width, 3), (STEP * i) % 250, np.uint8)
    x = (4 * i) % (width - 4)
    img[:, x:x + 4] = 255
    return img


def frame_index(frame: np.ndarray, n_frames: int) -> int:
    """The index ``i < n_frames`` whose :func:`pattern_frame` is closest to ``frame``."""
    h, w = frame.shape[:2]
    errs = [np.abs(frame.astype(np.int16) - pattern_frame(i, w, h)).mean() for i in
            range(n_frames)]
    return int(np.argmin(errs))


def write_pattern_video(path: str | Path, n_frames: int, kind: str = "h264-mp4",
                        width: int = 64, height: int = 48, fps: int = 25,
                        faststart: bool = False) -> Path:
    """Write ``n_frames`` :func:`pattern_frame` frames with codec/container ``kind``."""
    codec, fmt, _, opts = CODECS[kind]
    path = Path(path)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=fmt, options=options) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = width, height
        s.pix_fmt = "yuv420p"
        s.options = dict(opts)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(pattern_frame(i, width, height), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_audio_only(path: str | Path) -> Path:
    """An MP4 with one AAC audio stream and no video stream."""
    path = Path(path)
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), np.float32)
        for _ in range(4):
            f = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            f.sample_rate = 16000
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def truncate(path: str | Path, fraction: float) -> Path:
    """Cut a file to ``fraction`` of its size, in place."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path
