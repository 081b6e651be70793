"""Building a table: which cells, which seeds, run where, resumed from what is stored.

:func:`plan_cells` lists a task's cells: the baseline blocks, the 24 one-node cells, a
uniform sample of three-node cells and every genotype the project's benchmarks produced
(``benchmarks/results/genotypes/*.json``). :func:`build_table` runs the ``(cell, seed)``
pairs the table does not hold yet -- in local worker processes (default) or as Ray tasks
(``address``: a cluster) -- each with one torch thread, and saves the table after every
finished run, so a killed build loses only the runs in flight.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks.ray_start import start_ray
from supernet.dispatch import ENV as DISPATCH_ENV
from supernet.genotype import load_genotype

from .cells import BASELINES, TableCell, one_node_cells, parse_cell, sample_cells
from .protocol import Protocol, RunRecord, prefix_features, train_cell
from .store import TABLE_DIR, Table, write_setup
from .tasks import DATA_ROOT, TableTask, TaskData, load_task_data

__all__ = ["plan_cells", "project_cells", "build_table", "run_one", "EXECUTORS",
           "GENOTYPES_DIR"]

GENOTYPES_DIR = Path(__file__).resolve().parents[1] / "results" / "genotypes"
EXECUTORS = ("local", "ray")


def project_cells(folder: str | Path = GENOTYPES_DIR) -> list[TableCell]:
    """Every distinct genotype the project's benchmarks produced (searched, random,
    budgeted), in file-name order."""
    out: dict[str, TableCell] = {}
    for path in sorted(Path(folder).glob("*.json")):
        cell = parse_cell(load_genotype(path))
        out.setdefault(cell.key, cell)
    return list(out.values())


def plan_cells(sample: int = 100, sample_seed: int = 0, project: bool = True
               ) -> list[TableCell]:
    """Baselines, the 24 one-node cells, ``sample`` uniform three-node cells, and (with
    ``project``) the project's cells; duplicates dropped, in that order."""
    cells = [parse_cell(name) for name in BASELINES] + one_node_cells()
    cells += sample_cells(sample, 3, sample_seed)
    if project:
        cells += project_cells()
    out: dict[str, TableCell] = {}
    for c in cells:
        out.setdefault(c.key, c)
    return list(out.values())


# ------------------------------------------------------------------ one run, in a worker
_DATA: dict[tuple[str, str], TaskData] = {}


def run_one(task: dict[str, Any], key: str, seed: int, protocol: dict[str, Any],
            data_root: str = str(DATA_ROOT), threads: int = 1) -> dict[str, Any]:
    """Train one ``(cell, seed)`` in this process (``task`` and ``protocol`` as dicts of
    their fields); the :class:`RunRecord` as a dict, plus ``nodes``. The task's data is
    loaded once per process."""
    import torch

    torch.set_num_threads(threads)
    variant = TableTask(**task)
    cache = (variant.fingerprint(), data_root)
    if cache not in _DATA:
        _DATA[cache] = load_task_data(variant, data_root)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in protocol.items()}
    cell = parse_cell(key)
    record = train_cell(cell, _DATA[cache], Protocol(**fields), seed)
    return {**record._asdict(), "nodes": cell.num_nodes}


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)  # the build that started this worker is gone: its result has no taker


def _init_worker(parent: int) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    # a run's kernels do not depend on what a timing saw under the moment's load (the
    # user's $ATTNAS_DISPATCH still wins)
    os.environ.setdefault(DISPATCH_ENV, "fixed")
    # a killed build must not leave its workers training on: each watches its parent (whose
    # pid is passed in, since the build may die while this worker is still starting)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


class _LocalPool:
    def __init__(self, workers: int) -> None:
        self._pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                         initializer=_init_worker, initargs=(os.getpid(),))

    def submit(self, *args: Any) -> Future:
        return self._pool.submit(run_one, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _RayPool:
    def __init__(self, address: str | None, workers: int) -> None:
        import ray  # optional: the [sweep] extra

        start_ray(address, workers)
        self._ray = ray
        self._task = ray.remote(num_cpus=1, max_retries=1)(run_one)

    def submit(self, *args: Any) -> Future:
        return self._task.remote(*args).future()

    def close(self) -> None:
        self._ray.shutdown()


def _pool(executor: str, workers: int, address: str | None) -> _LocalPool | _RayPool:
    if executor == "local":
        if address:
            raise ValueError("--address needs --executor ray")
        return _LocalPool(workers)
    if executor == "ray":
        return _RayPool(address, workers)
    raise ValueError(f"unknown executor {executor!r}; accepted: {', '.join(EXECUTORS)}")


def build_table(task: TableTask, cells: Sequence[TableCell], seeds: Iterable[int],
                protocol: Protocol, root: str | Path = TABLE_DIR,
                data_root: str | Path = DATA_ROOT, workers: int = 2, executor: str = "local",
                address: str | None = None,
                on_start: Callable[[int, int], None] | None = None,
                on_result: Callable[[dict[str, Any]], None] | None = None) -> Table:
    """Run every ``(cell, seed)`` missing from ``task``'s table and store each as it lands.

    Args:
        task: the task (one of :data:`~benchmarks.table.tasks.TASKS`, or a variant).
        cells: what to table; seeds: the training seeds of each.
        protocol: the training recipe (a table refuses rows of another).
        root: where the table files live; data_root: the tasks' videos.
        workers: runs at a time (local processes; Ray: tasks in flight).
        executor: ``local`` or ``ray``; address: a Ray cluster (``auto``, ``ray://...``).
        on_start: called ``(to run, already stored)`` (of the pairs asked for) first.
        on_result: called with each finished run's row (or ``{"error": ...}``).

    Returns:
        The table, saved.

    Raises:
        TableError: the stored table or setup belongs to another protocol or task
            variant (checked before anything is written).
        ValueError: unknown executor, unreachable Ray.
    """
    table = Table.load(task.name, root, protocol, missing_ok=True, variant=task)
    write_setup(protocol, task, root, check_only=True)
    done = table.done()
    wanted = [(c.key, s) for s in seeds for c in cells]
    todo = [pair for pair in wanted if pair not in done]
    if on_start is not None:
        on_start(len(todo), len(wanted) - len(todo))
    if not todo:
        return table
    pool = _pool(executor, workers, address)  # an unreachable Ray fails before any write
    spec, task_spec = asdict(protocol), asdict(task)
    try:
        data = load_task_data(task, data_root)  # generate and decode once, before the workers
        if protocol.frozen:
            prefix_features(data, protocol)  # and the fixed prefix's features
    except BaseException:
        pool.close()
        raise
    write_setup(protocol, task, root)
    pending: dict[Future, tuple[str, int]] = {}
    queue = list(todo)
    try:
        while queue or pending:
            while queue and len(pending) < workers:
                key, seed = queue.pop(0)
                fut = pool.submit(task_spec, key, seed, spec, str(data_root), 1)
                pending[fut] = (key, seed)
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                key, seed = pending.pop(fut)
                try:
                    row = fut.result()
                except Exception as err:  # noqa: BLE001 - one failed run, the rest go on
                    if on_result is not None:
                        on_result({"key": key, "seed": seed, "error": f"{type(err).__name__}:"
                                   f" {err}"})
                    continue
                nodes = row.pop("nodes")
                record = RunRecord(**row)
                table.add(record, nodes)
                table.save()
                table.add_curve(record)
                if on_result is not None:
                    on_result({**row, "nodes": nodes})
    finally:
        pool.close()
    return table
