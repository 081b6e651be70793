"""attnas supernet: the search space, attention operations, cells, backbones, blocks and
Lightning modules."""

from .cells import ArchParameters, FixedCell, NodeSpec, SearchCell
from .space import ACTIVATIONS, DIMENSIONS, FAMILIES, OP_NAMES, OPS, POSITIONS, OpSpec, parse_op
from .version import __version__ as __version__

__all__ = [
    "ACTIVATIONS", "DIMENSIONS", "FAMILIES", "OPS", "OP_NAMES", "POSITIONS", "OpSpec",
    "parse_op", "ArchParameters", "SearchCell", "FixedCell", "NodeSpec",
]
from .backbones import S3D, VideoBackbone, VideoResNet, resolve_positions  # noqa: E402
from .blocks import CinST, DoubleAttention, NonLocalBlock, STinC  # noqa: E402
from .factory import BACKBONE_NAMES, BLOCK_NAMES, create_backbone, create_block  # noqa: E402

__all__ += [
    "create_block", "create_backbone", "BLOCK_NAMES", "BACKBONE_NAMES", "VideoResNet",
    "VideoBackbone", "S3D",
    "resolve_positions", "NonLocalBlock", "DoubleAttention", "CinST", "STinC",
]
