"""``attnas predict CKPT VIDEO... [--topk 5]``: class probabilities of video files from a
retrained network.

Each video is read the way the test stage reads it -- ``test_clips`` evenly spread clips x
``test_crops`` crops (the checkpoint's data settings, or ``--clips`` / ``--crops``), each
``num_frames`` frames at ``sampling_rate``, resized, cropped and normalised as in training
-- and the softmax probabilities are averaged over the views. Class names come from the
checkpoint (saved with the run's data). A video that cannot be read gets one line on
stderr and the others are still predicted (exit code 1 then; 2 for bad arguments).

``--attention DIR`` also draws, per video, where the inserted blocks attend
(:mod:`supernet.app.attention_maps`: map ops' maps, the mean attention dot-product ops and
non-local blocks give each key) as a PNG grid and an animated GIF.

Output, one line per video::

    clip.mp4: red_first 0.81 | blue_first 0.12 | green_first 0.05 | yellow_first 0.02

or one JSON object per line with ``--json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from datamodules.datasets import VideoClipDataset, VideoRecord
from datamodules.decode import DecodeError
from datamodules.transforms import KINETICS_MEAN, KINETICS_STD, EvalTransform
from supernet.paths import check_writable
from supernet.retrain import VideoClassifier

from .attention_maps import attention_maps, save_attention
from .lightning_cli import check_checkpoint
from .parsing import OneLineParser

__all__ = ["predict_videos", "main"]


def _load(ckpt_path: str) -> tuple[torch.nn.Module, dict[str, Any], list[str]]:
    check_checkpoint(ckpt_path, "retrain")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model = VideoClassifier.load_from_checkpoint(ckpt_path, map_location="cpu").model.eval()
    data = dict(ckpt.get("datamodule_hyper_parameters") or {})
    classes = list((ckpt.get("VideoDataModule") or {}).get("classes") or [])
    n = int(ckpt["hyper_parameters"]["num_classes"])
    if len(classes) != n:
        classes = [str(i) for i in range(n)]
    return model, data, classes


def predict_videos(ckpt_path: str, videos: list[str], clips: int | None = None,
                   crops: int | None = None, batch: int = 8,
                   attention: str | Path | None = None
                   ) -> tuple[list[str], list[tuple[str, torch.Tensor | str]]]:
    """``(class names, [(video, probabilities (num_classes,) or the reason it failed)])``.
    With ``attention`` (a folder), also writes ``<video stem>_attention.png`` / ``.gif``
    there: where the inserted blocks attend on the first view
    (:mod:`supernet.app.attention_maps`).

    Raises:
        ValueError / FileNotFoundError: a bad checkpoint or view count.
    """
    model, data, classes = _load(ckpt_path)
    clips = int(clips if clips is not None else data.get("test_clips") or 1)  # 0 is not
    crops = int(crops if crops is not None else data.get("test_crops") or 1)  # the default
    if clips < 1:
        raise ValueError(f"--clips must be >= 1, got {clips}")
    if crops not in (1, 3):
        raise ValueError(f"--crops must be 1 or 3, got {crops}")
    crop = int(data.get("crop_size") or 224)
    tf = EvalTransform(crop, data.get("test_short_side"), crops,
                       data.get("mean") or KINETICS_MEAN, data.get("std") or KINETICS_STD)
    out: list[tuple[str, torch.Tensor | str]] = []
    for video in videos:
        ds = VideoClipDataset([VideoRecord(str(video), 0)], int(data.get("num_frames") or 8),
                              int(data.get("sampling_rate") or 1), sampler="uniform",
                              clips_per_video=clips, crops_per_clip=crops, transform=tf,
                              max_fail_fraction=0.0, name="predict")
        try:
            views = []
            for v in range(len(ds)):
                c, k = divmod(v, crops)
                views.append(tf(ds.load_clip(0, c), k))
        except DecodeError as err:
            out.append((str(video), " ".join(str(err).split())))
            continue
        probs = []
        with torch.no_grad():
            for i in range(0, len(views), batch):
                probs.append(model(torch.stack(views[i:i + batch])).float().softmax(-1))
        out.append((str(video), torch.cat(probs).mean(0)))
        if attention is not None:
            stem = Path(attention) / f"{Path(video).stem}_attention"
            _draw_attention(model, views[0], data, stem)
    return classes, out


def _draw_attention(model: torch.nn.Module, view: torch.Tensor, data: dict[str, Any],
                    stem: Path) -> None:
    maps = attention_maps(model, view[None])
    if not maps:
        raise ValueError("--attention: this network has no attention op or non-local block "
                         "to draw (A2 / AIA blocks are not drawn)")
    mean = torch.tensor(data.get("mean") or KINETICS_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(data.get("std") or KINETICS_STD).view(3, 1, 1, 1)
    frames = (view * std + mean).clamp(0, 1).permute(1, 2, 3, 0).numpy()
    save_attention(frames, maps, stem)


def main(argv: list[str]) -> int:
    """Entry point of ``attnas predict``."""
    p = OneLineParser(prog="attnas predict", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a retrain checkpoint (.ckpt)")
    p.add_argument("videos", nargs="+", help="video files")
    p.add_argument("--topk", type=int, default=5, help="labels shown per video (default 5)")
    p.add_argument("--clips", type=int, default=None, help="temporal views (default: test)")
    p.add_argument("--crops", type=int, default=None, help="spatial views, 1 or 3")
    p.add_argument("--json", action="store_true", help="one JSON object per video")
    p.add_argument("--attention", default=None, metavar="DIR",
                   help="also draw where the inserted blocks attend: DIR/<video>_attention"
                        ".png (frames x blocks) and .gif")
    try:
        args = p.parse_args(argv)
        if args.topk < 1:
            raise ValueError(f"--topk must be >= 1, got {args.topk}")
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        if args.attention is not None:
            check_writable(args.attention)
        classes, results = predict_videos(args.checkpoint, args.videos, args.clips, args.crops,
                                          attention=args.attention)
    except (ValueError, FileNotFoundError) as e:
        print(f"attnas predict: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    failed = 0
    for video, res in results:
        if isinstance(res, str):
            failed += 1
            print(f"attnas predict: skipped {video}: {res}", file=sys.stderr)
            continue
        top = res.topk(min(args.topk, len(classes)))
        pairs = [(classes[i], float(v)) for v, i in zip(top.values, top.indices)]
        if args.json:
            print(json.dumps({"video": video, "top": [{"label": c, "p": round(v, 4)}
                                                       for c, v in pairs]}))
        else:
            print(f"{Path(video).name}: " + " | ".join(f"{c} {v:.2f}" for c, v in pairs))
    return 1 if failed else 0
