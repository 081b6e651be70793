"""Video datasets: where the videos are, what their labels are, and clip loading.

Two ways to describe a dataset:

1. **a folder per class** -- ``root/<class>/<video>``; classes are the sorted folder names;
2. **a list file** -- one ``path label`` line per video (pytorchvideo / SlowFast style;
   separated by whitespace, a comma or a tab; blank lines and ``#`` comments skipped, a
   ``path label`` header allowed). Relative paths are joined to ``path_prefix``, or, when
   it is empty, to the folder of the list file. Labels are class names or integers.

:class:`VideoClipDataset` turns records into clips: item ``i`` is view
``(clip, crop)`` of video ``i // views``; it returns
``{"video": float32 (C, T, H, W), "label": int64 (), "video_index": int64 ()}``.

**Broken files** (missing, zero-byte, not a video, truncated, undecodable) are skipped: a
:class:`BrokenVideoWarning` names the file, the failure is recorded in a status array in
shared memory (so DataLoader workers and the main process see the same count and a bad
file is not retried), and another video is loaded in its place so batches stay full
(training: a random one; evaluation: the next one, same view). When more than
``max_fail_fraction`` of the videos have failed, :class:`TooManyBrokenVideosError` names the
first failures.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from .cache import ClipCache
from .decode import DecodeError, open_video, read_all_frames
from .labels import LabelWarning, check_label_kinds, check_typos
from .modality import FlowStore, check_modality, rgb_difference
from .paths import need_dir, need_file
from .sampling import SAMPLERS, clip_indices, clip_span, random_clip_start, uniform_clip_starts
from .transforms import to_float

__all__ = ["VIDEO_EXTENSIONS", "VideoRecord", "BrokenVideoWarning", "TooManyBrokenVideosError",
           "scan_class_folders", "read_video_list", "label_records", "VideoClipDataset",
           "split_in_two", "stratified_order", "EpochSampler", "split_by_class",
           "classes_file"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")

_UNKNOWN, _OK, _FAILED = 0, 1, -1


class VideoRecord(NamedTuple):
    """One video: its path and its class index."""

    path: str
    label: int


class BrokenVideoWarning(UserWarning):
    """A video could not be read and was skipped."""


class TooManyBrokenVideosError(RuntimeError):
    """More than ``max_fail_fraction`` of a dataset's videos could not be read."""


# ---------------------------------------------------------------------------------- sources
def scan_class_folders(root: str | Path, extensions: Sequence[str] = VIDEO_EXTENSIONS
                       ) -> tuple[list[VideoRecord], list[str]]:
    """Records and class names of ``root/<class>/<video>`` (classes = sorted folder names,
    videos sorted within each). Raises ``FileNotFoundError`` / ``ValueError`` naming
    ``root`` if it is missing or holds no class folder with videos."""
    root = need_dir(root, "dataset root")
    exts = tuple(e.lower() for e in extensions)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    records: list[VideoRecord] = []
    kept: list[str] = []
    for name in classes:
        files = sorted(f for f in (root / name).rglob("*")
                       if f.is_file() and f.suffix.lower() in exts)
        if files:
            records += [VideoRecord(str(f), len(kept)) for f in files]
            kept.append(name)
    empty = [c for c in classes if c not in kept]
    if empty and records:
        warnings.warn(f"{root}: class folder(s) {', '.join(empty[:5])} hold no videos "
                      f"({', '.join(exts)}); they are not classes ({len(kept)} are)",
                      LabelWarning, stacklevel=2)
    if not records:
        raise ValueError(f"no videos ({', '.join(exts)}) found in class folders under {root}")
    return records, kept


def read_video_list(list_file: str | Path, path_prefix: str = "") -> list[tuple[str, str, int]]:
    """``(path, raw label, line number)`` of every entry of a ``path label`` list file.

    Raises ``FileNotFoundError`` naming the file if it is missing and ``ValueError`` naming
    file and line for a malformed line.
    """
    list_file = need_file(list_file, "list file")
    base = Path(path_prefix) if path_prefix else list_file.parent
    out: list[tuple[str, str, int]] = []
    text = list_file.read_text()
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if "," in s or "\t" in s:
            row = next(csv.reader(io.StringIO(s), delimiter="," if "," in s else "\t"))
            parts = [p.strip() for p in row if p.strip()]
        else:
            parts = _split_path_label(s)
        if len(parts) != 2:
            raise ValueError(f"{list_file}:{lineno}: expected 'path label', got {line!r}")
        path, label = parts
        if not out and label.lower() in ("label", "class", "labels") and \
                path.lower() in ("path", "video", "file", "filename", "video_path"):
            continue  # header
        p = Path(path)
        out.append((str(p if p.is_absolute() else base / p), label, lineno))
    return out


