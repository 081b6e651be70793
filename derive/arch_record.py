"""The architecture CSV a search logs once per epoch, and reading it back.

One row per epoch and the columns::

    epoch,
    alpha.<node>.<op_name>   for node in 0..K-1, op_name in supernet.space.OP_NAMES order,
    beta.<node>.<input>      for node in 0..K-1, input in 0..node

    <factor>.<node>.<value>  for node in 0..K-1, factor and value in supernet.space.FACTORS
                             order (family.0.map, family.0.dot, dimension.0.spatial, ...,
                             activation.0.identity, family.1.map, ...)

holding ``softmax(alpha / tau)`` (each node's 24 values sum to 1), ``softmax(beta)``
over the inputs node ``k`` may read (``0`` = projected cell input, ``j`` = node ``j - 1``),
and the factor marginals of the op weights (:func:`supernet.space.factor_marginals`: the
summed weight of the ops sharing each family / dimension / activation; each node's values
of one factor sum to 1). The marginals are derived data, for a reader of the CSV: the
reader recomputes them from alpha and ignores the stored ones, and a file written before
they existed (no marginal columns) is read as well, and upgraded to the new columns when a
row is appended to it. The file is small and always rewritten whole, atomically.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.atomic import atomic_write_text
from supernet.space import FACTORS, NUM_OPS, OP_NAMES, factor_marginals

__all__ = ["arch_csv_header", "write_arch_csv_row", "read_arch_csv", "arch_history",
           "marginals"]


def arch_csv_header(num_nodes: int, marginals: bool = True) -> list[str]:
    """Column names of the architecture CSV for ``num_nodes`` nodes.

    ``marginals=False`` gives the header of files written before the factor-marginal
    columns existed (epoch, alpha, beta only).
    """
    cols = ["epoch"]
    cols += [f"alpha.{k}.{op}" for k in range(num_nodes) for op in OP_NAMES]
    cols += [f"beta.{k}.{j}" for k in range(num_nodes) for j in range(k + 1)]
    if marginals:
        cols += [f"{factor}.{k}.{value}" for k in range(num_nodes)
                 for factor, values in FACTORS.items() for value in values]
    return cols


def marginals(alpha: Any) -> dict[str, np.ndarray]:
    """Factor marginals of op weights ``(K, 24)`` -> ``{"family": (K, 2), "dimension":
    (K, 3), "activation": (K, 4)}`` as arrays (:func:`supernet.space.factor_marginals`)."""
    return {f: np.asarray(m, dtype=np.float64).reshape(-1, len(FACTORS[f]))
            for f, m in factor_marginals(alpha).items()}


def _row_values(epoch: int, alpha: np.ndarray, beta: np.ndarray) -> list[str]:
    """One CSV row (strings, in :func:`arch_csv_header` order) of ``alpha`` ``(K, 24)``
    and ``beta`` ``(K, K)``."""
    K = alpha.shape[0]
    values = [str(int(epoch))]
    values += [f"{v:.6g}" for v in alpha.reshape(-1)]
    values += [f"{beta[k, j]:.6g}" for k in range(K) for j in range(k + 1)]
    marg = marginals(alpha)
    values += [f"{marg[factor][k, v]:.6g}" for k in range(K)
               for factor, names in FACTORS.items() for v in range(len(names))]
    return values


def _as_matrix(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric matrix: {err}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def write_arch_csv_row(path: str | os.PathLike, epoch: int, op_weights: Any,
                       input_weights: Any) -> Path:
    """Record one epoch's architecture weights in the CSV at ``path``.

    Creates the file with its header on first use. Rows of epochs ``>= epoch`` already in
    the file are dropped first, so a search resumed from an earlier checkpoint rewrites
    its history instead of duplicating it. A file in the old format (no factor-marginal
    columns, same K) is upgraded: its rows are read, their marginals computed, and the
    file written with the new header. The whole file is rewritten atomically (it is
    small: one row per epoch). In DDP call it on rank 0 only.

    Args:
        path: the CSV file.
        epoch: the epoch number (an integer >= 0).
        op_weights: ``softmax(alpha / tau)``, ``(K, 24)`` (tensor, array or nested lists).
        input_weights: ``softmax(beta)``, ``(K, K)``, lower-triangular.

    Raises:
        ValueError: bad shapes or values, or an existing file with another header (another
            K, or columns this code never wrote).
    """
    path = Path(path)
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    alpha = _as_matrix(op_weights, "op_weights")
    beta = _as_matrix(input_weights, "input_weights")
    K = alpha.shape[0]
    if alpha.shape != (K, NUM_OPS):
        raise ValueError(f"op_weights must be (K, {NUM_OPS}), got {alpha.shape}")
    if beta.shape != (K, K):
        raise ValueError(f"input_weights must be ({K}, {K}) for K = {K}, got {beta.shape}")
    header = arch_csv_header(K)
    rows: list[list[str]] = []
    if path.exists():
        with path.open(newline="", encoding="utf-8") as fh:
            existing = list(csv.reader(fh))
        if existing:
            if existing[0] == header:
                rows = [r for r in existing[1:] if r and _row_epoch(r[0], path) < epoch]
            elif existing[0] == arch_csv_header(K, marginals=False):  # old format: upgrade
                for i, r in enumerate(existing[1:]):
                    if not r:
                        continue
                    if len(r) != len(existing[0]):
                        raise ValueError(f"{path}, line {i + 2}: {len(r)} values for "
                                         f"{len(existing[0])} columns")
                    rec = _record_from_flat(dict(zip(existing[0], r)),
                                            f"{path}, line {i + 2}")
                    if rec["epoch"] < epoch:
                        rows.append(_row_values(rec["epoch"], rec["alpha"], rec["beta"]))
            else:
                raise ValueError(
                    f"{path}: existing architecture CSV has different columns "
                    f"({len(existing[0])} vs {len(header)} for K = {K}); use a new file"
                )
    rows.append(_row_values(epoch, alpha, beta))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return path


def _row_epoch(value: str, path: Path) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"{path}: bad epoch value {value!r}") from None


_ALPHA_COL = re.compile(r"^alpha\.(\d+)\.(.+)$")
_BETA_COL = re.compile(r"^beta\.(\d+)\.(\d+)$")
_MARGINAL_COL = re.compile(rf"^({'|'.join(FACTORS)})\.(\d+)\.(.+)$")


def _record_from_flat(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``{"epoch", "alpha" (K,24), "beta" (K,K), "marginals"}`` from a row keyed by CSV
    column names (stored marginal columns are checked by name, their values ignored)."""
    if "epoch" not in row:
        raise ValueError(f"{where}: no 'epoch' column")
    alpha_cells: dict[tuple[int, int], float] = {}
    beta_cells: dict[tuple[int, int], float] = {}
    for key, value in row.items():
        if key == "epoch":
            continue
        try:
            if m := _ALPHA_COL.match(str(key)):
                if m.group(2) not in OP_NAMES:
                    raise ValueError(f"unknown operation {m.group(2)!r} in column {key!r}")
                alpha_cells[int(m.group(1)), OP_NAMES.index(m.group(2))] = float(value)
            elif m := _BETA_COL.match(str(key)):
                beta_cells[int(m.group(1)), int(m.group(2))] = float(value)
            elif m := _MARGINAL_COL.match(str(key)):  # derived data: recomputed below
                if m.group(3) not in FACTORS[m.group(1)]:
                    raise ValueError(f"unknown {m.group(1)} {m.group(3)!r} in column {key!r}")
            else:
                raise ValueError(f"unexpected column {key!r}")
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
    if not alpha_cells:
        raise ValueError(f"{where}: no alpha.<node>.<op> columns")
    K = 1 + max(k for k, _ in alpha_cells)
    if len(alpha_cells) != K * NUM_OPS:
        raise ValueError(f"{where}: expected {K * NUM_OPS} alpha columns for {K} nodes, "
                         f"got {len(alpha_cells)}")
    alpha = np.zeros((K, NUM_OPS))
    for (k, o), v in alpha_cells.items():
        alpha[k, o] = v
    beta = np.zeros((K, K))
    for (k, j), v in beta_cells.items():
        if not 0 <= j <= k < K:
            raise ValueError(f"{where}: column beta.{k}.{j} out of range for {K} nodes")
        beta[k, j] = v
    return {"epoch": _row_epoch(str(row["epoch"]), Path(where)), "alpha": alpha, "beta": beta,
            "marginals": marginals(alpha)}


