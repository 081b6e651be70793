"""Clip samplers: which frame indices of a video make a clip.

A clip is ``num_frames`` frames taken every ``sampling_rate`` frames, i.e. it spans
``(num_frames - 1) * sampling_rate + 1`` frames of the video.

* ``random`` (training): a start drawn uniformly from every start that fits;
* ``uniform`` (validation / testing): ``num_clips`` starts evenly spread over the video, the
  centres of ``num_clips`` equal segments (one clip = the centre clip). With
  ``num_clips`` temporal clips and 1 or 3 spatial crops this is the usual multi-view test.

**Videos shorter than a clip** are not an error: the start is 0 and indices past the last
frame are clamped to it, i.e. *the last frame is repeated* (no looping).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["clip_span", "clip_indices", "random_clip_start", "uniform_clip_starts",
           "SAMPLERS"]

SAMPLERS = ("random", "uniform")


def clip_span(num_frames: int, sampling_rate: int) -> int:
    """Number of video frames covered by a clip."""
    if num_frames < 1 or sampling_rate < 1:
        raise ValueError(f"num_frames and sampling_rate must be >= 1, got {num_frames}, "
                         f"{sampling_rate}")
    return (num_frames - 1) * sampling_rate + 1


def clip_indices(start: int, num_frames: int, sampling_rate: int, video_frames: int
                 ) -> np.ndarray:
    """Frame indices ``start, start + rate, ...`` (``num_frames`` of them), clamped to
    ``[0, video_frames - 1]`` (short videos repeat their last frame). ``int64 (num_frames,)``.
    """
    if video_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {video_frames}")
    idx = start + np.arange(num_frames, dtype=np.int64) * sampling_rate
    return np.clip(idx, 0, video_frames - 1)


def random_clip_start(video_frames: int, span: int, generator: torch.Generator | None = None
                      ) -> int:
    """A uniformly random start among ``video_frames - span + 1`` (0 when the video is
    shorter than ``span``). Uses torch's RNG (per-worker seeded by the DataLoader)."""
    room = max(video_frames - span, 0)
    if room == 0:
        return 0
    return int(torch.randint(room + 1, (1,), generator=generator).item())


def uniform_clip_starts(video_frames: int, span: int, num_clips: int) -> list[int]:
    """Starts of ``num_clips`` clips centred on ``num_clips`` equal segments of the video."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    room = max(video_frames - span, 0)
    return [int(round(room * (i + 0.5) / num_clips)) for i in range(num_clips)]