def _split_path_label(line: str) -> list[str]:
    """``path label`` split on whitespace where either may hold spaces: the path is the
    longest run of leading words that ends in a video extension (``a b.mp4 playing
    guitar`` -> ``["a b.mp4", "playing guitar"]``); otherwise the last word is the label."""
    words = line.split()
    for i in range(len(words) - 1, 0, -1):
        if words[i - 1].lower().endswith(VIDEO_EXTENSIONS):
            return [" ".join(words[:i]), " ".join(words[i:])]
    return line.rsplit(None, 1)


def _is_int(s: str) -> bool:
    return s.lstrip("-").isdigit()


def label_records(entries: Sequence[tuple[str, str, int]], classes: Sequence[str] | None,
                  source: str) -> list[VideoRecord]:
    """Map raw labels to class indices. A label is a class name of ``classes`` or an
    integer in ``[0, len(classes))``. ``ValueError`` naming ``source`` and the line for an
    unknown label."""
    classes = list(classes or [])
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for path, label, lineno in entries:
        if label in index:
            y = index[label]
        elif _is_int(label) and 0 <= int(label) < len(classes):
            y = int(label)
        else:
            known = ", ".join(classes[:10]) + (" ..." if len(classes) > 10 else "")
            raise ValueError(f"{source}:{lineno}: unknown label {label!r} (known: {known})")
        out.append(VideoRecord(path, y))
    return out


def classes_from_lists(lists: Sequence[Sequence[tuple[str, str, int]]],
                       source: str = "the training list") -> list[str]:
    """Class names implied by the *first* list (the training list, named ``source`` in
    errors): integer labels give ``"0" .. str(max)``, names their sorted set; so a label of
    val/test outside them is an error later (:func:`label_records`), never a new class.
    ``ValueError`` for names among integers or a one-off typo of a class name
    (:mod:`datamodules.labels`)."""
    first = lists[0] if lists else []
    if check_label_kinds(first, source):  # ValueError: names among integers
        present = {int(lab) for _, lab, _ in first}
        absent = sorted(set(range(max(present) + 1)) - present)
        if min(present) < 0:
            raise ValueError(f"{source}: negative label {min(present)}")
        if absent:
            warnings.warn(f"{source}: class(es) {absent[:10]} have no training video (the "
                          f"labels run 0..{max(present)})", LabelWarning, stacklevel=2)
        return [str(i) for i in range(max(present) + 1)]
    check_typos(first, source)  # ValueError: a one-off near copy of a class name
    return sorted({lab for _, lab, _ in first})


def split_in_two(labels: Sequence[int], seed: int) -> tuple[list[int], list[int]]:
    """Seeded, class-stratified split of ``range(len(labels))`` into two disjoint halves
    that cover it (the DARTS weights / architecture split). Sizes differ by at most the
    number of classes with an odd count."""
    g = torch.Generator().manual_seed(int(seed))
    labels_t = torch.as_tensor(list(labels), dtype=torch.long)
    a: list[int] = []
    b: list[int] = []
    flip = 0
    for c in torch.unique(labels_t).tolist():
        idx = torch.nonzero(labels_t == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)].tolist()
        half = len(idx) // 2 + (len(idx) % 2 if flip == 0 else 0)
        flip ^= len(idx) % 2
        a += idx[:half]
        b += idx[half:]
    return sorted(a), sorted(b)


def stratified_order(labels: Sequence[int], seed: int) -> list[int]:
    """A seeded order of ``range(len(labels))`` that interleaves the classes: every class
    is shuffled (seeded), then the items are merged by their relative position within their
    class, so any prefix holds each class in proportion to its size (a list sorted by class
    would give the first validation batches one class only).

    ``[0, 0, 0, 1, 1, 1]`` -> e.g. ``[2, 4, 0, 3, 1, 5]``; a permutation of the indices.
    """
    g = torch.Generator().manual_seed(int(seed))
    labels_t = torch.as_tensor(list(labels), dtype=torch.long)
    keyed: list[tuple[float, int, int]] = []
    for c in torch.unique(labels_t).tolist():
        idx = torch.nonzero(labels_t == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)].tolist()
        keyed += [((k + 0.5) / len(idx), int(c), i) for k, i in enumerate(idx)]
    return [i for _, _, i in sorted(keyed)]


