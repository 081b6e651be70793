"""Attention cells: the searchable supernet cell and the fixed (derived) cell.

Both map ``x`` ``(N, C, T, H, W)`` to the same shape::

    u   = proj(x)                                  1x1x1 conv C -> Ci (Ci = round(C * inner_ratio))
    h_0 = u
    h_k = BN_k(edge_k( sum_j b_kj * h_j , j < k ))  k = 1..K   (node k-1 of the K nodes)
    y   = BN(conv_1x1x1(concat(h_1..h_K)))          Ci*K -> C, BN weight (gamma) initialised to 0
    out = x + y

In :class:`SearchCell` ``b_k = softmax(beta_k)`` over the inputs available to node k and
each edge is a :class:`~supernet.ops.MixedEdge` weighted by ``softmax(alpha_k / tau)``.
alpha ``(K, 24)`` and beta ``(K, K)`` (row k uses its first k+1 entries) live in one
:class:`ArchParameters` owned by the network and shared by every cell position.
In :class:`FixedCell` each node has one op and one input (a genotype's node list).
With gamma = 0 a new cell is the identity, so inserting it cannot hurt a pretrained net.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn

from .nodes import NodeSpec, validate_nodes
from .ops import AttentionOp, MixedEdge, PointwiseConv3d, check_video
from .space import MAX_NODES, NUM_OPS, OP_NAMES, POSITIONS, check_choice

__all__ = ["NodeSpec", "ArchParameters", "SearchCell", "FixedCell", "fixed_from_search",
           "inner_width", "recalibrate_batchnorm", "BN_MODES", "check_bn_mode"]


def inner_width(channels: int, inner_ratio: float) -> int:
    """Cell inner width ``round(channels * inner_ratio)``; ``ValueError`` if unusable."""
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 2:
        raise ValueError(f"a cell needs an integer channel count >= 2, got {channels!r}")
    if not 0.0 < float(inner_ratio) <= 4.0:
        raise ValueError(f"inner_ratio must be in (0, 4], got {inner_ratio!r}")
    return max(1, round(channels * inner_ratio))


class ArchParameters(nn.Module):
    """alpha ``(K, 24)`` (op choice per node) and beta ``(K, K)`` (input choice per node).

    Besides the learned logits it holds *restrictions*: which candidates each node may
    still use (``op_mask`` ``(K, 24)`` and ``in_mask`` ``(K, K)``, bool, all allowed by
    default). A restricted candidate gets weight exactly 0; a node restricted to one
    candidate is *pinned*, and the cells then run that single op (or read that single
    input) instead of the mixture. Selection rules (``derive.select``) use them to remove
    or pin candidates, and single-path training pins one sampled path per step. The masks
    are not saved in checkpoints (a restriction is a transient probe).

    Args:
        num_nodes: K, nodes per cell (default 3).
        init_scale: std of the small random init (DARTS uses 1e-3; 0 = exactly uniform).
    """

    def __init__(self, num_nodes: int = 3, init_scale: float = 1e-3) -> None:
        super().__init__()
        if not isinstance(num_nodes, int) or not 1 <= num_nodes <= MAX_NODES:
            raise ValueError(f"num_nodes must be an integer in 1..{MAX_NODES}, got {num_nodes!r}"
                             " (a cell's cost grows with its nodes; supernet.space.MAX_NODES)")
        self.num_nodes = num_nodes
        self.alpha = nn.Parameter(init_scale * torch.randn(num_nodes, NUM_OPS))
        self.beta = nn.Parameter(init_scale * torch.randn(num_nodes, num_nodes))
        mask = torch.ones(num_nodes, num_nodes).tril().bool()
        self.register_buffer("beta_mask", mask, persistent=False)
        self.register_buffer("op_mask", torch.ones(num_nodes, NUM_OPS, dtype=torch.bool),
                             persistent=False)
        self.register_buffer("in_mask", mask.clone(), persistent=False)
        #: softmax temperature on alpha (an anti-collapse schedule may lower it)
        self.register_buffer("temperature", torch.tensor(1.0))
        self._pinned_ops: list[int | None] = [None] * num_nodes
        self._pinned_inputs: list[int | None] = [0] + [None] * (num_nodes - 1)

    def op_weights(self) -> Tensor:
        """``softmax(alpha / tau)`` over each node's allowed candidates, ``(K, 24)``."""
        logits = self.alpha / self.temperature
        return logits.masked_fill(~self.op_mask, float("-inf")).softmax(-1)

    def input_weights(self) -> Tensor:
        """``softmax(beta)`` over each node's allowed inputs, ``(K, K)`` lower-triangular."""
        return self.beta.masked_fill(~(self.beta_mask & self.in_mask), float("-inf")).softmax(-1)

    # -- restrictions ------------------------------------------------------------------
    def pinned_op(self, node: int) -> int | None:
        """The op index node ``node`` is restricted to, or None if it still mixes."""
        return self._pinned_ops[node]

    def pinned_input(self, node: int) -> int | None:
        """The input index node ``node`` is restricted to, or None if it still mixes."""
        return self._pinned_inputs[node]

    def restrict(self, node: int, ops: Sequence[int] | None = None,
                 inputs: Sequence[int] | None = None) -> None:
        """Allow only ``ops`` (op indices) and/or ``inputs`` (0..node) at ``node``;
        ``None`` leaves that part as it is. ``ValueError`` on an empty or bad set."""
        if not 0 <= node < self.num_nodes:
            raise ValueError(f"node {node} out of range 0..{self.num_nodes - 1}")
        if ops is not None:
            ops = sorted({int(o) for o in ops})
            if not ops or ops[0] < 0 or ops[-1] >= NUM_OPS:
                raise ValueError(f"node {node}: op indices must be a non-empty subset of "
                                 f"0..{NUM_OPS - 1}, got {ops}")
            row = torch.zeros(NUM_OPS, dtype=torch.bool)
            row[ops] = True
            self.op_mask[node] = row.to(self.op_mask.device)
            self._pinned_ops[node] = ops[0] if len(ops) == 1 else None
        if inputs is not None:
            inputs = sorted({int(i) for i in inputs})
            if not inputs or inputs[0] < 0 or inputs[-1] > node:
                raise ValueError(f"node {node}: inputs must be a non-empty subset of "
                                 f"0..{node}, got {inputs}")
            row = torch.zeros(self.num_nodes, dtype=torch.bool)
            row[inputs] = True
            self.in_mask[node] = row.to(self.in_mask.device)
            self._pinned_inputs[node] = inputs[0] if len(inputs) == 1 else None

    def pin(self, nodes: Sequence) -> None:
        """Restrict every node to one op and one input (a node list, as a genotype's)."""
        nodes = validate_nodes(nodes, "cell")
        if len(nodes) != self.num_nodes:
            raise ValueError(f"expected {self.num_nodes} nodes, got {len(nodes)}")
        for k, nd in enumerate(nodes):
            self.restrict(k, ops=[OP_NAMES.index(nd.op)], inputs=[nd.input])

    def clear_restrictions(self) -> None:
        """Allow every candidate and input again (the default)."""
        self.op_mask.fill_(True)
        self.in_mask.copy_(self.beta_mask)
        self._pinned_ops = [None] * self.num_nodes
        self._pinned_inputs = [0] + [None] * (self.num_nodes - 1)

    def restrictions(self) -> tuple[Tensor, Tensor]:
        """A copy of ``(op_mask, in_mask)``, for :meth:`set_restrictions`."""
        return self.op_mask.clone(), self.in_mask.clone()

    def set_restrictions(self, state: tuple[Tensor, Tensor]) -> None:
        """Restore masks returned by :meth:`restrictions`."""
        op_mask, in_mask = state
        for k in range(self.num_nodes):
            self.restrict(k, ops=op_mask[k].nonzero().flatten().tolist(),
                          inputs=in_mask[k, :k + 1].nonzero().flatten().tolist())

    def derive(self) -> list[NodeSpec]:
        """Argmax op and argmax input per node (among the allowed candidates)."""
        ops = self.op_weights().detach().argmax(-1).tolist()
        ins = self.input_weights().detach().argmax(-1).tolist()
        return [NodeSpec(OP_NAMES[o], int(i)) for o, i in zip(ops, ins)]

    def set_one_hot(self, nodes: Sequence, scale: float = 1e4) -> None:
        """Make alpha/beta (numerically) one-hot on a node list (for tests and probes)."""
        nodes = validate_nodes(nodes, "cell")
        if len(nodes) != self.num_nodes:
            raise ValueError(f"expected {self.num_nodes} nodes, got {len(nodes)}")
        with torch.no_grad():
            self.alpha.fill_(-scale)
            self.beta.fill_(-scale)
            for k, nd in enumerate(nodes):
                self.alpha[k, OP_NAMES.index(nd.op)] = scale
                self.beta[k, nd.input] = scale


