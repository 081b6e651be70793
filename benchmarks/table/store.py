"""The table as data: one CSV per task, every row stamped with its protocol and task.

``benchmarks/results/table/<task>.csv`` holds one row per run (cell, seed); the protocol of
record is ``benchmarks/results/table/protocol.json``. :class:`Table` loads a task's rows,
refuses rows made with another protocol or another version of the task's data (they must
not be mixed), and answers queries by architecture string::

    Table.load("colour").query("dot.spatiotemporal.softmax~0")
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

from datamodules.atomic import atomic_write_text
from supernet.genotype import Genotype

from .cells import TableCell, parse_cell
from .protocol import LATE_FIELDS, Protocol, RunRecord
from .tasks import TableTask, get_task

__all__ = ["Table", "TableError", "CellStats", "TABLE_DIR", "COLUMNS", "table_path",
           "read_setup", "write_setup", "protocol_of_record", "task_of_record"]

TABLE_DIR = Path(__file__).resolve().parents[1] / "results" / "table"
COLUMNS = ("key", "nodes", "seed", "val_acc", "test_acc", "params", "macs", "wall_s",
           "skipped_steps", "final_loss", "protocol", "task")


class TableError(ValueError):
    """A table file that cannot be used (another protocol, malformed, missing)."""


class CellStats(NamedTuple):
    """What the table knows of one cell. Accuracies in percent; ``percentile``: the share
    (%) of tabled three-node cells whose mean test accuracy is below this one's (ties
    count half)."""

    key: str
    nodes: int
    n: int
    test_mean: float
    test_std: float
    val_mean: float
    val_std: float
    params: int
    macs: int
    wall_s: float
    percentile: float
    seeds: tuple[int, ...]

    def to_dict(self) -> dict:
        """JSON-able fields."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._asdict().items()}


def table_path(task: str, root: str | Path = TABLE_DIR) -> Path:
    """The CSV of ``task`` under ``root``."""
    return Path(root) / f"{task}.csv"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def read_setup(root: str | Path = TABLE_DIR) -> tuple[Protocol, dict[str, TableTask]]:
    """The protocol of record in ``root/protocol.json`` and the task variants its tables
    were built on (tasks not listed there are the defaults of :data:`TASKS`); the default
    protocol if the file is missing."""
    path = Path(root) / "protocol.json"
    if not path.is_file():
        return Protocol(), {}
    try:
        doc = json.loads(path.read_text())
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["protocol"].items()
                  if k not in ("version", "fingerprint")}
        fields = {**LATE_FIELDS, **fields}  # a file written before a field was added
        tasks = {name: TableTask(**{k: v for k, v in t.items() if k != "fingerprint"})
                 for name, t in doc.get("tasks", {}).items()}
        return Protocol(**fields), tasks
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise TableError(f"{path}: not a table protocol file ({type(err).__name__}: "
                         f"{err})") from None


def protocol_of_record(root: str | Path = TABLE_DIR) -> Protocol:
    """The protocol of ``root`` (see :func:`read_setup`)."""
    return read_setup(root)[0]


def task_of_record(name: str, root: str | Path = TABLE_DIR) -> TableTask:
    """The variant of task ``name`` that ``root``'s tables were built on."""
    get_task(name)
    return read_setup(root)[1].get(name) or get_task(name)


def write_setup(protocol: Protocol, task: TableTask, root: str | Path = TABLE_DIR,
                check_only: bool = False) -> Path:
    """Record ``protocol`` and ``task`` in ``root/protocol.json`` (atomically; with
    ``check_only`` only check that they agree with what is recorded).

    Raises:
        TableError: the file records another protocol, or another variant of the task.
    """
    path = Path(root) / "protocol.json"
    old_protocol, tasks = read_setup(root) if path.is_file() else (protocol, {})
    if old_protocol != protocol:
        raise TableError(f"{path} records protocol {old_protocol.fingerprint()}, not "
                         f"{protocol.fingerprint()}; a table never mixes protocols: use "
                         f"another folder")
    if task.name in tasks and tasks[task.name] != task:
        raise TableError(f"{path} records another variant of task {task.name!r} "
                         f"({tasks[task.name].fingerprint()}, not {task.fingerprint()})")
    tasks[task.name] = task
    if check_only:
        return path
    doc = {"protocol": protocol.to_dict(),
           "tasks": {n: {**asdict(t), "fingerprint": t.fingerprint()}
                     for n, t in sorted(tasks.items())}}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path