class EpochSampler(DistributedSampler):
    """The training sampler: a seeded shuffle per epoch (``set_epoch``, which Lightning calls
    at every epoch start), one shard per DDP rank, and keys that carry the epoch.

    It yields ``epoch * len(dataset) + index``, and :class:`VideoClipDataset` seeds the
    randomness of that item (clip start, crop, scale, flip, a replacement for a broken
    file) from ``(seed, epoch, index)``. What a training batch holds is then a function of
    the seed and the epoch alone -- not of the loader workers' RNG streams, which a resumed
    run cannot restore -- so a run resumed from an epoch's checkpoint reads exactly the data
    the uninterrupted run read. Arguments are those of
    :class:`torch.utils.data.DistributedSampler` (``num_replicas=1, rank=0`` in a single
    process).
    """

    def __iter__(self):  # noqa: D105
        n = len(self.dataset)  # type: ignore[arg-type]
        base = self.epoch * n
        return (base + i for i in super().__iter__())


# ---------------------------------------------------------------------------------- dataset
class VideoClipDataset(Dataset):
    """Clips of videos, decoded with PyAV on demand.

    Args:
        records: the videos.
        num_frames: frames per clip (T).
        sampling_rate: stride between sampled frames.
        sampler: ``random`` (one random clip per video per epoch) or ``uniform``
            (``clips_per_video`` evenly spread clips).
        clips_per_video: temporal views per video (``uniform`` only).
        crops_per_clip: spatial views per clip (1 or 3); passed to ``transform`` as ``view``.
        transform: ``(uint8 (T, H, W, 3), view) -> float32 (C, T, H, W)``; default
            :func:`~datamodules.transforms.to_float` (no resize/normalise).
        max_fail_fraction: fraction of videos allowed to fail before
            :class:`TooManyBrokenVideosError`.
        cache: optional :class:`~datamodules.cache.ClipCache`.
        decode_threads: decoder threads per file (1 is best for short clips).
        name: shown in warnings and errors (``train``, ``val``...).
        seed: with the epoch and the item, seeds the item's randomness (see below).
        modality: ``rgb`` | ``flow`` | ``rgbdiff`` (:mod:`datamodules.modality`); flow
            needs ``flow_store``. A clip is then ``uint8 (T, H, W, 2)`` (flow) or the
            difference of consecutive sampled frames (rgbdiff).
        flow_store: the :class:`~datamodules.modality.FlowStore` flow is read from.

    ``len(ds) == len(records) * clips_per_video * crops_per_clip``; item ``i`` is video
    ``i // (clips * crops)``, temporal clip ``(i // crops) % clips``, crop ``i % crops``.
    A key ``k >= len(ds)`` (from :class:`EpochSampler`) is item ``k % len(ds)`` of epoch
    ``k // len(ds)``. Every random draw of an item (clip start, the transform's crop, scale
    and flip) comes from the torch RNG seeded by ``(seed, epoch, item)`` for that item
    alone, so it does not depend on which process loads it or on what it loaded before.
    """

    def __init__(self, records: Sequence[VideoRecord], num_frames: int, sampling_rate: int = 1,
                 sampler: str = "random", clips_per_video: int = 1, crops_per_clip: int = 1,
                 transform: Callable[[np.ndarray, int], Tensor] | None = None,
                 max_fail_fraction: float = 0.1, cache: ClipCache | None = None,
                 decode_threads: int = 1, name: str = "dataset", seed: int = 0,
                 modality: str = "rgb", flow_store: FlowStore | None = None) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if sampler == "random" and clips_per_video != 1:
            raise ValueError("the random sampler draws one clip per video (clips_per_video=1)")
        if clips_per_video < 1 or crops_per_clip < 1:
            raise ValueError("clips_per_video and crops_per_clip must be >= 1")
        if not 0.0 <= max_fail_fraction <= 1.0:
            raise ValueError(f"max_fail_fraction must be in [0, 1], got {max_fail_fraction}")
        if len(records) == 0:
            raise ValueError(f"the {name} set is empty")
        self.records = list(records)
        self.num_frames = int(num_frames)
        self.sampling_rate = int(sampling_rate)
        self.span = clip_span(self.num_frames, self.sampling_rate)
        self.sampler = sampler
        self.clips_per_video = int(clips_per_video)
        self.crops_per_clip = int(crops_per_clip)
        self.transform = transform
        self.max_fail_fraction = float(max_fail_fraction)
        self.cache = cache
        self.decode_threads = decode_threads
        self.name = name
        self.seed = int(seed)
        self.modality = check_modality(modality)
        if modality == "flow" and flow_store is None:
            raise ValueError("the flow modality needs a FlowStore (flow_store=)")
        self.flow_store = flow_store
        # per-video status, shared by DataLoader workers (fork or spawn) and the main process
        self._status = torch.zeros(len(self.records), dtype=torch.int8).share_memory_()
        self._reasons: dict[int, str] = {}
        self._frames: dict[int, int] = {}  # per-process memo of frame counts

    @property
    def views_per_video(self) -> int:
        return self.clips_per_video * self.crops_per_clip

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def __len__(self) -> int:
        return len(self.records) * self.views_per_video

    # ----------------------------------------------------------------------- failures
    def failed_count(self) -> int:
        """How many videos have failed to load so far (all processes)."""
        return int((self._status == _FAILED).sum())

    def failed_paths(self) -> list[str]:
        """Paths of the videos that failed so far, in dataset order."""
        return [self.records[i].path
                for i in torch.nonzero(self._status == _FAILED).flatten().tolist()]

    def mark_broken(self, reasons: dict[str, str]) -> int:
        """Mark the videos whose path is in ``reasons`` (``{path: why}``, e.g. from
        :func:`datamodules.check.probe_files`) as broken before anything is read: they are
        skipped like a file that fails to decode. Returns how many were marked.

        Raises:
            TooManyBrokenVideosError: more than ``max_fail_fraction`` of the videos.
        """
        marked = [v for v, r in enumerate(self.records) if r.path in reasons]
        for v in marked:
            self._status[v] = _FAILED
            self._reasons[v] = reasons[self.records[v].path]
        if len(marked) > self.max_fail_fraction * len(self.records):
            names = "; ".join(self._reasons[v] for v in marked[:3])
            raise TooManyBrokenVideosError(
                f"{len(marked)} of {len(self.records)} videos in the {self.name} set cannot be "
                f"opened (more than max_fail_fraction={self.max_fail_fraction}): {names}"
                + (" ..." if len(marked) > 3 else ""))
        return len(marked)

    def _mark_failed(self, v: int, err: Exception) -> None:
        self._status[v] = _FAILED
        self._reasons[v] = str(err)
        warnings.warn(f"skipping broken video in the {self.name} set: {err}",
                      BrokenVideoWarning, stacklevel=3)
        n_failed = self.failed_count()
        if n_failed > self.max_fail_fraction * len(self.records):
            first = torch.nonzero(self._status == _FAILED).flatten().tolist()[:5]
            names = "; ".join(self._reasons.get(i, self.records[i].path) for i in first)
            raise TooManyBrokenVideosError(
                f"{n_failed} of {len(self.records)} videos in the {self.name} set could not be "
                f"read (more than max_fail_fraction={self.max_fail_fraction}); first "
                f"failures: {names}")

    # ----------------------------------------------------------------------- loading
    def _indices(self, n_frames: int, clip: int) -> np.ndarray:
        if self.sampler == "random":
            start = random_clip_start(n_frames, self.span)
        else:
            start = uniform_clip_starts(n_frames, self.span, self.clips_per_video)[clip]
        return clip_indices(start, self.num_frames, self.sampling_rate, n_frames)

    def load_clip(self, v: int, clip: int = 0) -> np.ndarray:
        """Temporal clip ``clip`` of video ``v``: ``uint8 (T, H, W, C)`` in the dataset's
        modality. Raises :class:`~datamodules.decode.DecodeError` for a broken file."""
        if self.modality == "flow":
            return self._flow_clip(v, clip)
        if self.modality == "rgbdiff":
            return rgb_difference(self._frames_clip(v, clip, extra=1))
        return self._frames_clip(v, clip)

    def _flow_clip(self, v: int, clip: int) -> np.ndarray:
        path = self.records[v].path
        flow = self.flow_store.load(path, partial(read_all_frames, path, self.decode_threads))
        idx = self._indices(int(flow.shape[0]), clip)
        return np.ascontiguousarray(flow[idx])

    def _frames_clip(self, v: int, clip: int, extra: int = 0) -> np.ndarray:
        """Decoded frames of clip ``clip`` (plus ``extra`` frames after it, one sampling
        step apart, clamped to the video)."""
        path = self.records[v].path
        cache = self.cache if self.cache is not None and self.cache.enabled else None
        n = self._frames.get(v)
        idx = None
        if cache is not None and n is not None:
            idx = self._extend(self._indices(n, clip), extra, n)
            hit = cache.get(path, idx)
            if hit is not None:
                return hit
        with open_video(path, threads=self.decode_threads) as reader:
            n = self._frames[v] = reader.num_frames
            if idx is None:
                idx = self._extend(self._indices(n, clip), extra, n)
                if cache is not None:
                    hit = cache.get(path, idx)
                    if hit is not None:
                        return hit
            frames = reader.get_frames(idx)
        if cache is not None:
            cache.put(path, idx, frames)
        return frames

    def _extend(self, idx: np.ndarray, extra: int, n: int) -> np.ndarray:
        if not extra:
            return idx
        more = idx[-1] + self.sampling_rate * np.arange(1, extra + 1)
        return np.concatenate([idx, np.minimum(more, n - 1)])

    def _replacement(self, v: int, attempt: int) -> int:
        n = len(self.records)
        if self.sampler == "random" and attempt == 1:
            return int(torch.randint(n, (1,)).item())
        return (v + 1) % n

    def __getitem__(self, key: int) -> dict[str, Tensor]:
        if key < 0:
            raise IndexError(key)
        epoch, index = divmod(int(key), len(self))
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left alone
            torch.manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
            return self._item(index)

    def _item(self, index: int) -> dict[str, Tensor]:
        v, view = divmod(int(index), self.views_per_video)
        clip, crop = divmod(view, self.crops_per_clip)
        for attempt in range(1, len(self.records) + 2):
            if int(self._status[v]) != _FAILED:
                try:
                    frames = self.load_clip(v, clip)
                except DecodeError as err:
                    self._mark_failed(v, err)
                else:
                    if int(self._status[v]) == _UNKNOWN:
                        self._status[v] = _OK
                    x = self.transform(frames, crop) if self.transform else to_float(frames)
                    return {"video": x, "label": torch.tensor(self.records[v].label),
                            "video_index": torch.tensor(v)}
            v = self._replacement(v, attempt)
        raise TooManyBrokenVideosError(f"no readable video left in the {self.name} set; first "
                                       f"failures: {self.failed_paths()[:5]}")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name}: {len(self.records)} videos x "
                f"{self.views_per_video} views, T={self.num_frames}, rate={self.sampling_rate}, "
                f"sampler={self.sampler})")