class _CellBase(nn.Module):
    def __init__(self, channels: int, num_nodes: int, inner_ratio: float, kv_pool: bool,
                 position: str) -> None:
        super().__init__()
        self.channels = channels
        self.inner = inner_width(channels, inner_ratio)
        self.inner_ratio = float(inner_ratio)
        self.kv_pool = bool(kv_pool)
        self.position = check_choice(position, POSITIONS, "position")
        self.num_nodes = num_nodes
        self.proj = PointwiseConv3d(channels, self.inner, bias=False)
        # one BatchNorm per node output: unnormalised candidates (identity / relu maps and
        # affinities) chained over K nodes otherwise grow polynomially and overflow
        self.norms = nn.ModuleList(nn.BatchNorm3d(self.inner) for _ in range(num_nodes))
        self.sink = PointwiseConv3d(self.inner * num_nodes, channels, bias=False)
        self.bn = nn.BatchNorm3d(channels)
        nn.init.zeros_(self.bn.weight)

    def _finish(self, x: Tensor, nodes: list[Tensor]) -> Tensor:
        return x + self.bn(self.sink(torch.cat(nodes, 1)))


class SearchCell(_CellBase):
    """The supernet cell: every node is a :class:`MixedEdge` over all 24 candidates.

    Args:
        channels: C of the input/output ``(N, C, T, H, W)``.
        arch: the network's shared :class:`ArchParameters` (held by reference, not
            registered, so it is saved and optimised once, by its owner).
        inner_ratio: Ci / C (default 0.5).
        kv_pool: max-pool dot-product keys/values 1x2x2 (default True).
        position: ``none`` | ``coords`` | ``sincos`` for dot-product candidates.
        candidate_norm: mix the candidates on one scale (:class:`MixedEdge` ``normalize``;
            default False). A pinned node runs its op as it is: the node's BatchNorm
            follows, and a scalar does not change what it passes on.
    """

    def __init__(self, channels: int, arch: ArchParameters, inner_ratio: float = 0.5,
                 kv_pool: bool = True, position: str = "none",
                 candidate_norm: bool = False) -> None:
        if not isinstance(arch, ArchParameters):
            raise ValueError("SearchCell needs the network's ArchParameters as `arch`")
        super().__init__(channels, arch.num_nodes, inner_ratio, kv_pool, position)
        self.__dict__["arch"] = arch  # a reference, not a submodule
        self.edges = nn.ModuleList(
            MixedEdge(self.inner, position, kv_pool, normalize=candidate_norm)
            for _ in range(arch.num_nodes)
        )

    def forward(self, x: Tensor) -> Tensor:
        check_video(x, self.channels)
        arch = self.arch
        ops = arch.op_weights()
        ins = arch.input_weights()
        hs = [self.proj(x)]
        for k, edge in enumerate(self.edges):
            j = arch.pinned_input(k)
            z = hs[j] if j is not None else sum(ins[k, i] * hs[i] for i in range(k + 1))
            o = arch.pinned_op(k)  # a pinned node runs its one op, not the 24-way mixture
            y = edge.single(z, o) if o is not None else edge(z, ops[k])
            hs.append(self.norms[k](y))
        return self._finish(x, hs[1:])