def read_arch_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read an architecture CSV into ``[{"epoch": int, "alpha": (K,24), "beta": (K,K),
    "marginals": {"family": (K,2), "dimension": (K,3), "activation": (K,4)}}]``.

    Files with or without the factor-marginal columns are read alike: the marginals are
    always recomputed from alpha (stored values are ignored).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such architecture CSV")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        records = [_record_from_flat(row, f"{path}, line {i + 2}")
                   for i, row in enumerate(reader)]
    return records


def arch_history(history: Any) -> list[dict[str, Any]]:
    """Per-epoch records ``[{"epoch", "alpha" (K,24), "beta" (K,K), "marginals"}]`` (as
    :func:`read_arch_csv` returns them), sorted by epoch, from a CSV path or a list of
    dicts (keyed like the CSV columns, or structured ``{"epoch", "alpha", "beta"}``).

    Raises:
        ValueError: no epochs, bad columns or values, or epochs with different K.
        TypeError: ``history`` is neither a path nor a list of dicts.
    """
    if isinstance(history, (str, os.PathLike)):
        records = read_arch_csv(history)
        where = str(history)
    else:
        if not isinstance(history, Sequence):
            raise TypeError("history must be a CSV path or a list of per-epoch dicts")
        where = "history"
        records = []
        for i, entry in enumerate(history):
            if not isinstance(entry, Mapping):
                raise TypeError(f"history[{i}] must be a dict, got {type(entry).__name__}")
            if "alpha" in entry:  # structured: {"epoch", "alpha" (K,24), "beta" (K,K)}
                alpha = _as_matrix(entry["alpha"], f"history[{i}]['alpha']")
                if alpha.shape[1] != NUM_OPS:
                    raise ValueError(f"history[{i}]['alpha'] must be (K, {NUM_OPS}), "
                                     f"got {alpha.shape}")
                beta = entry.get("beta")
                beta = (_as_matrix(beta, f"history[{i}]['beta']") if beta is not None
                        else np.zeros((alpha.shape[0], alpha.shape[0])))
                records.append({"epoch": int(entry.get("epoch", i)), "alpha": alpha,
                                "beta": beta, "marginals": marginals(alpha)})
            else:  # flat, keyed like the CSV columns
                records.append(_record_from_flat(entry, f"history[{i}]"))
    if not records:
        raise ValueError(f"{where}: no epochs to plot")
    K = records[0]["alpha"].shape[0]
    for rec in records:
        if rec["alpha"].shape != (K, NUM_OPS) or rec["beta"].shape != (K, K):
            raise ValueError(f"{where}: epoch {rec['epoch']} has a different number of nodes")
    return sorted(records, key=lambda r: r["epoch"])
