"""Clip transforms on tensors (no torchvision).

A decoded clip is ``uint8`` ``(T, H, W, 3)``; :func:`to_float` converts it once to
``float32`` ``(C, T, H, W)`` in ``[0, 1]`` and every other function takes and returns
``(C, T, H, W)``. :class:`TrainTransform` and :class:`EvalTransform` chain them the usual
way (SlowFast / pytorchvideo): short-side resize (random scale for training) -> crop
(random / centre / one of three) -> horizontal flip (training) -> normalise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["KINETICS_MEAN", "KINETICS_STD", "to_float", "short_side_resize", "random_crop",
           "center_crop", "three_crop", "hflip", "normalize", "TrainTransform",
           "EvalTransform"]

#: pytorchvideo / SlowFast Kinetics defaults (RGB, on [0, 1] values)
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


def to_float(clip: Tensor | np.ndarray) -> Tensor:
    """``uint8`` ``(T, H, W, C)`` -> ``float32`` ``(C, T, H, W)`` in ``[0, 1]`` (C = 3 for
    RGB and RGB difference, 2 for optical flow)."""
    if isinstance(clip, np.ndarray):
        clip = torch.from_numpy(clip)
    if clip.ndim != 4 or clip.shape[-1] not in (2, 3):
        raise ValueError(f"expected a (T, H, W, 3) or (T, H, W, 2) clip, got "
                         f"{tuple(clip.shape)}")
    return clip.permute(3, 0, 1, 2).float().div_(255.0)


def short_side_resize(x: Tensor, size: int) -> Tensor:
    """Resize ``(C, T, H, W)`` so that ``min(H, W) == size`` (bilinear, aspect kept)."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    if h <= w:
        nh, nw = size, max(1, int(round(w * size / h)))
    else:
        nh, nw = max(1, int(round(h * size / w))), size
    y = F.interpolate(x.transpose(0, 1), size=(nh, nw), mode="bilinear", align_corners=False,
                      antialias=nh < h)
    return y.transpose(0, 1).contiguous()


def _crop(x: Tensor, top: int, left: int, size: int) -> Tensor:
    return x[..., top:top + size, left:left + size]


def _check_crop(x: Tensor, size: int) -> None:
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from a {h}x{w} clip; resize first")


def random_crop(x: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """A random ``size x size`` window of ``(C, T, H, W)`` (same for every frame)."""
    _check_crop(x, size)
    h, w = x.shape[-2:]
    top = int(torch.randint(h - size + 1, (1,), generator=generator).item())
    left = int(torch.randint(w - size + 1, (1,), generator=generator).item())
    return _crop(x, top, left, size)


def center_crop(x: Tensor, size: int) -> Tensor:
    """The central ``size x size`` window of ``(C, T, H, W)``."""
    _check_crop(x, size)
    h, w = x.shape[-2:]
    return _crop(x, (h - size) // 2, (w - size) // 2, size)


def three_crop(x: Tensor, size: int, index: int) -> Tensor:
    """Crop ``index`` (0, 1, 2) of three ``size x size`` windows spread along the long side
    (left/top, centre, right/bottom), as SlowFast's 3-crop test. ``(C, T, H, W)`` in/out."""
    _check_crop(x, size)
    if index not in (0, 1, 2):
        raise ValueError(f"three_crop index must be 0, 1 or 2, got {index}")
    h, w = x.shape[-2:]
    if w >= h:
        top, left = (h - size) // 2, [0, (w - size) // 2, w - size][index]
    else:
        top, left = [0, (h - size) // 2, h - size][index], (w - size) // 2
    return _crop(x, top, left, size)


def hflip(x: Tensor) -> Tensor:
    """Mirror ``(C, T, H, W)`` left-right."""
    return x.flip(-1)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x - mean) / std`` per channel of ``(C, T, H, W)``."""
    m = torch.as_tensor(mean, dtype=x.dtype).view(-1, 1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).view(-1, 1, 1, 1)
    return (x - m) / s


class TrainTransform:
    """Training clip transform: ``uint8 (T, H, W, 3)`` -> ``float32 (3, T, crop, crop)``.

    Short side resized to a random integer in ``[min_short_side, max_short_side]``, a random
    ``crop_size`` crop, a horizontal flip with probability ``flip_prob``, normalisation.
    ``min/max_short_side`` default to ``crop_size`` (no scale jitter). ``flow=True``: the
    clip is optical flow (x, y) quantised around 127.5, and a flip also negates x.
    """

    def __init__(self, crop_size: int, min_short_side: int | None = None,
                 max_short_side: int | None = None, flip_prob: float = 0.5,
                 mean: Sequence[float] = KINETICS_MEAN, std: Sequence[float] = KINETICS_STD,
                 flow: bool = False) -> None:
        self.crop_size = crop_size
        self.min_short_side = min_short_side or crop_size
        self.max_short_side = max_short_side or max(self.min_short_side, crop_size)
        if not crop_size <= self.min_short_side <= self.max_short_side:
            raise ValueError("need crop_size <= min_short_side <= max_short_side, got "
                             f"{crop_size}, {self.min_short_side}, {self.max_short_side}")
        self.flip_prob = flip_prob
        self.mean, self.std = tuple(mean), tuple(std)
        self.flow = bool(flow)

    def __call__(self, clip: Tensor | np.ndarray, view: int = 0) -> Tensor:
        x = to_float(clip)
        side = int(torch.randint(self.min_short_side, self.max_short_side + 1, (1,)).item())
        x = random_crop(short_side_resize(x, side), self.crop_size)
        if self.flip_prob > 0 and torch.rand(()).item() < self.flip_prob:
            x = hflip(x)
            if self.flow:  # mirrored motion: x displacement changes sign (q -> 255 - q)
                x[0] = 1.0 - x[0]
        return normalize(x, self.mean, self.std).contiguous()


class EvalTransform:
    """Evaluation transform: ``uint8 (T, H, W, 3)`` -> ``float32 (3, T, crop, crop)``.

    Short side resized to ``short_side`` (default ``crop_size``), then the centre crop
    (``num_crops=1``) or crop ``view`` of :func:`three_crop` (``num_crops=3``), normalised.
    """

    def __init__(self, crop_size: int, short_side: int | None = None, num_crops: int = 1,
                 mean: Sequence[float] = KINETICS_MEAN, std: Sequence[float] = KINETICS_STD
                 ) -> None:
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
        self.crop_size = crop_size
        self.short_side = short_side or crop_size
        if self.short_side < crop_size:
            raise ValueError(f"short_side {self.short_side} < crop_size {crop_size}")
        self.num_crops = num_crops
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, clip: Tensor | np.ndarray, view: int = 0) -> Tensor:
        x = short_side_resize(to_float(clip), self.short_side)
        x = center_crop(x, self.crop_size) if self.num_crops == 1 else \
            three_crop(x, self.crop_size, view)
        return normalize(x, self.mean, self.std).contiguous()