class FixedCell(_CellBase):
    """A derived cell: one op and one input per node.

    Args:
        channels: C of the input/output ``(N, C, T, H, W)``.
        nodes: a sequence of :class:`NodeSpec` / ``(op, input)`` / ``{"op", "input"}``.
        inner_ratio, kv_pool, position: as :class:`SearchCell`.
    """

    def __init__(self, channels: int, nodes: Sequence, inner_ratio: float = 0.5,
                 kv_pool: bool = True, position: str = "none") -> None:
        nodes = validate_nodes(nodes, "cell")
        super().__init__(channels, len(nodes), inner_ratio, kv_pool, position)
        self.nodes = nodes
        self.edges = nn.ModuleList(AttentionOp(self.inner, nd.op, position, kv_pool)
                                   for nd in nodes)

    def forward(self, x: Tensor) -> Tensor:
        check_video(x, self.channels)
        hs = [self.proj(x)]
        for nd, edge, norm in zip(self.nodes, self.edges, self.norms):
            hs.append(norm(edge(hs[nd.input])))
        return self._finish(x, hs[1:])

    def extra_repr(self) -> str:
        return " | ".join(f"{nd.op}<-{nd.input}" for nd in self.nodes)


def fixed_from_search(cell: SearchCell, nodes: Sequence | None = None) -> FixedCell:
    """A :class:`FixedCell` for ``nodes`` (default: the cell's argmax) that inherits the
    search cell's weights (projection, sink, BN, and each chosen op's share of its edge)."""
    nodes = validate_nodes(nodes if nodes is not None else cell.arch.derive(), "cell")
    fixed = FixedCell(cell.channels, nodes, cell.inner_ratio, cell.kv_pool, cell.position)
    ref = next(cell.parameters())
    fixed = fixed.to(device=ref.device, dtype=ref.dtype)
    fixed.proj.load_state_dict(cell.proj.state_dict())
    fixed.sink.load_state_dict(cell.sink.state_dict())
    fixed.bn.load_state_dict(cell.bn.state_dict())
    fixed.norms.load_state_dict(cell.norms.state_dict())
    for src, dst in zip(cell.edges, fixed.edges):
        want = dst.weights.state_dict()
        have = src.weights.state_dict()
        dst.weights.load_state_dict({k: have[k] for k in want})
    return fixed


