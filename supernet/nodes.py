"""The nodes of a fixed cell and their one validation: :class:`NodeSpec` (an op name and
the index of the input it reads) and :func:`validate_nodes`, shared by
:class:`~supernet.cells.FixedCell` (and the arch pins) and the genotype format
(:mod:`supernet.genotype`), with the one-line :class:`GenotypeError` messages that name
where the problem is, e.g. ``cell.json: nodes[1].input = 5 is out of range (node 1 may read
0..1)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .space import ACTIVATIONS, DIMENSIONS, FAMILIES, MAX_NODES, OP_NAMES, OpSpec

__all__ = ["NodeSpec", "GenotypeError", "validate_nodes"]

_NODE_KEYS = ("op", "input")


class NodeSpec(NamedTuple):
    """One node of a fixed cell: an op name and the index of its input
    (0 = the projected cell input, j >= 1 = the output of node j-1)."""

    op: str
    input: int


class GenotypeError(ValueError):
    """A genotype (file, dict or arguments) is malformed; the message says what and where."""


def _type_name(value: Any) -> str:
    """JSON-ish name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _op_hint(name: str) -> str:
    """``did you mean ...?`` for a misspelt op name (empty if nothing is close)."""
    normalised = name.strip().lower()
    for sep in ("/", "_", "-", " ", ":", ","):
        normalised = normalised.replace(sep, ".")
    if normalised in OP_NAMES:
        return f"; did you mean {normalised!r}?"
    close = difflib.get_close_matches(normalised, OP_NAMES, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_op_message(where: str, value: Any) -> str:
    accepted = (
        f"expected 'family.dimension.activation' with family in {'|'.join(FAMILIES)}, "
        f"dimension in {'|'.join(DIMENSIONS)}, activation in {'|'.join(ACTIVATIONS)}, "
        f"e.g. 'dot.spatiotemporal.softmax'"
    )
    if not isinstance(value, str):
        return f"{where} = {value!r} must be a string ({accepted})"
    hint = _op_hint(value)
    return f"{where} = {value!r} is not an operation of the search space{hint} ({accepted})"


def _field(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_keys(obj: Mapping, accepted: Sequence[str], source: str, path: str = "") -> None:
    """Reject fields not in ``accepted`` (a typo must not silently fall back to a default)."""
    unknown = [k for k in obj if k not in accepted]
    if unknown:
        raise GenotypeError(
            f"{source}: unknown field '{_field(path, str(unknown[0]))}' "
            f"(accepted{' in ' + path if path else ''}: {', '.join(accepted)})"
        )


def _require(obj: Mapping, key: str, source: str, path: str = "") -> Any:
    if key not in obj:
        raise GenotypeError(f"{source}: missing field '{_field(path, key)}'")
    return obj[key]


def validate_nodes(raw: Any, source: str) -> list[NodeSpec]:
    """Check a node list (``{"op", "input"}`` objects or ``(op, input)`` pairs; an op may be
    an :class:`~supernet.space.OpSpec`) against the search space; return it as
    :class:`NodeSpec` s. Raises :class:`GenotypeError` naming ``source`` and the field."""
    if not isinstance(raw, (list, tuple)):
        raise GenotypeError(f"{source}: nodes must be an array, got {_type_name(raw)}")
    if len(raw) == 0:
        raise GenotypeError(f"{source}: nodes is empty (a cell needs at least one node)")
    if len(raw) > MAX_NODES:
        raise GenotypeError(f"{source}: {len(raw)} nodes, more than the {MAX_NODES} a cell may "
                            "have (its cost grows with its nodes; supernet.space.MAX_NODES)")
    nodes = []
    for k, node in enumerate(raw):
        where = f"{source}: nodes[{k}]"
        if isinstance(node, Mapping):
            _check_keys(node, _NODE_KEYS, source, f"nodes[{k}]")
            op = _require(node, "op", source, f"nodes[{k}]")
            inp = _require(node, "input", source, f"nodes[{k}]")
        elif isinstance(node, (list, tuple)) and len(node) == 2:  # NodeSpec / (op, input)
            op, inp = node
            if isinstance(op, OpSpec):
                op = op.name
        else:
            raise GenotypeError(
                f"{where} must be an object {{\"op\": ..., \"input\": ...}}, "
                f"got {_type_name(node)} {node!r}"
            )
        if not isinstance(op, str) or op not in OP_NAMES:
            raise GenotypeError(_unknown_op_message(f"{where}.op", op))
        if not _is_int(inp):
            raise GenotypeError(
                f"{where}.input = {inp!r} must be an integer (0 = cell input, j = node j-1), "
                f"got {_type_name(inp)}"
            )
        if not 0 <= inp <= k:
            raise GenotypeError(
                f"{where}.input = {inp} is out of range (node {k} may read 0..{k})"
            )
        nodes.append(NodeSpec(op, int(inp)))
    return nodes