class Table:
    """The runs of one task under one protocol.

    Args:
        task: the task's name.
        protocol: the protocol every row must carry.
        rows: run rows (dicts with :data:`COLUMNS`).
        path: where :meth:`save` writes.
        variant: the task's generator settings (default: the task of :data:`TASKS`).
    """

    def __init__(self, task: str, protocol: Protocol, rows: Iterable[dict] = (),
                 path: str | Path | None = None, variant: TableTask | None = None) -> None:
        self.task = task
        self.variant = variant if variant is not None else get_task(task)
        self.protocol = protocol
        self.rows: list[dict] = list(rows)
        self.path = Path(path) if path is not None else table_path(task)
        self._stats: dict[str, CellStats] | None = None

    # ------------------------------------------------------------------ loading, saving
    @classmethod
    def load(cls, task: str, root: str | Path = TABLE_DIR, protocol: Protocol | None = None,
             missing_ok: bool = False, variant: TableTask | None = None) -> Table:
        """Read ``root/<task>.csv`` (``protocol`` and ``variant`` default to what ``root``
        records).

        Raises:
            TableError: no such file (unless ``missing_ok``), a malformed file, or rows of
                another protocol or task data than ``protocol`` (default: the protocol of
                record in ``root``) and the current task definition.
        """
        variant = variant if variant is not None else task_of_record(task, root)
        protocol = protocol if protocol is not None else protocol_of_record(root)
        path = table_path(task, root)
        table = cls(task, protocol, path=path, variant=variant)
        if not path.is_file():
            if missing_ok:
                return table
            raise TableError(f"no table for task {task!r} at {path}; build it with "
                             f"`attnas table build --task {task}`")
        try:
            reader = csv.DictReader(io.StringIO(path.read_text()))
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise TableError(f"{path}: not a table file (columns {reader.fieldnames}, "
                                 f"expected {', '.join(COLUMNS)})")
            rows = [cls._typed(r) for r in reader]
        except (ValueError, KeyError) as err:
            if isinstance(err, TableError):
                raise
            raise TableError(f"{path}: malformed table row ({err})") from None
        want_p, want_t = protocol.fingerprint(), variant.fingerprint()
        stale = [r for r in rows if r["protocol"] != want_p or r["task"] != want_t]
        if stale:
            r = stale[0]
            raise TableError(
                f"{path}: {len(stale)} of {len(rows)} rows were made with protocol "
                f"{r['protocol']} / task data {r['task']}, not {want_p} / {want_t}; a table "
                f"never mixes protocols: move the file away and rebuild, or load it with "
                f"the protocol it was made with")
        table.rows = rows
        return table

    @staticmethod
    def _typed(row: dict) -> dict:
        out = dict(row)
        for k in ("nodes", "seed", "params", "macs", "skipped_steps"):
            out[k] = int(row[k])
        for k in ("val_acc", "test_acc", "wall_s", "final_loss"):
            out[k] = float(row[k])
        return out

    def save(self) -> Path:
        """Write every row to :attr:`path` atomically (a temp file, then a rename)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in sorted(self.rows, key=lambda r: (r["nodes"], r["key"], r["seed"])):
            writer.writerow(row)
        atomic_write_text(self.path, buf.getvalue())
        return self.path

    def add(self, record: RunRecord, nodes: int) -> None:
        """Add (or replace) the run ``(record.key, record.seed)``."""
        row = {**record._asdict(), "nodes": nodes, "protocol": self.protocol.fingerprint(),
               "task": self.variant.fingerprint()}
        self.rows = [r for r in self.rows if (r["key"], r["seed"]) != (record.key, record.seed)]
        self.rows.append({k: row[k] for k in COLUMNS})
        self._stats = None

    @property
    def curves_path(self) -> Path:
        """The JSON-lines file beside the CSV that holds each run's training-loss curve."""
        return self.path.with_name(f"{self.path.stem}.curves.jsonl")

    def add_curve(self, record: RunRecord) -> None:
        """Append ``record``'s loss curve to :attr:`curves_path` (one line a run, flushed to
        disk; a line cut short by a kill is skipped by :meth:`curves`)."""
        line = json.dumps({"key": record.key, "seed": record.seed,
                           "protocol": self.protocol.fingerprint(),
                           "task": self.variant.fingerprint(),
                           "loss_curve": list(record.loss_curve)})
        with self.curves_path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def curves(self) -> dict[tuple[str, int], list[float]]:
        """``(key, seed) -> loss curve`` of the runs of this protocol and task variant that
        stored one (the latest line of a run wins)."""
        out: dict[tuple[str, int], list[float]] = {}
        if not self.curves_path.is_file():
            return out
        want = (self.protocol.fingerprint(), self.variant.fingerprint())
        for text in self.curves_path.read_text().splitlines():
            try:
                doc = json.loads(text)
                if (doc["protocol"], doc["task"]) == want:
                    out[(doc["key"], int(doc["seed"]))] = [float(v) for v in doc["loss_curve"]]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
        return out

    def done(self) -> set[tuple[str, int]]:
        """The ``(key, seed)`` pairs already in the table."""
        return {(r["key"], r["seed"]) for r in self.rows}

    # ------------------------------------------------------------------ queries
    def stats(self) -> dict[str, CellStats]:
        """Every tabled cell's :class:`CellStats`, by key."""
        if self._stats is not None:
            return self._stats
        by_key: dict[str, list[dict]] = defaultdict(list)
        for r in self.rows:
            by_key[r["key"]].append(r)
        partial = {}
        for key, runs in by_key.items():
            tm, ts = _mean_std([100 * r["test_acc"] for r in runs])
            vm, vs = _mean_std([100 * r["val_acc"] for r in runs])
            partial[key] = (runs, tm, ts, vm, vs)
        three = sorted(v[1] for k, v in partial.items() if v[0][0]["nodes"] == 3)
        out = {}
        for key, (runs, tm, ts, vm, vs) in partial.items():
            out[key] = CellStats(key, runs[0]["nodes"], len(runs), tm, ts, vm, vs,
                                 runs[0]["params"], runs[0]["macs"],
                                 sum(r["wall_s"] for r in runs) / len(runs),
                                 self.percentile(tm, three),
                                 tuple(sorted(r["seed"] for r in runs)))
        self._stats = out
        return out

    def three_node_means(self) -> list[float]:
        """Mean test accuracy (%) of every tabled three-node cell, sorted."""
        return sorted(s.test_mean for s in self.stats().values() if s.nodes == 3)

    def percentile(self, value: float, reference: Sequence[float] | None = None) -> float:
        """The share (%) of ``reference`` (default: the three-node cells' means) below
        ``value``, ties counted half; NaN with no reference."""
        ref = self.three_node_means() if reference is None else reference
        if not ref:
            return float("nan")
        below = sum(v < value for v in ref)
        ties = sum(v == value for v in ref)
        return 100.0 * (below + 0.5 * ties) / len(ref)

    def query(self, cell: str | Genotype | TableCell) -> CellStats:
        """The stats of ``cell`` (a baseline name, an architecture string, a genotype).

        Raises:
            ValueError: the cell is not of the space.
            TableError: the cell is not in this table (the message says how to add it).
        """
        key = cell.key if isinstance(cell, TableCell) else parse_cell(cell).key
        stats = self.stats()
        if key not in stats:
            raise TableError(f"cell {key!r} is not in the {self.task!r} table "
                           f"({len(stats)} cells); add it with `attnas table build --task "
                           f"{self.task} --cells '{key}'`")
        return stats[key]
