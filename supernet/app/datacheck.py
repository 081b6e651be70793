"""``attnas data check``: what a dataset root holds and whether its loader can feed a GPU.

:func:`check_dataset` finds the videos of every split the way training will (any layout
:class:`~datamodules.VideoDataModule` reads: a released annotation format or a generic one),
opens every file's header (missing and broken files, clip lengths), then decodes and
transforms a sample of training clips at the clip shape of the run -- what one DataLoader
worker does per clip -- and times it. :func:`render` puts the report on one screen. Nothing
is written.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from datamodules.datamodule import VideoDataModule
from datamodules.decode import DecodeError, probe
from datamodules.sampling import clip_span

__all__ = ["DataCheck", "check_dataset", "render", "workers_needed"]

#: GPU step times (seconds) the report converts into loader workers
STEP_TIMES = (0.1, 0.25, 0.5, 1.0)


@dataclass
class DataCheck:
    """The findings of :func:`check_dataset`.

    Attributes:
        root: the dataset root; ``fmt``: its format (``generic`` for class folders / lists).
        classes: class names in index order.
        counts: ``{split: [videos of class 0, class 1, ...]}`` (found files only).
        missing: ``{split: [names]}`` listed in the annotations with no file.
        broken: ``{path: reason}`` of files whose header cannot be read.
        frames / seconds: per readable video, frame count and duration.
        span: frames one clip covers (``(T - 1) * rate + 1``).
        clip_shape: ``(C, T, H, W)`` of a training clip.
        clips_per_s: decoded + transformed training clips per second on one worker.
        timed: how many clips were timed.
        notes: remarks of the format reader (a split made from another, ...).
    """

    root: str
    fmt: str
    classes: list[str]
    counts: dict[str, list[int]]
    missing: dict[str, list[str]]
    broken: dict[str, str]
    frames: list[int]
    seconds: list[float]
    span: int
    clip_shape: tuple[int, int, int, int]
    clips_per_s: float
    timed: int
    broken_per_split: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def workers_needed(clips_per_s: float, batch_size: int, step_seconds: float) -> int:
    """Loader workers that keep a GPU step of ``step_seconds`` on ``batch_size`` clips fed,
    at ``clips_per_s`` per worker: ``ceil(batch_size / step_seconds / clips_per_s)``."""
    if clips_per_s <= 0:
        return 0
    return max(1, math.ceil(batch_size / step_seconds / clips_per_s))


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


def check_dataset(dm: VideoDataModule, clips: int = 24, console: Console | None = None
                  ) -> DataCheck:
    """Check the dataset of ``dm`` (its root, format, split and clip shape).

    Args:
        dm: the datamodule of the run (``num_workers`` and ``probe`` are not used).
        clips: training clips to decode and time (after one untimed warm-up clip).
        console: where the progress bars go (default: a new stderr console).

    Returns:
        a :class:`DataCheck`. Raises ``FileNotFoundError`` / ``ValueError`` for a bad root.
    """
    console = console or Console(stderr=True)
    with warnings.catch_warnings():  # missing clips are reported, not warned
        warnings.simplefilter("ignore")
        sources = dm.records()
    fd = dm.format_data
    classes = dm.classes
    order = ("train", "val", "test", "predict")
    sources = {k: sources[k] for k in sorted(sources, key=lambda k: (
        order.index(k) if k in order else len(order), k))}
    counts = {}
    for split, recs in sources.items():
        per = Counter(r.label for r in recs)
        counts[split] = [per.get(i, 0) for i in range(len(classes))]
    paths = sorted({r.path for recs in sources.values() for r in recs})
    broken: dict[str, str] = {}
    frames: list[int] = []
    seconds: list[float] = []
    with _progress(console) as bar:
        task = bar.add_task("opening files", total=len(paths))
        for p in paths:
            try:
                info = probe(p)
                frames.append(info.num_frames)
                seconds.append(info.duration)
            except DecodeError as err:
                broken[p] = str(err)
            bar.advance(task)
    dm.probe = False  # the headers were just read; nothing is written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup("fit")
    ds = dm.datasets["train"]
    ds.max_fail_fraction = 1.0  # a check reports broken files, it does not stop at them
    ds.mark_broken(broken)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(ds), generator=g).tolist()[: clips + 1]
    elapsed, timed, shape = 0.0, 0, None
    with _progress(console) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = bar.add_task("decoding clips", total=len(order))
        for k, i in enumerate(order):
            t0 = time.perf_counter()
            item = ds[i]
            if k:  # the first clip warms up the decoder and the allocator
                elapsed += time.perf_counter() - t0
                timed += 1
            shape = tuple(item["video"].shape)
            bar.advance(task)
    return DataCheck(
        root=str(dm.root), fmt=fd.format if fd else "generic", classes=classes, counts=counts,
        missing=dict(fd.missing) if fd else {}, broken=broken, frames=frames, seconds=seconds,
        span=clip_span(dm.num_frames, dm.sampling_rate), clip_shape=shape,  # type: ignore[arg-type]
        clips_per_s=timed / elapsed if elapsed > 0 else 0.0, timed=timed,
        broken_per_split={s: sum(r.path in broken for r in recs) for s, recs in
                          sources.items()},
        notes=(list(fd.notes) if fd else [])
        + (["the test split is the validation split (the release has no labelled test "
            "split)"] if sources.get("test") is sources.get("val") else []))


def _stats(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "-"
    a = np.asarray(values, dtype=float)
    return " / ".join(fmt.format(v) for v in (a.min(), np.median(a), a.max()))


def render(report: DataCheck, batch_size: int, step_seconds: float,
           console: Console | None = None) -> None:
    """Print ``report`` on one screen: splits, classes, files, lengths, throughput and the
    loader workers a GPU step of ``step_seconds`` on ``batch_size`` clips needs."""
    console = console or Console(soft_wrap=True)
    r = report
    fmt = "generic (class folders / list files)" if r.fmt == "generic" else r.fmt
    console.print(f"[bold]{r.root}[/bold]  format: {fmt}, {len(r.classes)} classes")
    t = Table("split", "videos", "missing", "broken", "per class min / median / max",
              header_style="bold")
    for split, per in r.counts.items():
        t.add_row(split, str(sum(per)), str(len(r.missing.get(split, []))),
                  str(r.broken_per_split.get(split, 0)), _stats(per, "{:.0f}"))
    console.print(t)
    if r.classes:
        splits = list(r.counts)
        shown = range(len(r.classes)) if len(r.classes) <= 12 else \
            sorted(range(len(r.classes)), key=lambda i: r.counts[splits[0]][i])[:6]
        ct = Table("class", *splits, header_style="bold",
                   title=None if len(r.classes) <= 12 else "the 6 smallest classes")
        for i in shown:
            ct.add_row(r.classes[i], *(str(r.counts[s][i]) for s in splits))
        console.print(ct)
    for split, names in r.missing.items():
        if names:
            console.print(f"missing ({split}): {len(names)}: {', '.join(names[:5])}"
                          + (" ..." if len(names) > 5 else ""))
    if r.broken:
        first = "; ".join(list(r.broken.values())[:3])
        console.print(f"broken: {len(r.broken)} files cannot be opened: {first}"
                      + (" ..." if len(r.broken) > 3 else ""))
    short = sum(f < r.span for f in r.frames)
    console.print(f"clip length (min / median / max): {_stats(r.frames, '{:.0f}')} frames, "
                  f"{_stats(r.seconds, '{:.1f}')} s; {short} of {len(r.frames)} videos are "
                  f"shorter than a clip's span of {r.span} frames (their last frame repeats)")
    c, tt, h, w = r.clip_shape
    console.print(f"decode throughput: [bold]{r.clips_per_s:.1f} clips/s per loader worker[/bold]"
                  f" at {c}x{tt}x{h}x{w} (decode + transform, {r.timed} clips timed)")
    need = workers_needed(r.clips_per_s, batch_size, step_seconds)
    steps = sorted({*STEP_TIMES, step_seconds})
    console.print(f"a GPU step of {step_seconds:g} s on {batch_size} clips needs "
                  f"[bold]{need} loader worker{'s' if need != 1 else ''}[/bold] "
                  f"(--data.num_workers per GPU); at "
                  + ", ".join(f"{s:g} s: {workers_needed(r.clips_per_s, batch_size, s)}"
                              for s in steps if s != step_seconds))
    for note in r.notes:
        console.print(f"note: {note}")
