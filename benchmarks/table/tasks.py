"""The table's tasks: synthetic benchmarks that rank attention cells, and their data in memory.

A :class:`TableTask` names a configuration of :func:`datamodules.synth.ensure_synthetic`
(which task, classes, frames, size, seed). :func:`load_task_data` generates the videos on
first use (real H.264 files), decodes every split once with PyAV and keeps the decoded
clips as ``uint8`` arrays next to them (``clips_<split>.npy``), so a table run reads its
data from memory instead of decoding for every epoch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from datamodules.atomic import atomic_save_npy, atomic_write_text
from datamodules.decode import decode_all
from datamodules.synth import ensure_synthetic

__all__ = ["TableTask", "TASKS", "TaskData", "get_task", "load_task_data", "task_folder",
           "DATA_ROOT"]

#: where the tasks' videos and decoded caches live (ignored by git)
DATA_ROOT = Path("data/table")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TableTask:
    """One task of the table.

    Attributes:
        name: the table's name for it (``--task``).
        synth_task: the generator's task (``colour`` | ``motion`` | ``blink`` | ``marker``).
        summary: one line: what decides the class.
        events: ``graded`` (each video shows 1 to ``classes`` events, so the task has
            easy and hard videos and a cell's accuracy grows with how much of the
            relation it captures) or ``all`` (every video shows every event).
        classes, videos_per_class, frames, size, seed: generator parameters.
    """

    name: str
    synth_task: str
    summary: str
    events: str = "graded"
    classes: int = 4
    videos_per_class: int = 4000
    frames: int = 32
    size: int = 24
    seed: int = 0

    def generator_params(self) -> dict:
        """Keyword arguments of :func:`ensure_synthetic` (without the folder)."""
        return {"classes": self.classes, "videos_per_class": self.videos_per_class,
                "frames": self.frames, "size": self.size, "seed": self.seed,
                "task": self.synth_task, "events": self.events}

    def fingerprint(self) -> str:
        """12 hex digits that change with any generator parameter."""
        text = json.dumps(asdict(self) | {"summary": None}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


TASKS: dict[str, TableTask] = {
    t.name: t for t in (
        TableTask("colour", "colour", "the colour of the first of one to four flashes at "
                  "places far apart"),
        TableTask("motion", "motion", "the direction of the first of one to four grey movers "
                  "(no colour cue)"),
        TableTask("blink", "blink", "the first colour of a lamp that blinks one to four "
                  "colours at one place"),
        TableTask("marker", "marker", "the colour of the one of one to four flashes that a "
                  "white marker elsewhere in the frame accompanies"),
    )
}


def get_task(name: str) -> TableTask:
    """The task called ``name``; ``ValueError`` listing the tasks if there is none."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    return TASKS[name]


def task_folder(task: TableTask, root: str | Path = DATA_ROOT) -> Path:
    """Where a task variant's videos and caches live: ``<root>/<name>_<fingerprint>``."""
    return Path(root) / f"{task.name}_{task.fingerprint()}"


@dataclass
class TaskData:
    """A task's decoded splits: ``x_<split>`` ``uint8 (N, T, H, W, 3)``, ``y_<split>``
    ``int64 (N,)``, the class names, and the folder that holds them."""

    task: TableTask
    folder: Path
    classes: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(clips, labels)`` of ``train`` | ``val`` | ``test``."""
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


def _decode_split(folder: Path, split: str, classes: list[str],
                  progress: Callable[[str, int, int], None] | None) -> None:
    lines = [ln.split() for ln in (folder / f"{split}.txt").read_text().splitlines() if ln]
    index = {c: i for i, c in enumerate(classes)}
    clips, labels = [], []
    for i, (rel, label) in enumerate(lines):
        clips.append(decode_all(folder / rel))
        labels.append(index[label])
        if progress is not None:
            progress(split, i + 1, len(lines))
    atomic_save_npy(folder / f"labels_{split}.npy", np.asarray(labels, dtype=np.int64))
    atomic_save_npy(folder / f"clips_{split}.npy", np.stack(clips))


def load_task_data(task: TableTask | str, root: str | Path = DATA_ROOT,
                   progress: Callable[[str, int, int], None] | None = None,
                   announce: Callable[[str], None] | None = None) -> TaskData:
    """Generate (first use), decode (first use) and load a task's splits.

    Args:
        task: a :class:`TableTask` or its name.
        root: the folder that holds one sub-folder per task.
        progress: called ``(split, done, total)`` while decoding.
        announce: called with one line before generating videos.

    Returns:
        :class:`TaskData` whose arrays are memory-mapped read-only.
    """
    task = get_task(task) if isinstance(task, str) else task
    folder = task_folder(task, root)
    ensure_synthetic(folder, **task.generator_params(), announce=announce)
    meta = json.loads((folder / "meta.json").read_text())
    classes = list(meta["classes"])
    stamp = folder / "decoded.json"
    want = {"task": task.fingerprint(), "generator": meta.get("generator_version")}
    if not stamp.is_file() or json.loads(stamp.read_text()) != want:
        stamp.unlink(missing_ok=True)
        for split in SPLITS:
            _decode_split(folder, split, classes, progress)
        atomic_write_text(stamp, json.dumps(want))
    arrays = {}
    for split in SPLITS:
        arrays[f"x_{split}"] = np.load(folder / f"clips_{split}.npy", mmap_mode="r")
        arrays[f"y_{split}"] = np.load(folder / f"labels_{split}.npy")
    return TaskData(task=task, folder=folder, classes=classes, **arrays)
