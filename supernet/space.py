"""The search space, defined once, as data.

An *operation* (one candidate on a cell edge) is ``family x dimension x activation``:

* family: ``map`` (a pointwise weighting of positions, CBAM/SE-like) or ``dot``
  (pairwise similarity between positions, Transformer/non-local-like);
* dimension: ``spatial`` (within each frame), ``temporal`` (across frames, per position)
  or ``spatiotemporal`` (all T*H*W positions);
* activation applied to the attention map / affinity: ``softmax``, ``sigmoid``,
  ``relu`` or ``identity``.

That is 2*3*4 = 24 candidates, each with a stable string name such as
``dot.spatiotemporal.softmax``. The order of :data:`OPS` is part of the checkpoint
format (it indexes the columns of alpha): append, never reorder.
"""

from __future__ import annotations

from typing import NamedTuple

FAMILIES: tuple[str, ...] = ("map", "dot")
DIMENSIONS: tuple[str, ...] = ("spatial", "temporal", "spatiotemporal")
ACTIVATIONS: tuple[str, ...] = ("softmax", "sigmoid", "relu", "identity")
#: Positional signal given to every dot-product candidate of a cell.
POSITIONS: tuple[str, ...] = ("none", "coords", "sincos")


class OpSpec(NamedTuple):
    """One candidate operation of the space."""

    family: str
    dimension: str
    activation: str

    @property
    def name(self) -> str:
        """Stable string name, ``family.dimension.activation``."""
        return f"{self.family}.{self.dimension}.{self.activation}"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.name


#: All candidates, family-major, then dimension, then activation.
OPS: tuple[OpSpec, ...] = tuple(
    OpSpec(f, d, a) for f in FAMILIES for d in DIMENSIONS for a in ACTIVATIONS
)
OP_NAMES: tuple[str, ...] = tuple(op.name for op in OPS)
#: the most nodes a cell may have. A cell's cost grows with its nodes (one attention op each,
#: and a sink over all K of them); AttentionNAS-style cells have a handful. The bound turns a
#: typo (a 1000-node genotype: 5 GB, no step in 5 minutes) into a clear error.
MAX_NODES = 16

NUM_OPS: int = len(OPS)
_INDEX = {name: i for i, name in enumerate(OP_NAMES)}


def op_index(name: str) -> int:
    """Column of ``name`` in alpha; ``ValueError`` listing the accepted names if unknown."""
    try:
        return _INDEX[name]
    except KeyError:
        raise ValueError(
            f"unknown operation {name!r}; expected 'family.dimension.activation' with "
            f"family in {FAMILIES}, dimension in {DIMENSIONS}, activation in {ACTIVATIONS} "
            f"(e.g. 'dot.spatiotemporal.softmax')"
        ) from None


def parse_op(name: str | OpSpec) -> OpSpec:
    """Return the :class:`OpSpec` for a name (or pass an ``OpSpec`` through)."""
    if isinstance(name, OpSpec):
        return name
    if not isinstance(name, str):
        raise ValueError(f"operation must be a string like 'dot.spatial.softmax', got {name!r}")
    return OPS[op_index(name)]


def check_choice(value: str, accepted: tuple[str, ...], what: str) -> str:
    """Return ``value`` if it is in ``accepted``, else raise a ``ValueError`` naming both."""
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(accepted)}")
    return value


#: the three factors of an operation, in name order, with their values
FACTORS: dict[str, tuple[str, ...]] = {
    "family": FAMILIES, "dimension": DIMENSIONS, "activation": ACTIVATIONS,
}


def factor_marginals(weights) -> dict[str, list[list[float]]]:
    """Factor-level marginals of per-node op weights.

    ``weights`` ``(K, 24)`` (tensor, array or nested lists; columns in :data:`OPS` order,
    e.g. ``softmax(alpha)``) -> ``{"family": (K, 2), "dimension": (K, 3), "activation":
    (K, 4)}`` as nested lists: for each node, the summed weight of the ops that share each
    value of the factor (values in :data:`FACTORS` order). Far easier to read than 24 wide
    rows: ``family [0.7, 0.3]`` says "mostly map-based" at a glance.
    """
    if hasattr(weights, "detach"):
        weights = weights.detach().cpu().tolist()
    rows = [list(map(float, row)) for row in weights]
    for k, row in enumerate(rows):
        if len(row) != NUM_OPS:
            raise ValueError(f"node {k}: expected {NUM_OPS} op weights, got {len(row)}")
    out: dict[str, list[list[float]]] = {}
    for f, (factor, values) in enumerate(FACTORS.items()):
        out[factor] = [[sum(w for op, w in zip(OPS, row) if op[f] == v) for v in values]
                       for row in rows]
    return out
