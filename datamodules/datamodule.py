"""``VideoDataModule``: the LightningDataModule every stage uses (search, retrain, test).

Where the videos come from (``root``), in this order:

0. a released annotation format (:mod:`datamodules.formats`: UCF101, HMDB51, Kinetics,
   Something-Something v2, frame folders) -- named by ``format``, or detected from ``root``
   when ``format`` is ``auto`` and no list file is given;
1. list files -- ``train_list`` / ``val_list`` / ``test_list`` if given, else
   ``root/train.txt``, ``root/val.txt``, ``root/test.txt`` when ``root/train.txt`` exists
   (the synthetic benchmark's layout); ``path label`` lines, see
   :func:`~datamodules.datasets.read_video_list`. Class names (index order) come from
   ``classes``, else ``root/classes.json`` or ``root/meta.json`` (a ``"classes"`` list),
   else the lists (integer labels: ``"0" .. "K-1"``; names: the sorted names of the
   training list);
2. split class folders -- ``root/train/<class>/...``, ``root/val/<class>/...`` (and
   optionally ``root/test/<class>/...``; missing test -> val);
3. one class folder tree -- ``root/<class>/<video>``, split seeded and stratified into
   train / val / test by ``val_fraction`` / ``test_fraction``.

Batches are dicts ``{"video": float32 (N, C, T, H, W), "label": int64 (N,),
"video_index": int64 (N,)}``. In search mode the training set is split (seeded, stratified)
into two disjoint halves and :meth:`train_dataloader` returns
``{"weights": DataLoader, "arch": DataLoader}``, which Lightning's ``CombinedLoader`` turns
into batches ``{"weights": batch, "arch": batch}``. The test (and predict) loader yields
every view -- ``test_clips`` temporal clips x ``test_crops`` spatial crops -- of every video,
in video order, with ``video_index`` so scores can be averaged per video. Validation and
test videos are read in a seeded order that interleaves the classes
(:func:`~datamodules.datasets.stratified_order`), so the first batches -- all that
``limit_val_batches`` or a selection rule's validation batches see -- hold every class.

Under DDP (``trainer.world_size > 1``) every loader gets a ``DistributedSampler``
(seeded, reshuffled each epoch by Lightning's ``set_epoch``), so each rank reads its own
shard of each half. Broken videos: see :mod:`datamodules.datasets`; the running count is
:meth:`VideoDataModule.failed_count`, logged per epoch by
:class:`datamodules.callbacks.BrokenVideoMonitor`.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, DistributedSampler

from .atomic import atomic_write_text
from .cache import CACHE_MODES, ClipCache
from .check import PROBE_CACHE_NAME, probe_files
from .datasets import (
    BrokenVideoWarning,
    EpochSampler,
    VideoClipDataset,
    VideoRecord,
    split_in_two,
    stratified_order,
)
from .decode import read_all_frames
from .formats import FormatData, reader_of
from .modality import FLOW_ALGORITHMS, FlowStore, check_modality, modality_channels
from .sources import VideoSources
from .synth import class_names, ensure_synthetic, synthetic_clip_problems
from .transforms import KINETICS_MEAN, KINETICS_STD, EvalTransform, TrainTransform

__all__ = ["VideoDataModule"]

#: plausible clip bounds: beyond them a typo would only show as an allocator traceback
MAX_CROP = 1024
MAX_FRAMES = 1024
#: per-dataset offsets of the data seed: the two halves of a search shuffle independently
_STREAMS = {"weights": 0, "arch": 1}


class VideoDataModule(VideoSources, pl.LightningDataModule):
    """Video clips for search, training and multi-view testing.

    The defaults (``num_frames=32``, ``crop_size=24``, ``sampling_rate=1``) read the whole
    clip of the default synthetic benchmark.

    Args:
        root: dataset folder: a folder per class, or a folder holding ``train.txt`` /
            ``val.txt`` / ``test.txt`` list files (auto-detected), or ``train/``, ``val/``
            class-folder trees. With ``synthetic=True`` a missing root is generated.
        train_list: ``path label`` list for training (overrides ``root/train.txt``).
        val_list: list for validation (overrides ``root/val.txt``).
        test_list: list for testing (overrides ``root/test.txt``; default: the val list).
        predict_list: list for ``predict`` (default: the test list).
        path_prefix: prepended to relative paths in list files (default: the list's folder).
        classes: class names in index order (default: from folders / lists).
        format: the annotation format of ``root`` as released: ``ucf101`` | ``hmdb51`` |
            ``kinetics`` (``kinetics400/600/700``) | ``ssv2`` | ``rawframes``, or ``auto``
            (detected from ``root``; else the generic layouts above). See
            :mod:`datamodules.formats`.
        split: the official split of formats that have several (UCF101, HMDB51: 1-3).
        num_frames: frames per clip T.
        sampling_rate: stride between the sampled frames.
        crop_size: output H = W.
        min_short_side: training short-side resize, lower bound (default ``crop_size``).
        max_short_side: training short-side resize, upper bound (default ``min_short_side``).
        test_short_side: evaluation short-side resize (default ``crop_size``).
        flip_prob: probability of a horizontal flip in training.
        mean: per-channel mean for normalisation (RGB, on [0, 1] values).
        std: per-channel std for normalisation.
        batch_size: training batch size (per rank; per half in search mode).
        eval_batch_size: validation / test batch size (default ``batch_size``).
        num_workers: DataLoader worker processes per loader.
        pin_memory: pin batches (useful with a GPU).
        persistent_workers: keep workers alive between epochs (when ``num_workers > 0``).
        search: split the training set into ``weights`` / ``arch`` halves.
        val_clips: temporal clips per video for validation (centre crop).
        test_clips: temporal clips per video for testing.
        test_crops: spatial crops per clip for testing (1 = centre, 3 = three crops).
        val_fraction: single class-folder tree only: fraction of each class for validation.
        test_fraction: single class-folder tree only: fraction of each class for testing.
        max_fail_fraction: fraction of broken videos tolerated per split before an error.
        seed: seeds the search split, the folder split and the distributed samplers.
        synthetic: generate the synthetic benchmark in ``root`` if it is missing.
        synthetic_params: generator parameters (``classes``, ``videos_per_class``,
            ``frames``, ``size``, ``seed``, ``task``: ``colour`` | ``motion``) for
            ``synthetic=True``.
        cache: decoded-clip cache: ``none`` | ``memory`` (per worker) | ``disk``.
        cache_dir: folder of the ``disk`` cache (default ``root/.clip_cache``).
        cache_memory_mb: bound of the ``memory`` cache per process.
        decode_threads: FFmpeg decoder threads per file (1 is fastest for short clips).
        drop_last: drop the last incomplete training batch.
        probe: open every file's header when a split is built (cached in
            ``root/.attnas_probe.json``), so a split with more than ``max_fail_fraction``
            unreadable files fails at setup, before training, naming them
            (:mod:`datamodules.check`).
        modality: ``rgb`` | ``flow`` (OpenCV dense optical flow, 2 channels, computed once
            per video and cached) | ``rgbdiff`` (:mod:`datamodules.modality`). With the
            default ``mean`` / ``std`` a non-RGB modality is normalised with 0.5 / 0.25
            per channel.
        flow_algorithm: ``farneback`` | ``dis`` (OpenCV).
        flow_dir: the flow cache (default ``root/.flow_cache``; one subfolder per settings).
    """

    def __init__(
        self,
        root: str = "data/synth",
        train_list: str | None = None,
        val_list: str | None = None,
        test_list: str | None = None,
        predict_list: str | None = None,
        path_prefix: str = "",
        classes: list[str] | None = None,
        format: str = "auto",
        split: int = 1,
        num_frames: int = 32,
        sampling_rate: int = 1,
        crop_size: int = 24,
        min_short_side: int | None = None,
        max_short_side: int | None = None,
        test_short_side: int | None = None,
        flip_prob: float = 0.5,
        mean: tuple[float, float, float] = KINETICS_MEAN,
        std: tuple[float, float, float] = KINETICS_STD,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        search: bool = False,
        val_clips: int = 1,
        test_clips: int = 1,
        test_crops: int = 1,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        max_fail_fraction: float = 0.1,
        seed: int = 0,
        synthetic: bool = False,
        synthetic_params: dict[str, int | str] | None = None,
        cache: str = "none",
        cache_dir: str | None = None,
        cache_memory_mb: float = 1024.0,
        decode_threads: int = 1,
        drop_last: bool = True,
        probe: bool = True,
        modality: str = "rgb",
        flow_algorithm: str = "farneback",
        flow_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_modality(modality)
        if flow_algorithm not in FLOW_ALGORITHMS:
            raise ValueError(f"unknown flow_algorithm {flow_algorithm!r}; accepted: "
                             f"{', '.join(FLOW_ALGORITHMS)}")
        channels = modality_channels(modality)
        if modality != "rgb" and tuple(mean) == tuple(KINETICS_MEAN) \
                and tuple(std) == tuple(KINETICS_STD):
            mean, std = (0.5,) * channels, (0.25,) * channels
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values for modality {modality!r}, "
                             f"got {len(mean)} and {len(std)}")
        if format != "auto":
            reader_of(format)  # an unknown name: FormatError, one line
        if split < 1:
            raise ValueError(f"split must be >= 1, got {split}")
        if test_crops not in (1, 3):
            raise ValueError(f"test_crops must be 1 or 3, got {test_crops}")
        for name, value in (("num_frames", num_frames), ("sampling_rate", sampling_rate),
                            ("crop_size", crop_size), ("batch_size", batch_size),
                            ("val_clips", val_clips), ("test_clips", test_clips)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name, value, most in (("crop_size", crop_size, MAX_CROP),
                                  ("num_frames", num_frames, MAX_FRAMES)):
            if int(value) > most:
                unit = "px" if name == "crop_size" else "frames"
                raise ValueError(f"{name} {value} is more than {most} {unit}, beyond any "
                                 "video model's input (Kinetics models read 224 px, 8-64 "
                                 "frames; the allocator would fail)")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
        if not 0.0 <= max_fail_fraction <= 1.0:
            raise ValueError(f"max_fail_fraction must be in [0, 1], got {max_fail_fraction}")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1
                and val_fraction + test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum < 1")
        self.save_hyperparameters()
        self.root = root
        self.train_list, self.val_list, self.test_list = train_list, val_list, test_list
        self.predict_list = predict_list
        self.path_prefix = path_prefix
        self.format, self.split = format, int(split)
        #: what the annotation-format reader found (None for the generic layouts)
        self.format_data: FormatData | None = None
        self.num_frames, self.sampling_rate, self.crop_size = num_frames, sampling_rate, crop_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers = persistent_workers
        self.search = search
        self.val_clips, self.test_clips, self.test_crops = val_clips, test_clips, test_crops
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.max_fail_fraction = max_fail_fraction
        self.seed = seed
        self.synthetic = synthetic
        self.synthetic_params = dict(synthetic_params or {})
        self.decode_threads = decode_threads
        self.drop_last = drop_last
        self.probe = probe
        self.modality = modality
        self.channels = channels
        self._flow_store = FlowStore(flow_dir or Path(root) / ".flow_cache", flow_algorithm) \
            if modality == "flow" else None
        self._train_tf = TrainTransform(crop_size, min_short_side, max_short_side, flip_prob,
                                        mean, std, flow=modality == "flow")
        self._val_tf = EvalTransform(crop_size, test_short_side, 1, mean, std)
        self._test_tf = EvalTransform(crop_size, test_short_side, test_crops, mean, std)
        self._cache_args = (cache, cache_dir, cache_memory_mb)
        self._cache: ClipCache | None = None
        self._classes: list[str] | None = list(classes) if classes else None
        self._fixed_classes = classes is not None
        self._sources: dict[str, list[VideoRecord]] | None = None
        self.datasets: dict[str, VideoClipDataset] = {}

    # ------------------------------------------------------------------ classes
    @property
    def classes(self) -> list[str]:
        """Class names in index order (a cheap read of folders / lists; no decoding)."""
        if self._classes is None:
            root = Path(self.root)
            if (self.synthetic and root.is_dir() and any(root.iterdir())
                    and not (root / "meta.json").is_file()
                    and not (root / ".synth-params.json").is_file()):
                raise ValueError(f"{root} exists and is not a synthetic benchmark folder (no "
                                 "meta.json); data.synthetic would generate into it: choose "
                                 "another --data.root")
            if self.synthetic and not Path(self.root).exists():
                self._classes = class_names(**self.synthetic_params)
            else:
                self._resolve_sources()
        assert self._classes is not None
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def save_classes(self, path: str | Path) -> Path:
        """Write ``{"classes": [...], "class_to_idx": {...}, "root": ...}`` to ``path``
        (JSON, atomically) and return it."""
        doc = {"classes": self.classes,
               "class_to_idx": {c: i for i, c in enumerate(self.classes)},
               "root": str(self.root)}
        return atomic_write_text(path, json.dumps(doc, indent=2) + "\n")

    def prepare_flow(self, progress: bool = True) -> dict[str, int]:
        """Compute the optical flow of every video of every split now (``modality: flow``),
        once, with a progress bar: what ``setup`` would otherwise do split by split.
        Returns ``{"computed", "cached", "failed"}``; a no-op for other modalities."""
        if self._flow_store is None:
            return {"computed": 0, "cached": 0, "failed": 0}
        videos = {r.path: None for recs in self._resolve_sources().values() for r in recs}
        return self._flow_store.prepare(list(videos), read_all_frames, progress=progress)

    def _check_synthetic_clip(self) -> None:
        """Warn when clips cannot show the whole video of the synthetic benchmark (once)."""
        if getattr(self, "_clip_checked", False):  # once per datamodule, not per setup
            return
        self._clip_checked = True
        for msg in synthetic_clip_problems(self.root, self.num_frames, self.sampling_rate,
                                           self.crop_size):
            warnings.warn(msg, stacklevel=3)

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Generate the synthetic benchmark if ``synthetic`` and it is missing (rank 0)."""
        if self.synthetic:
            ensure_synthetic(self.root, **self.synthetic_params,
                             announce=lambda line: print(line, file=sys.stderr, flush=True))

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of ``stage`` (``fit``, ``validate``, ``test``, ``predict`` or
        ``None`` = all). Errors about missing files / labels are raised here."""
        if self.synthetic and getattr(self, "trainer", None) is None:
            self.prepare_data()  # used without a Trainer (idempotent; cheap when complete)
        sources = self._resolve_sources()
        self._check_synthetic_clip()
        if self._cache is None:
            mode, directory, mb = self._cache_args
            if mode == "disk" and not directory:
                directory = str(Path(self.root) / ".clip_cache")
            self._cache = ClipCache(mode, directory, mb)
        want = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                "predict": ("predict",), None: ("train", "val", "test", "predict")}[stage]
        if "train" in want and "train" not in self.datasets:
            train = sources["train"]
            if self.search:
                a, b = split_in_two([r.label for r in train], self.seed)
                self.datasets["weights"] = self._dataset([train[i] for i in a], "train",
                                                         "weights")
                self.datasets["arch"] = self._dataset([train[i] for i in b], "train", "arch")
                self.split_indices = (a, b)
            self.datasets["train"] = self._dataset(train, "train", "train")
        if "val" in want and "val" not in self.datasets:
            if sources.get("val"):
                self.datasets["val"] = self._dataset(self._mixed(sources["val"]), "val", "val")
            elif stage == "validate":
                raise FileNotFoundError(f"no validation set: {Path(self.root) / 'val.txt'} "
                                        "does not exist and val_list is not set")
            else:
                warnings.warn(f"no validation set under {self.root}; validation is skipped",
                              stacklevel=2)
        if "test" in want and "test" not in self.datasets:
            if not sources.get("test"):
                if stage == "test":
                    raise FileNotFoundError(f"no test set: {Path(self.root) / 'test.txt'} "
                                            "does not exist and test_list is not set")
            else:
                self.datasets["test"] = self._dataset(self._mixed(sources["test"]), "test",
                                                      "test")
        if "predict" in want and "predict" not in self.datasets:
            recs = sources.get("predict") or sources.get("test")
            if recs:
                self.datasets["predict"] = self._dataset(recs, "test", "predict")
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            # every rank asks (``log_dir`` is a broadcast under DDP), rank 0 writes
            log_dir = trainer.log_dir if trainer.loggers else None
            if log_dir and trainer.is_global_zero:
                self.save_classes(Path(log_dir) / "classes.json")

    def _mixed(self, records: list[VideoRecord]) -> list[VideoRecord]:
        """Validation / test records in a seeded order that interleaves the classes (lists
        and folders come sorted by class): the first batches -- what ``limit_val_batches``
        and a selection rule's ``select_val_batches`` read -- hold every class."""
        return [records[i] for i in stratified_order([r.label for r in records], self.seed)]

    def _dataset(self, records: list[VideoRecord], kind: str, name: str) -> VideoClipDataset:
        ds = self._make_dataset(records, kind, name)
        if self.probe:
            root = Path(self.root)
            broken = probe_files([r.path for r in records],
                                 root / PROBE_CACHE_NAME if root.is_dir() else None)
            if ds.mark_broken(broken):  # raises when over max_fail_fraction
                first = sorted(r for p, r in broken.items()
                               if p in {rec.path for rec in records})[:3]
                warnings.warn(f"{sum(r.path in broken for r in records)} of {len(records)} "
                              f"videos in the {name} set cannot be opened and will be "
                              f"skipped: {'; '.join(first)}", BrokenVideoWarning, stacklevel=3)
        return ds

    def _make_dataset(self, records: list[VideoRecord], kind: str, name: str
                      ) -> VideoClipDataset:
        common = dict(num_frames=self.num_frames, sampling_rate=self.sampling_rate,
                      max_fail_fraction=self.max_fail_fraction, cache=self._cache,
                      decode_threads=self.decode_threads, name=name,
                      seed=self.seed + _STREAMS.get(name, 0), modality=self.modality,
                      flow_store=self._flow_store)
        if self._flow_store is not None:  # once per video, with a progress bar
            self._flow_store.prepare([r.path for r in records], read_all_frames,
                                     progress=len(records) > 8)
        if kind == "train":
            return VideoClipDataset(records, sampler="random", transform=self._train_tf,
                                    **common)
        if kind == "val":
            return VideoClipDataset(records, sampler="uniform", clips_per_video=self.val_clips,
                                    transform=self._val_tf, **common)
        return VideoClipDataset(records, sampler="uniform", clips_per_video=self.test_clips,
                                crops_per_clip=self.test_crops, transform=self._test_tf,
                                **common)

    # ------------------------------------------------------------------ loaders
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _next_epoch(self) -> int:
        """The epoch the next training pass belongs to (what Lightning passes to
        ``set_epoch``; after a resume, the resumed epoch). Lightning creates the training
        iterator -- and a loader worker prefetches its first keys -- *before* it calls
        ``set_epoch`` on the first epoch of a run, so the sampler must start right. A module
        whose ``configure_optimizers`` reads ``estimated_stepping_batches`` makes that
        iterator before a resumed run's loop state is restored: the epoch is then read from
        the checkpoint being loaded."""
        trainer = getattr(self, "trainer", None)
        try:
            epoch = int(trainer.fit_loop.epoch_progress.current.processed)  # type: ignore[union-attr]
        except (AttributeError, TypeError, RuntimeError):
            return 0
        loading = getattr(getattr(trainer, "_checkpoint_connector", None), "_loaded_checkpoint",
                          None)
        if epoch == 0 and isinstance(loading, dict):  # loops not restored yet
            try:
                fit = loading["loops"]["fit_loop"]["epoch_progress"]["current"]
                epoch = int(fit["processed"])
            except (KeyError, TypeError, ValueError):
                pass
        return epoch

    def _loader(self, ds: VideoClipDataset, train: bool) -> DataLoader:
        world, rank = self._world()
        sampler: DistributedSampler | None = None
        if train:  # seeded per epoch, the epoch in every key: exact resume (EpochSampler)
            sampler = EpochSampler(ds, num_replicas=world, rank=rank, shuffle=True,
                                   seed=ds.seed, drop_last=self.drop_last and world > 1)
            sampler.set_epoch(self._next_epoch())
        elif world > 1:
            sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False,
                                         seed=self.seed)
        workers = self.num_workers
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=False,  # training order: the sampler's
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers > 0,
            drop_last=train and self.drop_last,
        )

    def _need(self, name: str, stage: str) -> VideoClipDataset:
        if name not in self.datasets:
            self.setup(stage)
        if name not in self.datasets:
            raise RuntimeError(f"no {name} dataset (is its list file missing?)")
        return self.datasets[name]

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """Training loader; in search mode ``{"weights": DataLoader, "arch": DataLoader}``."""
        if self.search:
            return {"weights": self._loader(self._need("weights", "fit"), True),
                    "arch": self._loader(self._need("arch", "fit"), True)}
        return self._loader(self._need("train", "fit"), True)

    def val_dataloader(self) -> DataLoader | list:
        """Validation loader (``val_clips`` centre-cropped clips per video); ``[]`` (no
        validation) when there is no validation set."""
        if "val" not in self.datasets:
            self.setup("fit")
        if "val" not in self.datasets:
            return []
        return self._loader(self.datasets["val"], False)

    def test_dataloader(self) -> DataLoader:
        """Every view of every test video (``test_clips x test_crops`` per video)."""
        return self._loader(self._need("test", "test"), False)

    def predict_dataloader(self) -> DataLoader:
        """Like :meth:`test_dataloader` on ``predict_list`` (default: the test list)."""
        return self._loader(self._need("predict", "predict"), False)

    # ------------------------------------------------------------------ broken files
    def failed_count(self) -> int:
        """Videos skipped as broken so far, over every split (this rank)."""
        seen: set[str] = set()
        for ds in self.datasets.values():
            seen.update(ds.failed_paths())
        return len(seen)

    def failed_paths(self) -> list[str]:
        """Paths of the videos skipped as broken so far (this rank), sorted."""
        seen: set[str] = set()
        for ds in self.datasets.values():
            seen.update(ds.failed_paths())
        return sorted(seen)

    def state_dict(self) -> dict[str, Any]:
        return {"classes": self._classes}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("classes") and not self._fixed_classes:
            self._classes = list(state_dict["classes"])
