"""What the table holds: cells named by a canonical architecture string.

A tabled cell is either a **baseline block** (``none``, ``nonlocal``, ``nonlocal_sincos``,
``a2``, ``cinst``, ``stinc``) or a **genotype** of the space, named like NAS-Bench-201's
architecture strings: one ``op~input`` per node, joined by ``+``, e.g.
``dot.spatiotemporal.softmax~0+map.temporal.sigmoid~1``. Cell settings that differ from the
default search space's (position ``sincos``, inner ratio 0.5, pooled keys/values) follow
after a ``;``: ``...~0;position=none;inner_ratio=0.171875``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from supernet.genotype import Genotype, GenotypeError
from supernet.space import OP_NAMES

__all__ = ["BASELINES", "TableCell", "cell_key", "parse_cell", "one_node_cells",
           "sample_cells", "DEFAULT_SETTINGS"]

#: baseline name -> (block, block keyword arguments)
BASELINES: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("none", {}),
    "nonlocal": ("nonlocal", {}),
    "nonlocal_sincos": ("nonlocal", {"position": "sincos"}),
    "a2": ("a2", {}),
    "cinst": ("cinst", {}),
    "stinc": ("stinc", {}),
}
#: the cell settings of the default search space; a key names only those that differ
DEFAULT_SETTINGS: dict[str, Any] = {"position": "sincos", "inner_ratio": 0.5, "kv_pool": True}


@dataclass(frozen=True)
class TableCell:
    """A cell the table can train: ``key`` and what :func:`create_backbone` needs."""

    key: str
    block: str
    block_kwargs: tuple[tuple[str, Any], ...] = ()
    genotype: Genotype | None = None

    @property
    def num_nodes(self) -> int:
        """Operation nodes (0 for a baseline block)."""
        return 0 if self.genotype is None else self.genotype.num_nodes

    def backbone_kwargs(self) -> dict[str, Any]:
        """``block`` and ``block_kwargs`` of :func:`supernet.factory.create_backbone`."""
        if self.genotype is not None:
            return {"block": "cell", "block_kwargs": {"genotype": self.genotype}}
        return {"block": self.block, "block_kwargs": dict(self.block_kwargs)}


def cell_key(genotype: Genotype) -> str:
    """The canonical architecture string of ``genotype`` (provenance is not part of it)."""
    key = "+".join(f"{n.op}~{n.input}" for n in genotype.nodes)
    settings = {"position": genotype.position, "inner_ratio": genotype.inner_ratio,
                "kv_pool": genotype.kv_pool}
    for name, value in settings.items():
        if value != DEFAULT_SETTINGS[name]:
            key += f";{name}={int(value) if isinstance(value, bool) else value}"
    return key


def _from_genotype(genotype: Genotype) -> TableCell:
    clean = Genotype(nodes=genotype.nodes, inner_ratio=genotype.inner_ratio,
                     kv_pool=genotype.kv_pool, position=genotype.position)
    return TableCell(key=cell_key(clean), block="cell", genotype=clean)


def parse_cell(spec: str | Genotype) -> TableCell:
    """A :class:`TableCell` from a baseline name, an architecture string or a genotype.

    Raises:
        ValueError: not a baseline and not a valid architecture string of the space (the
            message says what is accepted).
    """
    if isinstance(spec, Genotype):
        return _from_genotype(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a cell is a baseline name ({', '.join(BASELINES)}) or an "
                         f"architecture string like 'dot.spatial.softmax~0', got {spec!r}")
    spec = spec.strip()
    if spec in BASELINES:
        block, kwargs = BASELINES[spec]
        return TableCell(key=spec, block=block, block_kwargs=tuple(sorted(kwargs.items())))
    arch, *options = spec.split(";")
    settings = dict(DEFAULT_SETTINGS)
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or name not in settings:
            raise ValueError(f"cell {spec!r}: unknown setting {option!r}; settings: "
                             f"{', '.join(f'{k}=VALUE' for k in settings)}")
        settings[name] = (value if name == "position" else float(value) if name ==
                          "inner_ratio" else value.lower() in ("1", "true"))
    nodes = []
    for part in arch.split("+"):
        op, sep, inp = part.partition("~")
        if not sep or not inp.strip().isdigit():
            raise ValueError(f"cell {spec!r}: node {part!r} is not 'op~input' (e.g. "
                             f"'dot.spatial.softmax~0'); baselines: {', '.join(BASELINES)}")
        nodes.append((op.strip(), int(inp)))
    try:
        genotype = Genotype(nodes=nodes, **settings)
    except GenotypeError as err:
        raise ValueError(f"cell {spec!r} is outside the space: {err}") from None
    return _from_genotype(genotype)


def one_node_cells() -> list[TableCell]:
    """The 24 one-node cells of the default space (input 0, sincos positions)."""
    return [parse_cell(f"{op}~0") for op in OP_NAMES]


def sample_cells(count: int, num_nodes: int = 3, seed: int = 0) -> list[TableCell]:
    """``count`` distinct cells drawn uniformly from the default space: each node's op
    uniform over the 24, its input uniform over ``0..k`` (the cell input or an earlier
    node). Deterministic for ``seed``."""
    rng = random.Random(seed)
    out: dict[str, TableCell] = {}
    while len(out) < count:
        nodes = [(rng.choice(OP_NAMES), rng.randint(0, k)) for k in range(num_nodes)]
        cell = _from_genotype(Genotype(nodes=nodes, **DEFAULT_SETTINGS))
        out.setdefault(cell.key, cell)
    return list(out.values())
