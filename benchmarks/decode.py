"""Decoding benchmark: seek-and-decode vs decode-everything, the DataLoader, the clip cache.

    python -m benchmarks.decode            # writes benchmarks/results/decode.md

1. A generated 10 s, 30 fps, 398x224 H.264 video (keyframe every 30 frames, and the
   libx264 default of 250). A 16-frame clip at sampling rate 4 (61 frames, 2 s) at a random
   start, RGB ``uint8`` out: (a) :meth:`VideoReader.get_frames` (seek to the keyframe before
   the clip, decode forward, stop after it) vs (b) decode every frame to RGB then slice, and
   (b') decode every frame, convert only the 16 needed. Clips/s, median of repeats.
2. The training loader on copies of that video (random clip, short side 128-160, random
   112 crop, flip, normalise): clips/s with 0, 1 and 2 workers.
3. The default synthetic benchmark (32 x 24 x 24 clips): loader clips/s with 0 / 1 / 2 workers,
   without and with the decoded-clip cache, against what the proxy search step consumes
   (``create_backbone("proxy", block="search")``, weights + architecture step, first order).
4. Feeding a GPU: a 256p (454x256) H.264 video, I3D-R50's 8x8 clips (8 frames at rate 8)
   scaled to a short side in [256, 320] and cropped to 224 (the Kinetics recipe): clips/s
   per loader worker (0, 1, 2 workers), i.e. how many workers a training step that consumes
   N clips/s needs (``benchmarks/gpu.py`` measures N on the GPU). ``--hd-only`` runs just
   this part and writes ``decode_256p.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from benchmarks.common import cpu_name
from datamodules.cache import ClipCache
from datamodules.datasets import VideoClipDataset, VideoRecord
from datamodules.decode import VideoReader, decode_all, frame_to_rgb
from datamodules.sampling import clip_indices, clip_span
from datamodules.synth import DEFAULTS, ensure_synthetic
from datamodules.transforms import TrainTransform
from supernet import create_backbone

__all__ = ["main", "make_video"]

T, RATE = 16, 4


def make_video(path: Path, seconds: int = 10, fps: int = 30, width: int = 398,
               height: int = 224, gop: int = 30) -> Path:
    """A moving-gradient + moving-squares + noise H.264 video (crf 23, veryfast)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": "23", "preset": "veryfast", "g": str(gop)}
        for i in range(seconds * fps):
            img = np.empty((height, width, 3), np.uint8)
            img[..., 0] = (xx + 3 * i) % 256
            img[..., 1] = (yy + 2 * i) % 256
            img[..., 2] = ((xx + yy) // 2 + i) % 256
            for k in range(4):
                x0, y0 = (37 * k + 5 * i) % (width - 40), (53 * k + 3 * i) % (height - 40)
                img[y0:y0 + 40, x0:x0 + 40] = (255, 255 - 60 * k, 60 * k)
            img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _median_rate(fn, repeats: int, per_call: int = 1) -> float:
    """Median calls/s (times ``per_call``) over ``repeats`` timed calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return per_call / statistics.median(times)


def _decode_rates(path: Path, repeats: int) -> dict[str, float]:
    with VideoReader(path) as r:
        n = r.num_frames
    span = clip_span(T, RATE)
    rng = np.random.default_rng(0)

    def seek() -> None:
        idx = clip_indices(int(rng.integers(0, n - span + 1)), T, RATE, n)
        with VideoReader(path) as reader:
            reader.get_frames(idx)

    def everything() -> None:
        idx = clip_indices(int(rng.integers(0, n - span + 1)), T, RATE, n)
        decode_all(path)[idx]

    def everything_convert_needed() -> None:
        idx = set(clip_indices(int(rng.integers(0, n - span + 1)), T, RATE, n).tolist())
        with av.open(str(path)) as c:
            st = c.streams.video[0]
            st.codec_context.thread_count = 1
            [frame_to_rgb(f) for i, f in enumerate(c.decode(st)) if i in idx]

    return {"seek": _median_rate(seek, repeats),
            "all": _median_rate(everything, max(3, repeats // 4)),
            "all_convert_needed": _median_rate(everything_convert_needed, max(3, repeats // 4))}


def _loader_rate(ds: VideoClipDataset, workers: int, batch: int, batches: int,
                 epochs: int = 1) -> float:
    """Clips/s of a DataLoader over ``batches`` batches (the first batch -- worker start --
    is not timed); with ``epochs > 1`` only the last epoch is timed (a warm cache)."""
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True,
                                         num_workers=workers, persistent_workers=workers > 0,
                                         drop_last=True)
    rate = 0.0
    for _ in range(epochs):
        it = iter(loader)
        next(it)
        t0 = time.perf_counter()
        got = 0
        for i, b in enumerate(it):
            got += len(b["label"])
            if i + 2 >= batches:
                break
        rate = got / (time.perf_counter() - t0)
    return rate


def _search_step_rate(batch: int, repeats: int) -> float:
    """Clips/s consumed by a first-order search step (weights batch + arch batch) of the
    proxy supernet on default synthetic clips."""
    model = create_backbone("proxy", 4, block="search")
    arch = list(model.arch_parameters())
    weights = list(model.weight_parameters())
    w_opt = torch.optim.SGD(weights, lr=0.01, momentum=0.9)
    a_opt = torch.optim.Adam(arch, lr=3e-4)
    x = torch.randn(batch, 3, DEFAULTS["frames"], DEFAULTS["size"], DEFAULTS["size"])
    y = torch.randint(0, 4, (batch,))

    def step() -> None:
        for opt in (a_opt, w_opt):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    return _median_rate(step, repeats, per_call=2 * batch)


def _hd_rates(tmp: Path, batches: int = 6) -> dict[int, float]:
    """Loader clips/s for 8x224x224 clips (8 frames at rate 8) from a 256p H.264 video,
    with 0, 1 and 2 workers (batch 8)."""
    video = make_video(tmp / "hd.mp4", seconds=6, width=454, height=256, gop=30)
    recs = [VideoRecord(str(video), 0)] * 64
    ds = VideoClipDataset(recs, num_frames=8, sampling_rate=8, sampler="random",
                          transform=TrainTransform(224, 256, 320))
    return {w: _loader_rate(ds, w, 8, batches) for w in (0, 1, 2)}


def _hd_main(args: argparse.Namespace, argv: list[str] | None) -> int:
    cmd = "python -m benchmarks.decode " + " ".join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        rates = _hd_rates(Path(tmp))
    per_worker = rates[1]
    md = ["# Feeding a GPU: 256p H.264 -> 8x224x224 clips", "",
          f"Command: `{cmd.strip()}`  ", f"Machine: {_machine()}  ",
          "A 454x256 H.264 video (keyframe every 30 frames); I3D-R50's 8x8 clip (8 frames "
          "at rate 8, 57 source frames), short side scaled to [256, 320], random 224 crop, "
          "flip, normalise; batch 8.", "", "| loader workers | clips/s |", "|---:|---:|"]
    md += [f"| {w} | {r:,.1f} |" for w, r in rates.items()]
    md += ["", f"One worker decodes about **{per_worker:,.1f} clips/s** here, so a training "
           f"step that consumes N clips/s needs about N / {per_worker:,.1f} workers (one core "
           "each). The GPU's N comes from `python -m benchmarks.gpu` on the GPU (not measured "
           "yet: no GPU was lent). Rows on a shared machine are noisy.", ""]
    out = Path(args.out).with_name("decode_256p.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
    print("\n".join(md))
    return 0


def _machine() -> str:
    cpu = cpu_name()
    return (f"{cpu}, {os.cpu_count()} cores, PyAV {av.__version__} (FFmpeg "
            f"{'.'.join(map(str, av.library_versions['libavcodec']))} libavcodec), torch "
            f"{torch.__version__}, Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decode", description=__doc__)
    p.add_argument("--repeats", type=int, default=20, help="timed repeats per measurement")
    p.add_argument("--synth", default="data/synth", help="synthetic benchmark folder "
                   "(generated with the defaults if missing)")
    p.add_argument("--out", default="benchmarks/results/decode.md")
    p.add_argument("--threads", type=int, default=2, help="torch threads (search step)")
    p.add_argument("--hd-only", action="store_true",
                   help="only part 4 (256p -> 8x224x224 per worker), to decode_256p.md")
    args = p.parse_args(argv)
    if args.hd_only:
        return _hd_main(args, argv)
    torch.set_num_threads(args.threads)
    cmd = "python -m benchmarks.decode " + " ".join(sys.argv[1:] if argv is None else argv)
    rows: list[tuple[str, str, str]] = []

    def row(what: str, value: float | None, note: str = "") -> None:
        text = "n/a" if value is None else f"{value:,.1f}"
        rows.append((what, text, note))
        print(f"{what:<62} {text:>9}  {note}", flush=True)

    print(f"{'measurement':<62} {'clips/s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        speedups = {}
        for gop in (30, 250):
            video = make_video(Path(tmp) / f"g{gop}.mp4", gop=gop)
            r = _decode_rates(video, args.repeats)
            speedups[gop] = r["seek"] / r["all"]
            row(f"(a) seek + decode the clip, 224p, keyframe every {gop}", r["seek"])
            row(f"(b) decode all 300 frames to RGB, then slice (gop {gop})", r["all"],
                f"(a)/(b) = {speedups[gop]:.1f}x")
            row(f"(b') decode all, convert only the 16 needed (gop {gop})",
                r["all_convert_needed"], f"(a)/(b') = {r['seek'] / r['all_convert_needed']:.1f}x")
        video = Path(tmp) / "g30.mp4"
        recs = [VideoRecord(str(video), 0)] * 64
        ds = VideoClipDataset(recs, num_frames=T, sampling_rate=RATE, sampler="random",
                              transform=TrainTransform(112, 128, 160))
        for w in (0, 1, 2):
            row(f"loader, 224p clips -> 16x112x112, {w} worker(s), batch 8",
                _loader_rate(ds, w, 8, 8))

        root = ensure_synthetic(args.synth)
        rates: dict[str, float] = {}
        lines = (root / "train.txt").read_text().split()[0::2][:512]
        srecs = [VideoRecord(str(root / rel), 0) for rel in lines]
        tf = TrainTransform(DEFAULTS["size"])
        for mode in ("none", "memory", "disk"):
            for w in (0, 1, 2):
                cache = ClipCache(mode, Path(tmp) / f"cache{w}")
                sds = VideoClipDataset(srecs, num_frames=DEFAULTS["frames"], sampler="random",
                                       transform=tf, cache=cache)
                rate = _loader_rate(sds, w, 32, len(srecs) // 32,
                                    epochs=1 if mode == "none" else 2)
                rates[f"synthetic {mode} {w}"] = rate
                shape = f"{DEFAULTS['frames']}x{DEFAULTS['size']}x{DEFAULTS['size']}"
                row(f"loader, synthetic {shape}, cache={mode}, {w} worker(s), batch 32",
                    rate, "" if mode == "none" else "(2nd epoch: warm cache)")
        step = _search_step_rate(16, max(3, args.repeats // 4))
        row("proxy search step consumes (weights 16 + arch 16 clips)", step,
            f"torch {args.threads} threads")
        plain = rates["synthetic none 0"]
    md = ["# Decoding benchmark", "", f"Command: `{cmd.strip()}`  ", f"Machine: {_machine()}  ",
          "Medians over repeated runs; clips/s (higher is better). A clip is 16 frames at "
          "sampling rate 4 (61 source frames, 2 s) for the 224p rows; the whole video "
          "for the synthetic rows.", "", "| measurement | clips/s | note |", "|---|---:|---|"]
    md += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    md += ["", f"Seek-and-decode vs decode-all-then-slice: **{speedups[30]:.1f}x** with a "
           f"keyframe every second (target >= 5x), {speedups[250]:.1f}x with libx264's "
           "default keyframe interval of 250 frames (then most clips start inside the first "
           "GOP and seeking can only skip the frames after the clip).", "",
           "Does the loader keep the proxy search step fed? "
           + (f"Yes: a first-order search step on default synthetic clips consumes "
              f"{step:,.0f} clips/s while one process decodes {plain:,.0f} clips/s without "
              f"any cache ({plain / step:.1f}x), and a warm cache removes decoding altogether."
              if step else "n/a (supernet not importable).")
           + " In a training run the workers share the 2 cores with the model, so use 1 "
           "worker (or 0) and the cache here.", "",
           "The `memory` cache is per process: with several workers each one holds the clips "
           "it happened to load, so its hit rate is ~1/workers in the second epoch and grows "
           "over epochs (keep `persistent_workers`); the `disk` cache is shared by workers, "
           "ranks and runs. Timings on a shared machine: other jobs ran at the same time, so "
           "single rows are noisy (e.g. 1 worker slower than 0).", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
