"""The genotype: a derived (discrete) attention cell as a small, versioned JSON document.

A genotype says which operation each of the K nodes of a cell applies and which input it
reads, plus the cell hyper-parameters the :class:`~supernet.cells.FixedCell` needs::

    {
      "format": "attnas-genotype",
      "version": 1,
      "nodes": [{"op": "dot.spatiotemporal.softmax", "input": 0},
                {"op": "map.temporal.sigmoid", "input": 1}],
      "cell": {"inner_ratio": 0.5, "kv_pool": true, "position_encoding": "none",
               "num_nodes": 2},
      "provenance": {"run": "...", "epoch": 49, "alpha_softmax": [[...]], ...}
    }

``input`` 0 is the projected cell input and ``j >= 1`` the output of node ``j - 1``, so
node ``k`` may read ``0..k``. Op names are those of :data:`supernet.space.OP_NAMES`
(``family.dimension.activation``). ``provenance`` is free-form (JSON values only): where
the genotype came from -- search run, epoch, softmax of alpha/beta, dataset, seed, package
version, creation time.

It lives in ``supernet`` next to the cells it describes (``supernet.factory`` builds a
network from a genotype file without importing ``derive``); ``derive.genotype`` re-exports
it. Everything read from a file is validated against the search space; any problem raises
:class:`GenotypeError` with a one-line message naming the file and the field, e.g.
``cell.json: nodes[1].input = 5 is out of range (node 1 may read 0..1)``.

The cell's positional encoding was written as ``cell.position`` before it was named
``position_encoding``; such files still load (the old key is read, the new one written).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from datamodules.atomic import FILE_MODE, atomic_write_text

from .cells import ArchParameters, FixedCell
from .nodes import (
    GenotypeError,
    NodeSpec,
    _check_keys,
    _is_int,
    _require,
    _type_name,
    validate_nodes,
)
from .space import OP_NAMES, POSITIONS
from .version import __version__

__all__ = [
    "FORMAT",
    "VERSION",
    "Genotype",
    "GenotypeError",
    "load_genotype",
    "save_genotype",
    "random_genotype",
    "atomic_write_text",  # re-exported from datamodules.atomic (old home)
    "FILE_MODE",
]

#: Value of the ``format`` field of every genotype document.
FORMAT = "attnas-genotype"
#: The document version this code writes (and the newest it reads).
VERSION = 1

_TOP_KEYS = ("format", "version", "nodes", "cell", "provenance")
_CELL_KEYS = ("inner_ratio", "kv_pool", "position_encoding", "num_nodes")
#: a cell key's old name (files written before the rename): old -> new
_OLD_CELL_KEYS = {"position": "position_encoding"}
_MAX_INNER_RATIO = 4.0  # as supernet.cells.inner_width


# --------------------------------------------------------------------------- validation


def _validate_cell(inner_ratio: Any, kv_pool: Any, position: Any, where: str,
                   key: str = "position_encoding") -> None:
    """Check the cell hyper-parameters; ``where`` prefixes field names (e.g. ``f.json: cell``)."""
    if not isinstance(inner_ratio, (int, float)) or isinstance(inner_ratio, bool):
        raise GenotypeError(
            f"{where}.inner_ratio = {inner_ratio!r} must be a number, got {_type_name(inner_ratio)}"
        )
    if not (math.isfinite(inner_ratio) and 0.0 < inner_ratio <= _MAX_INNER_RATIO):
        raise GenotypeError(
            f"{where}.inner_ratio = {inner_ratio!r} is out of range (0, {_MAX_INNER_RATIO:g}]"
        )
    if not isinstance(kv_pool, bool):
        raise GenotypeError(
            f"{where}.kv_pool = {kv_pool!r} must be true or false, got {_type_name(kv_pool)}"
        )
    if not isinstance(position, str) or position not in POSITIONS:
        raise GenotypeError(
            f"{where}.{key} = {position!r} is not a position encoding "
            f"(accepted: {', '.join(POSITIONS)})"
        )


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON values (tensors/arrays -> lists, paths -> str, tuples -> lists)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GenotypeError(f"{where} = {value!r} is not a finite number (JSON has no NaN)")
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    tolist = getattr(value, "tolist", None)  # torch.Tensor, numpy arrays and scalars
    if callable(tolist):
        return _jsonable(tolist(), where)
    raise GenotypeError(f"{where}: a {type(value).__name__} cannot be stored in a genotype")


def _package_version() -> str:
    return str(__version__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _rounded(rows: Sequence[Sequence[float]], digits: int = 6) -> list[list[float]]:
    return [[round(float(v), digits) for v in row] for row in rows]


# --------------------------------------------------------------------------- the genotype


@dataclass
class Genotype:
    """A derived cell: one op and one input per node, and the cell's hyper-parameters.

    Args:
        nodes: the node list; :class:`NodeSpec`, ``(op, input)`` pairs or
            ``{"op", "input"}`` dicts are accepted and stored as :class:`NodeSpec`.
        inner_ratio: inner width / channels of the cell (default 0.5).
        kv_pool: max-pool dot-product keys/values 1x2x2 (default True).
        position: positional signal for dot-product ops: ``none`` | ``coords`` | ``sincos``.
        provenance: free-form JSON-able facts about where the genotype came from.

    Raises:
        GenotypeError: if any field is invalid for the search space.
    """

    nodes: list[NodeSpec]
    inner_ratio: float = 0.5
    kv_pool: bool = True
    position: str = "none"
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.nodes = validate_nodes(self.nodes, "Genotype")
        _validate_cell(self.inner_ratio, self.kv_pool, self.position, "Genotype", "position")
        self.inner_ratio = float(self.inner_ratio)
        if self.provenance is None:
            self.provenance = {}
        if not isinstance(self.provenance, Mapping):
            raise GenotypeError(
                f"Genotype: provenance must be a dict, got {_type_name(self.provenance)}"
            )
        self.provenance = dict(self.provenance)

    # ------------------------------------------------------------------ properties

    @property
    def num_nodes(self) -> int:
        """K, the number of operation nodes."""
        return len(self.nodes)

    def cell_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~supernet.cells.FixedCell` (all but ``channels``)."""
        return {
            "nodes": list(self.nodes),
            "inner_ratio": self.inner_ratio,
            "kv_pool": self.kv_pool,
            "position": self.position,
        }

    def build(self, channels: int) -> FixedCell:
        """A freshly initialised :class:`~supernet.cells.FixedCell` for ``channels``."""
        return FixedCell(channels, **self.cell_kwargs())

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (plain dicts/lists/numbers/strings)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "nodes": [{"op": nd.op, "input": nd.input} for nd in self.nodes],
            "cell": {
                "inner_ratio": self.inner_ratio,
                "kv_pool": self.kv_pool,
                "position_encoding": self.position,
                "num_nodes": self.num_nodes,
            },
            "provenance": _jsonable(self.provenance, "provenance"),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The JSON document as text (a compact node list, one node per line)."""
        doc = self.to_dict()
        if indent is None:
            return json.dumps(doc, allow_nan=False)
        # One node / one alpha row per line keeps files short and diffable.
        return _pretty_json(doc, indent) + "\n"

    @classmethod
    def from_dict(cls, d: Any, source: str = "<dict>") -> Genotype:
        """Validate a JSON document against the search space and build the genotype.

        Args:
            d: the parsed document.
            source: how to name the document in error messages (e.g. its path).

        Raises:
            GenotypeError: naming ``source`` and the offending field.
        """
        if not isinstance(d, Mapping):
            raise GenotypeError(
                f"{source}: not an attnas genotype (expected a JSON object with "
                f"\"format\": \"{FORMAT}\", got {_type_name(d)})"
            )
        if "format" not in d:
            raise GenotypeError(
                f"{source}: not an attnas genotype (no \"format\" field; expected "
                f"\"format\": \"{FORMAT}\"; fields found: {', '.join(map(str, d)) or 'none'})"
            )
        if d["format"] != FORMAT:
            raise GenotypeError(
                f"{source}: not an attnas genotype (format = {d['format']!r}, "
                f"expected {FORMAT!r})"
            )
        version = _require(d, "version", source)
        if not _is_int(version):
            raise GenotypeError(
                f"{source}: version = {version!r} must be an integer, got {_type_name(version)}"
            )
        if version != VERSION:
            newer = " (written by a newer attnas?)" if version > VERSION else ""
            raise GenotypeError(
                f"{source}: unsupported genotype version {version}{newer}; "
                f"this attnas reads version {VERSION}"
            )
        _check_keys(d, _TOP_KEYS, source)
        nodes = validate_nodes(_require(d, "nodes", source), source)
        cell = _require(d, "cell", source)
        if not isinstance(cell, Mapping):
            raise GenotypeError(f"{source}: cell must be an object, got {_type_name(cell)}")
        where = f"{source}: cell"
        cell = dict(cell)
        for old, new in _OLD_CELL_KEYS.items():
            if old in cell:
                if new in cell:
                    raise GenotypeError(f"{source}: cell has both {old!r} (its old name) and "
                                        f"{new!r}; keep {new!r}")
                cell[new] = cell.pop(old)
        _check_keys(cell, _CELL_KEYS, source, "cell")
        values = {key: _require(cell, key, source, "cell") for key in _CELL_KEYS}
        _validate_cell(values["inner_ratio"], values["kv_pool"], values["position_encoding"],
                       where)
        num_nodes = values["num_nodes"]
        if not _is_int(num_nodes):
            raise GenotypeError(
                f"{where}.num_nodes = {num_nodes!r} must be an integer, "
                f"got {_type_name(num_nodes)}"
            )
        if num_nodes != len(nodes):
            raise GenotypeError(
                f"{where}.num_nodes = {num_nodes} disagrees with the node list "
                f"({len(nodes)} node{'s' if len(nodes) != 1 else ''})"
            )
        provenance = d.get("provenance", {})
        if not isinstance(provenance, Mapping):
            raise GenotypeError(
                f"{source}: provenance must be an object, got {_type_name(provenance)}"
            )
        return cls(
            nodes=nodes,
            inner_ratio=float(values["inner_ratio"]),
            kv_pool=values["kv_pool"],
            position=values["position_encoding"],
            provenance=dict(provenance),
        )

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> Genotype:
        """Parse and validate a JSON document (see :meth:`from_dict`)."""
        if not text.strip():
            raise GenotypeError(f"{source}: empty file, expected a JSON genotype")
        try:
            doc = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as err:
            raise GenotypeError(
                f"{source}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
            ) from None
        except ValueError as err:  # from _reject_constant
            raise GenotypeError(f"{source}: invalid JSON: {err}") from None
        return cls.from_dict(doc, source)

    # ------------------------------------------------------------------ derivation

    @classmethod
    def from_arch(cls, arch: ArchParameters, *, inner_ratio: float = 0.5, kv_pool: bool = True,
                  position: str = "none", provenance: Mapping | None = None) -> Genotype:
        """Discretise architecture parameters: argmax op and argmax input per node.

        The provenance records ``softmax(alpha / tau)`` (``alpha_softmax``, K x 24, columns
        in ``alpha_columns`` order), the input weights ``softmax(beta)`` (``beta_softmax``,
        K x K, zero above the diagonal), the temperature, the package version and the
        creation time; entries of ``provenance`` (run, epoch, dataset, seed, ...) are added
        and win over these.
        """
        if not isinstance(arch, ArchParameters):
            raise GenotypeError(
                f"from_arch needs supernet.cells.ArchParameters, got {type(arch).__name__}"
            )
        record: dict[str, Any] = {
            "package_version": _package_version(),
            "created": _now(),
            "temperature": round(float(arch.temperature), 6),
            "alpha_columns": list(OP_NAMES),
            "alpha_softmax": _rounded(arch.op_weights().detach().cpu().tolist()),
            "beta_softmax": _rounded(arch.input_weights().detach().cpu().tolist()),
        }
        record.update(provenance or {})
        return cls(nodes=arch.derive(), inner_ratio=inner_ratio, kv_pool=kv_pool,
                   position=position, provenance=record)

    # ------------------------------------------------------------------ display

    def summary(self) -> str:
        """A short human-readable description, one line per node, for the terminal."""
        width = max(len(nd.op) for nd in self.nodes)
        lines = [
            f"cell: {self.num_nodes} node{'s' if self.num_nodes != 1 else ''}, "
            f"inner_ratio {self.inner_ratio:g}, kv_pool {'on' if self.kv_pool else 'off'}, "
            f"position {self.position}"
        ]
        for k, nd in enumerate(self.nodes):
            src = "input" if nd.input == 0 else f"node {nd.input - 1}"
            lines.append(f"node {k}: {nd.op:<{width}} <- {src}")
        lines.append(
            f"sink: concat(node 0..{self.num_nodes - 1}) -> 1x1x1 conv -> BN -> + input"
            if self.num_nodes > 1 else "sink: node 0 -> 1x1x1 conv -> BN -> + input"
        )
        facts = [f"{key} {self.provenance[key]}" for key in ("run", "epoch", "dataset", "seed")
                 if self.provenance.get(key) is not None
                 and not isinstance(self.provenance[key], (dict, list))]
        if isinstance(self.provenance.get("kind"), str):
            facts.insert(0, self.provenance["kind"])
        if facts:
            lines.append("from: " + ", ".join(facts))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (genotypes hold finite numbers only)")


def _pretty_json(doc: Any, indent: int, level: int = 0) -> str:
    """``json.dumps(indent=...)`` but with leaf objects and number lists on one line."""
    flat = json.dumps(doc, allow_nan=False)
    is_leaf = (
        isinstance(doc, dict) and not any(isinstance(v, (dict, list)) for v in doc.values())
    ) or (isinstance(doc, list) and not any(isinstance(v, (dict, list)) for v in doc)
          and not (len(flat) > 100 and any(isinstance(v, str) for v in doc)))
    if is_leaf or not isinstance(doc, (dict, list)):
        return flat
    pad, inner = " " * (indent * level), " " * (indent * (level + 1))
    if isinstance(doc, dict):
        items = [f"{inner}{json.dumps(str(k))}: {_pretty_json(v, indent, level + 1)}"
                 for k, v in doc.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}" if items else "{}"
    items = [f"{inner}{_pretty_json(v, indent, level + 1)}" for v in doc]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]" if items else "[]"


# --------------------------------------------------------------------------- files


def save_genotype(genotype: Genotype, path: str | os.PathLike) -> Path:
    """Write ``genotype`` as JSON to ``path`` atomically (temp file + ``os.replace``).

    The parent folder is created if needed. Returns the path written.
    """
    if not isinstance(genotype, Genotype):
        raise GenotypeError(f"save_genotype needs a Genotype, got {type(genotype).__name__}")
    path = Path(path)
    return atomic_write_text(path, genotype.to_json())


def load_genotype(path: str | os.PathLike) -> Genotype:
    """Read and validate a genotype JSON file.

    Raises:
        GenotypeError: missing/unreadable file, invalid JSON (with line and column), or any
            field that does not fit the search space -- the message starts with the path.
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise GenotypeError(f"{source}: no such genotype file")
    if path.is_dir():
        raise GenotypeError(f"{source}: is a directory, expected a genotype JSON file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise GenotypeError(f"{source}: cannot read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise GenotypeError(
            f"{source}: not a text file (invalid UTF-8 at byte {err.start}); "
            f"expected a genotype JSON file"
        ) from None
    return Genotype.from_json(text.removeprefix("\ufeff"), source)


# --------------------------------------------------------------------------- random search


def random_genotype(num_nodes: int = 3, seed: int | None = None, *, inner_ratio: float = 0.5,
                    kv_pool: bool = True, position: str = "none",
                    provenance: Mapping | None = None) -> Genotype:
    """A cell drawn uniformly from the search space (the random-search baseline).

    Each node gets an op uniformly from the 24 candidates and an input uniformly from
    ``0..k``. The same ``seed`` gives the same genotype; with ``seed=None`` a seed is drawn
    and recorded in the provenance so the cell can be reproduced.
    """
    if not _is_int(num_nodes) or num_nodes < 1:
        raise GenotypeError(f"num_nodes must be a positive integer, got {num_nodes!r}")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    elif not _is_int(seed):
        raise GenotypeError(f"seed must be an integer or None, got {seed!r}")
    rng = random.Random(seed)
    nodes = [NodeSpec(rng.choice(OP_NAMES), rng.randint(0, k)) for k in range(num_nodes)]
    record: dict[str, Any] = {
        "kind": "random",
        "seed": seed,
        "package_version": _package_version(),
        "created": _now(),
    }
    record.update(provenance or {})
    return Genotype(nodes=nodes, inner_ratio=inner_ratio, kv_pool=kv_pool, position=position,
                    provenance=record)