def classes_file(root: str | Path) -> list[str] | None:
    """Class names recorded in ``root``: ``classes.json`` (as
    :meth:`~datamodules.VideoDataModule.save_classes` writes it) or the synthetic
    benchmark's ``meta.json``; None when neither is there. ``ValueError`` for a file that
    is not a JSON object with a ``classes`` list."""
    import json

    for name in ("classes.json", "meta.json"):
        f = Path(root) / name
        if f.is_file():
            try:
                names = json.loads(f.read_text()).get("classes")
            except (ValueError, AttributeError) as err:
                raise ValueError(f"{f}: not a JSON object with a 'classes' list ({err})"
                                 ) from err
            if isinstance(names, list) and names and all(isinstance(c, str) for c in names):
                return list(names)
    return None


def split_by_class(recs: Sequence[VideoRecord], seed: int, val_fraction: float,
                   test_fraction: float, group: Callable[[str], str] | None = None
                   ) -> dict[str, list[VideoRecord]]:
    """A folder-per-class dataset's videos split into ``train`` / ``val`` / ``test``,
    per class (stratified), in an order drawn from ``seed``: each class gives
    ``round(n * val_fraction)`` videos to val and ``round(n * test_fraction)`` to test.

    ``group`` (a video path -> its group, e.g. UCF101's ``gXX``: clips cut from one longer
    video) keeps a group in one split: whole groups are drawn, in a seeded order, until a
    split has at least its share of the class's videos (never all of its groups).
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, list[VideoRecord]] = {"train": [], "val": [], "test": []}
    for c in sorted({r.label for r in recs}):
        mine = [r for r in recs if r.label == c]
        n_val = int(round(len(mine) * val_fraction))
        n_test = int(round(len(mine) * test_fraction))
        if group is None:
            order = torch.randperm(len(mine), generator=g).tolist()
            out["val"] += [mine[i] for i in order[:n_val]]
            out["test"] += [mine[i] for i in order[n_val:n_val + n_test]]
            out["train"] += [mine[i] for i in order[n_val + n_test:]]
            continue
        groups: dict[str, list[VideoRecord]] = {}
        for r in mine:
            groups.setdefault(group(r.path), []).append(r)
        keys = list(groups)
        order = torch.randperm(len(keys), generator=g).tolist()
        taken = {"val": 0, "test": 0}
        for rank, i in enumerate(order):
            members = groups[keys[i]]
            left = len(order) - rank  # keep at least one group for train
            if taken["val"] < n_val and left > 1:
                split = "val"
            elif taken["test"] < n_test and left > 1:
                split = "test"
            else:
                split = "train"
            if split != "train":
                taken[split] += len(members)
            out[split] += members
    return out
