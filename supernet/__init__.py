"""attnas supernet: the search space, attention operations, cells, backbones, blocks and
Lightning modules."""

from .cells import ArchParameters, FixedCell, NodeSpec, SearchCell
from .space import ACTIVATIONS, DIMENSIONS, FAMILIES, OP_NAMES, OPS, POSITIONS, OpSpec, parse_op

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "DIMENSIONS", "FAMILIES", "OPS", "OP_NAMES", "POSITIONS", "OpSpec",
    "parse_op", "ArchParameters", "SearchCell", "FixedCell", "NodeSpec",
]