#: how BatchNorm normalises while a selection rule scores (``select_bn``): ``recalibrate``
#: recomputes the running statistics for each scored network, ``batch`` normalises every
#: validation batch by its own statistics
BN_MODES: tuple[str, ...] = ("recalibrate", "batch")


def check_bn_mode(mode: str, name: str | None = None) -> str:
    """Return ``mode`` if it is one of :data:`BN_MODES`, else ``ValueError`` listing them
    (naming the option ``name`` where given, e.g. ``select_bn``)."""
    if mode not in BN_MODES:
        what = f"{name} {mode!r}" if name else f"BatchNorm mode {mode!r} for selection"
        raise ValueError(f"unknown {what}; accepted: {', '.join(BN_MODES)}")
    return mode


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Sequence[Tensor]) -> None:
    """Recompute every BatchNorm's running mean/var as the exact average over ``batches``
    (videos ``(N, 3, T, H, W)``) with the model as it is now (its current restrictions).

    A supernet's running statistics are an average over many mixtures (and, single-path,
    over many paths): they are not those of the network being evaluated. This is
    :func:`torch.optim.swa_utils.update_bn` (statistics reset, cumulative average, momenta
    restored, forward under ``no_grad``), except that an empty list leaves the statistics
    as they are. Leaves the model in eval mode.
    """
    try:
        if batches:
            update_bn(batches, model)
    finally:
        model.eval()
