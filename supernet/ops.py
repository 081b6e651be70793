"""Attention operations of the search space, single and mixed.

Every operation maps ``z`` of shape ``(N, C, T, H, W)`` to the same shape.

* **dot** ``(family, dim, act)``: ``q = Wq(z+pos)``, ``k = Wk(z+pos)``, ``v = Wv(z)``
  (1x1x1 convs, width C); keys/values optionally max-pooled 1x2x2 over space
  (spatial / spatiotemporal only: temporal attention keeps each position's own track).
  Positions are grouped by ``dim`` -- spatial: sequences of H*W per frame, temporal:
  sequences of T per pixel, spatiotemporal: one sequence of T*H*W -- and
  ``S = q k^T / sqrt(C)``. The attention matrix is ``softmax(S)`` over keys, or
  ``sigmoid(S) / Lk``, ``relu(S) / Lk``, ``S / Lk`` (normalised by the number of keys,
  as the dot-product non-local variant is). Output ``A v``.
* **map** ``(family, dim, act)``: per-position channel statistics ``[mean_c, max_c]`` are
  averaged over the axes that are *not* attended, a small conv (2->1 channels; 1x7x7
  spatial, 3x1x1 temporal, 3x3x3 spatiotemporal) gives logits over the attended
  positions, the activation makes a map (softmax over positions is rescaled by their
  number so the mean weight is 1), broadcast over the rest and multiplied onto ``v``.

All candidates of an edge share one set of weights (:class:`EdgeWeights`): ``q``, ``k``,
``v`` and the three map convs, so the 24 candidates cost little more than one. The fast
:class:`MixedEdge` mixes the activations on the affinity (one ``S`` and one ``A v`` per
dimension) and the maps before they multiply ``v``; :func:`reference_mixed_edge` is the
explicit weighted sum of the 24 single ops, kept for tests and benchmarks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dispatch import ChoicePoint, register
from .space import ACTIVATIONS, DIMENSIONS, OPS, POSITIONS, OpSpec, check_choice, parse_op

__all__ = [
    "EdgeWeights",
    "AttentionOp",
    "MixedEdge",
    "reference_mixed_edge",
    "single_op",
    "positional_encoding",
    "check_video",
    "PointwiseConv3d",
    "POINTWISE",
    "DOT_SOFTMAX",
    "pool_kv",
    "with_position",
]

_MAP_KERNELS = {"spatial": (1, 7, 7), "temporal": (3, 1, 1), "spatiotemporal": (3, 3, 3)}


def with_position(x: Tensor, position: str) -> Tensor:
    """The query/key input of ``x`` ``(N, C, T, H, W)``: ``x`` with its
    :func:`positional_encoding` concatenated (``coords``: C + 3 channels) or added
    (``sincos``), or ``x`` itself (``none``)."""
    n, c, t, h, w = x.shape
    pos = positional_encoding(position, c, t, h, w, x.device, x.dtype)
    if pos is None:
        return x
    if position == "coords":
        return torch.cat([x, pos.unsqueeze(0).expand(n, -1, -1, -1, -1)], 1)
    return x + pos.unsqueeze(0)


def pool_kv(x: Tensor) -> Tensor:
    """Max-pool ``(N, C, T, H, W)`` by 1x2x2 over space (ceil mode, so odd sizes keep their
    last row/column; an axis of size 1 is left alone). Equals the usual floor-mode pool on
    even sizes."""
    kh = 2 if x.shape[-2] >= 2 else 1
    kw = 2 if x.shape[-1] >= 2 else 1
    if kh == kw == 1:
        return x
    return F.max_pool3d(x, (1, kh, kw), (1, kh, kw), ceil_mode=True)


def check_video(x: Tensor, channels: int | None = None, what: str = "input") -> None:
    """Raise ``ValueError`` unless ``x`` is ``(N, C, T, H, W)`` (with ``C == channels``)."""
    if not isinstance(x, Tensor) or x.dim() != 5:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{what} must be a 5-D video tensor (N, C, T, H, W), got {shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{what} has {x.shape[1]} channels but this block was built for {channels} "
            f"(shape {tuple(x.shape)})"
        )


def _pointwise_bmm(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A 1x1x1 convolution of ``x`` ``(N, C_in, T, H, W)`` (contiguous or channels-last)
    as one matrix product in the input's layout, no copy: contiguous as ``(C_out, C_in)
    x (N, C_in, L)`` (``bmm``, ``baddbmm`` with a bias), channels-last as ``(N L, C_in)
    x (C_in, C_out)`` (``F.linear``). -> ``(N, C_out, T, H, W)`` in the input's layout."""
    n, c, t, h, w = x.shape
    w2 = weight.flatten(1)  # (C_out, C_in)
    if x.is_contiguous():
        x3 = x.view(n, c, t * h * w)
        w3 = w2.expand(n, -1, -1)
        y = torch.bmm(w3, x3) if bias is None else torch.baddbmm(bias.view(1, -1, 1), w3, x3)
        return y.view(n, -1, t, h, w)
    rows = x.permute(0, 2, 3, 4, 1).reshape(n * t * h * w, c)  # a view when channels-last
    return F.linear(rows, w2, bias).view(n, t, h, w, -1).permute(0, 4, 1, 2, 3)


def _pointwise_conv3d(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.conv3d`` with a 1x1x1 ``weight`` ``(C_out, C_in, 1, 1, 1)``."""
    return F.conv3d(x, weight, bias)


def _pointwise_applicable(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[str, ...]:
    if x.dim() == 5 and (x.is_contiguous()
                         or x.is_contiguous(memory_format=torch.channels_last_3d)):
        return ("bmm", "conv3d")
    return ("conv3d",)


def _pointwise_fixed(x: Tensor, weight: Tensor, bias: Tensor | None) -> str:
    return "bmm" if x.device.type == "cpu" and x.dim() == 5 and x.is_contiguous() else "conv3d"


#: The 1x1x1 convolution's choice point (:mod:`supernet.dispatch`): ``bmm`` (one matrix
#: product in the input's layout) or ``conv3d`` (ATen's convolution, oneDNN on the CPU).
#: Without measuring, a contiguous 5-D input on the CPU takes ``bmm``, anything else the conv.
POINTWISE = register(ChoicePoint("pointwise_conv",
                                 {"bmm": _pointwise_bmm, "conv3d": _pointwise_conv3d},
                                 fixed=_pointwise_fixed, applicable=_pointwise_applicable))


class PointwiseConv3d(nn.Conv3d):
    """A 1x1x1 ``nn.Conv3d`` (stride 1) whose kernel is chosen by measurement.

    Same parameters, state-dict keys, initialisation and function as
    ``nn.Conv3d(in_channels, out_channels, 1, bias=bias)``; ``(N, C_in, T, H, W)`` ->
    ``(N, C_out, T, H, W)``. The product runs through the :data:`POINTWISE` choice point:
    ``conv3d`` (ATen's convolution, which hands a 1x1x1 conv to oneDNN on the CPU when more
    than one thread runs) or ``bmm`` (one batched matrix product on the input's own layout,
    no copy), whichever :mod:`supernet.dispatch` measured faster for this shape, dtype,
    thread count and device; with ``ATTNAS_DISPATCH=fixed``, ``bmm`` for a contiguous input
    on the CPU and the convolution otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return POINTWISE(x, self.weight, self.bias)


def positional_encoding(kind: str, channels: int, t: int, h: int, w: int,
                        device=None, dtype=None) -> Tensor | None:
    """Positional signal for dot-product inputs.

    ``coords`` -> ``(3, T, H, W)``: normalised t, y, x in [-1, 1] (0 for a size-1 axis),
    concatenated to the query/key inputs. ``sincos`` -> ``(channels, T, H, W)``: channels
    split in three groups (t, y, x), each half sine half cosine at geometric frequencies,
    added to the query/key inputs. ``none`` -> ``None``.
    """
    check_choice(kind, POSITIONS, "position")
    if kind == "none":
        return None

    def axis(n: int) -> Tensor:
        if n == 1:
            return torch.zeros(1, device=device, dtype=dtype)
        return torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)

    tt, yy, xx = torch.meshgrid(axis(t), axis(h), axis(w), indexing="ij")
    if kind == "coords":
        return torch.stack([tt, yy, xx])
    enc = torch.zeros(channels, t, h, w, device=device, dtype=dtype)
    per = channels // 3
    half = per // 2
    for g, coord in enumerate((tt, yy, xx)):
        if half == 0:
            break
        freqs = torch.pow(100.0, -torch.arange(half, device=device, dtype=dtype) / max(half, 1))
        ang = (coord[None] + 1.0) * math.pi * freqs[:, None, None, None] * 4.0
        base = g * per
        enc[base:base + half] = torch.sin(ang)
        enc[base + half:base + 2 * half] = torch.cos(ang)
    return enc


class EdgeWeights(nn.Module):
    """Weights that the candidates of one edge share.

    Args:
        channels: width C of the edge input and output.
        position: ``none`` | ``coords`` | ``sincos`` (see :func:`positional_encoding`).
        kv_pool: max-pool keys/values 1x2x2 for spatial / spatiotemporal dot products.
        families: which families need weights (a single op builds only its own).
        dimensions: which map convs to build.
    """

    def __init__(self, channels: int, position: str = "none", kv_pool: bool = True,
                 families: tuple[str, ...] = ("map", "dot"),
                 dimensions: tuple[str, ...] = DIMENSIONS) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"an attention edge needs a positive integer width, got {channels!r}")
        self.channels = channels
        self.position = check_choice(position, POSITIONS, "position")
        self.kv_pool = bool(kv_pool)
        self.v = PointwiseConv3d(channels, channels, bias=False)
        if "dot" in families:
            qk_in = channels + (3 if position == "coords" else 0)
            self.q = PointwiseConv3d(qk_in, channels, bias=False)
            self.k = PointwiseConv3d(qk_in, channels, bias=False)
        if "map" in families:
            self.maps = nn.ModuleDict({
                d: nn.Conv3d(2, 1, _MAP_KERNELS[d], padding=tuple(k // 2 for k in _MAP_KERNELS[d]))
                for d in dimensions
            })
            for conv in self.maps.values():
                nn.init.zeros_(conv.bias)

    # -- dot-product pieces ------------------------------------------------------------
    def qk_input(self, z: Tensor) -> Tensor:
        return with_position(z, self.position)

    def qkv(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        qin = self.qk_input(z)
        return self.q(qin), self.k(qin), self.v(z)

    def pool_kv(self, x: Tensor, dim: str) -> Tensor:
        """:func:`pool_kv` for spatial dims when ``kv_pool`` is on (else ``x``)."""
        if not self.kv_pool or dim == "temporal":
            return x
        return pool_kv(x)

    # -- map pieces --------------------------------------------------------------------
    def map_logits(self, z: Tensor, dim: str) -> Tensor:
        """Logits over the attended positions, broadcastable to ``(N, 1, T, H, W)``."""
        stats = torch.cat([z.mean(1, keepdim=True), z.amax(1, keepdim=True)], 1)
        if dim == "spatial":
            stats = stats.mean(2, keepdim=True)
        elif dim == "temporal":
            stats = stats.mean((3, 4), keepdim=True)
        return self.maps[dim](stats)


def group(x: Tensor, dim: str) -> Tensor:
    """``(N, C, T, H, W)`` -> ``(B, L, C)`` sequences of the attended positions."""
    n, c, t, h, w = x.shape
    if dim == "spatial":
        return x.permute(0, 2, 3, 4, 1).reshape(n * t, h * w, c)
    if dim == "temporal":
        return x.permute(0, 3, 4, 2, 1).reshape(n * h * w, t, c)
    return x.permute(0, 2, 3, 4, 1).reshape(n, t * h * w, c)


def ungroup(y: Tensor, dim: str, shape: torch.Size) -> Tensor:
    """Inverse of :func:`group` for an output with ``shape`` ``(N, C, T, H, W)``."""
    n, c, t, h, w = shape
    if dim == "spatial":
        return y.reshape(n, t, h, w, c).permute(0, 4, 1, 2, 3)
    if dim == "temporal":
        return y.reshape(n, h, w, t, c).permute(0, 4, 3, 1, 2)
    return y.reshape(n, t, h, w, c).permute(0, 4, 1, 2, 3)


def dot_activation(s: Tensor, act: str) -> Tensor:
    """Attention matrix from scaled affinity ``s`` ``(B, Lq, Lk)``."""
    lk = s.shape[-1]
    if act == "softmax":
        return s.softmax(-1)
    if act == "sigmoid":
        return torch.sigmoid(s) / lk
    if act == "relu":
        return torch.relu(s) / lk
    return s / lk


def map_activation(logits: Tensor, act: str) -> Tensor:
    """Map from logits ``(N, 1, T', H', W')``; softmax is over all attended positions."""
    if act == "softmax":
        n = logits.shape[0]
        count = logits[0].numel()
        return logits.reshape(n, -1).softmax(-1).reshape(logits.shape) * count
    if act == "sigmoid":
        return torch.sigmoid(logits)
    if act == "relu":
        return torch.relu(logits)
    return logits


def _dot_sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` by ``F.scaled_dot_product_attention``: ``q`` ``(B, Lq,
    d)``, ``k`` ``(B, Lk, d)``, ``v`` ``(B, Lk, dv)`` -> ``(B, Lq, dv)``; no ``Lq x Lk``
    matrix on the flash/memory-efficient backends."""
    return F.scaled_dot_product_attention(q, k, v)


def _dot_explicit(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The same function with the ``(B, Lq, Lk)`` affinity materialised; shapes as
    :func:`_dot_sdpa`."""
    return dot_activation(q @ k.transpose(1, 2) * (q.shape[-1] ** -0.5), "softmax") @ v


def _dot_candidates(q: Tensor, k: Tensor, v: Tensor) -> tuple[str, ...]:
    """Both while the ``Lq x Lk`` probabilities take at most twice the memory of ``q``
    (``Lk <= 2 d``, as the non-local block's bound), SDPA alone beyond."""
    return ("sdpa", "explicit") if k.shape[1] <= 2 * q.shape[-1] else ("sdpa",)


#: The softmax dot product's choice point (:mod:`supernet.dispatch`) of single candidates
#: (:func:`single_op`: fixed cells, one-shot scores): ``sdpa`` or ``explicit`` on grouped
#: ``(q, k, v)``; the fixed rule is SDPA.
DOT_SOFTMAX = register(ChoicePoint("dot_softmax",
                                   {"sdpa": _dot_sdpa, "explicit": _dot_explicit},
                                   fixed=lambda q, k, v: "sdpa", candidates=_dot_candidates))


def single_op(weights: EdgeWeights, spec: OpSpec, z: Tensor, use_sdpa: bool = True) -> Tensor:
    """One candidate on ``z`` ``(N, C, T, H, W)`` -> same shape.

    A softmax dot product goes through the :data:`DOT_SOFTMAX` choice point (SDPA or the
    explicit affinity, whichever was measured faster here; SDPA with
    ``ATTNAS_DISPATCH=fixed``) unless ``use_sdpa`` is False (then explicitly).
    """
    if spec.family == "map":
        return map_activation(weights.map_logits(z, spec.dimension), spec.activation) * weights.v(z)
    q, k, v = weights.qkv(z)
    d = spec.dimension
    qg = group(q, d)
    kg = group(weights.pool_kv(k, d), d)
    vg = group(weights.pool_kv(v, d), d)
    if spec.activation == "softmax" and use_sdpa:
        y = DOT_SOFTMAX(qg, kg, vg)
    else:
        s = qg @ kg.transpose(1, 2) * (qg.shape[-1] ** -0.5)
        y = dot_activation(s, spec.activation) @ vg
    return ungroup(y, d, z.shape)


def _mix(s: Tensor, wl: list[float], lk: int) -> tuple[Tensor, Tensor, Tensor]:
    """``A = w0*softmax(s) + (w1*sigmoid(s) + w2*relu(s) + w3*s) / lk``; returns A, p, sig."""
    p = s.softmax(-1)
    sig = torch.sigmoid(s)
    a = p * wl[0]
    a.add_(sig, alpha=wl[1] / lk).add_(s.clamp(min=0), alpha=wl[2] / lk).add_(s, alpha=wl[3] / lk)
    return a, p, sig


def _row_chunk(b: int, lq: int, lk: int, budget: int = 1 << 19) -> int:
    """Query rows per chunk so one ``(B, rows, Lk)`` block stays around ``budget`` elements."""
    return max(1, min(lq, budget // max(1, b * lk)))


class _MixedAttention(torch.autograd.Function):
    """``out = A(q k^T / sqrt(d)) v`` with ``A`` the four dot activations mixed by ``w``.

    Flash-style: the ``(B, Lq, Lk)`` attention matrix is built in query-row chunks that fit
    in cache and is never stored; backward recomputes it chunk by chunk. Memory is
    ``O(B * chunk * Lk)`` instead of ``O(B * Lq * Lk)`` per activation.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, w: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(q, k, v, w)
        # under autocast (bf16 / fp16) the mixture runs in float32 (softmax, sigmoid and the
        # per-activation weights of a 24-way mixture need the range); float64 stays float64
        wd = torch.promote_types(q.dtype, torch.float32)
        with torch.autocast(q.device.type, enabled=False):
            qw, kw, vw = q.to(wd), k.to(wd), v.to(wd)
            b, lq, d = qw.shape
            lk = kw.shape[1]
            scale = d ** -0.5
            wl = [float(x) for x in w.detach().cpu()]
            out = qw.new_empty(b, lq, vw.shape[-1])
            rows = _row_chunk(b, lq, lk)
            kt = kw.transpose(1, 2)
            for r0 in range(0, lq, rows):
                s = torch.bmm(qw[:, r0:r0 + rows], kt).mul_(scale)
                a, _, _ = _mix(s, wl, lk)
                torch.bmm(a, vw, out=out[:, r0:r0 + rows])
        ctx.wl = wl
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        q, k, v, w = ctx.saved_tensors
        wl = ctx.wl
        wd = torch.promote_types(q.dtype, torch.float32)
        with torch.autocast(q.device.type, enabled=False):
            qw, kw, vw, g = q.to(wd), k.to(wd), v.to(wd), g.to(wd).contiguous()
            b, lq, d = qw.shape
            lk = kw.shape[1]
            scale = d ** -0.5
            dq = torch.empty_like(qw)
            dk = torch.zeros_like(kw)
            dv = torch.zeros_like(vw)
            dw = torch.zeros(4, dtype=torch.float64, device=q.device)
            rows = _row_chunk(b, lq, lk)
            kt = kw.transpose(1, 2)
            vt = vw.transpose(1, 2)
            for r0 in range(0, lq, rows):
                qc, gc = qw[:, r0:r0 + rows], g[:, r0:r0 + rows]
                s = torch.bmm(qc, kt).mul_(scale)
                a, p, sig = _mix(s, wl, lk)
                dv.baddbmm_(a.transpose(1, 2), gc)
                da = torch.bmm(gc, vt)
                dap = da * p
                relu = s.clamp(min=0)
                dw += torch.stack([dap.sum(), (da * sig).sum() / lk, (da * relu).sum() / lk,
                                   (da * s).sum() / lk]).to(dw.dtype)
                # d/ds of each activation, weighted; softmax: p * (da - sum(da * p))
                ds = (dap - p * dap.sum(-1, keepdim=True)).mul_(wl[0])
                sig.mul_(1 - sig).mul_(wl[1] / lk).add_((s > 0).to(s.dtype), alpha=wl[2] / lk)
                ds.addcmul_(da, sig.add_(wl[3] / lk)).mul_(scale)
                torch.bmm(ds, kw, out=dq[:, r0:r0 + rows])
                dk.baddbmm_(ds.transpose(1, 2), qc)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dw.to(w.dtype)


def mixed_attention(q: Tensor, k: Tensor, v: Tensor, w: Tensor) -> Tensor:
    """Attention with the four dot activations mixed by ``w`` ``(4,)`` (space order).

    ``q`` ``(B, Lq, d)``, ``k`` ``(B, Lk, d)``, ``v`` ``(B, Lk, dv)`` -> ``(B, Lq, dv)``;
    equals ``sum_a w_a * act_a(q k^T / sqrt(d)) v`` without storing any ``Lq x Lk`` matrix.
    """
    dt = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    return _MixedAttention.apply(q.to(dt).contiguous(), k.to(dt).contiguous(),
                                 v.to(dt).contiguous(), w)


class AttentionOp(nn.Module):
    """A single candidate operation (a node of a fixed cell).

    Args:
        channels: width C; input and output are ``(N, C, T, H, W)``.
        op: an op name from :mod:`supernet.space` (e.g. ``dot.spatiotemporal.softmax``).
        position: ``none`` | ``coords`` | ``sincos`` for dot-product ops.
        kv_pool: max-pool keys/values 1x2x2 (spatial / spatiotemporal dot products).
    """

    def __init__(self, channels: int, op: str | OpSpec, position: str = "none",
                 kv_pool: bool = True) -> None:
        super().__init__()
        self.spec = parse_op(op)
        self.weights = EdgeWeights(channels, position, kv_pool, families=(self.spec.family,),
                                   dimensions=(self.spec.dimension,))

    def forward(self, z: Tensor) -> Tensor:
        check_video(z, self.weights.channels)
        return single_op(self.weights, self.spec, z)

    def extra_repr(self) -> str:
        return self.spec.name


#: query rows per sequence used to estimate a dot candidate's output scale
_SCALE_ROWS = 16
_SCALE_EPS = 1e-6


class MixedEdge(nn.Module):
    """All 24 candidates on one edge, mixed by softmax(alpha) weights ``w`` ``(24,)``.

    Fast path: one affinity and one ``A v`` product per dimension with the four
    activations mixed on the affinity, and one map multiply for all 12 map candidates.
    Args are those of :class:`EdgeWeights`; ``explicit=True`` switches to the slow
    reference (:func:`reference_mixed_edge`), for benchmarks. ``normalize=True`` divides
    each candidate's weight by the root mean square of its output on this batch
    (:meth:`candidate_scales`, no gradient through it), so that the mixture compares the
    candidates on one scale -- what a non-affine normalisation of every candidate does,
    kept on the fast path because a scalar per candidate folds into its weight.
    """

    def __init__(self, channels: int, position: str = "none", kv_pool: bool = True,
                 explicit: bool = False, normalize: bool = False) -> None:
        super().__init__()
        self.weights = EdgeWeights(channels, position, kv_pool)
        self.explicit = explicit
        self.normalize = bool(normalize)

    @torch.no_grad()
    def candidate_scales(self, z: Tensor) -> Tensor:
        """``(24,)`` root mean square of each candidate's output on ``z`` (space order).

        Map candidates exactly (the map is per position: ``E[m^2 v^2] = E[m^2 E_c v^2]``);
        dot candidates on every ``L // 16``-th query row of each sequence (a fixed
        stride: deterministic, and a small share of the attention's cost).
        """
        ew = self.weights
        q, k, v = ew.qkv(z)
        wd = torch.promote_types(z.dtype, torch.float32)  # bf16 / fp16 -> float32
        q, k, v = q.to(wd), k.to(wd), v.to(wd)
        out = torch.empty(2, len(DIMENSIONS), len(ACTIVATIONS), dtype=wd, device=z.device)
        v2 = v.pow(2).mean(1, keepdim=True)
        for di, d in enumerate(DIMENSIONS):
            logits = ew.map_logits(z, d).to(wd)
            for ai, a in enumerate(ACTIVATIONS):
                m = map_activation(logits, a)
                out[0, di, ai] = (m.pow(2) * v2).mean()
            qg = group(q, d)
            kg = group(ew.pool_kv(k, d), d)
            vg = group(ew.pool_kv(v, d), d)
            step = max(1, qg.shape[1] // _SCALE_ROWS)
            sc = qg[:, ::step] @ kg.transpose(1, 2) * (qg.shape[-1] ** -0.5)
            for ai, a in enumerate(ACTIVATIONS):
                out[1, di, ai] = (dot_activation(sc, a) @ vg).pow(2).mean()
        return out.flatten().sqrt().add_(_SCALE_EPS)

    def single(self, z: Tensor, index: int) -> Tensor:
        """Candidate ``index`` (a column of alpha) alone, with this edge's shared weights:
        what a node restricted to one candidate computes (weight 1, no mixture)."""
        return single_op(self.weights, OPS[index], z)

    def forward(self, z: Tensor, w: Tensor) -> Tensor:
        if self.normalize:
            w = w / self.candidate_scales(z)
        if self.explicit:
            return reference_mixed_edge(self, z, w)
        ew = self.weights
        w = w.reshape(2, len(DIMENSIONS), len(ACTIVATIONS))  # family, dim, act (space order)
        q, k, v = ew.qkv(z)
        # map family: sum the 12 maps (broadcast shapes) then one multiply onto v
        m = 0
        for di, d in enumerate(DIMENSIONS):
            logits = ew.map_logits(z, d)
            for ai, a in enumerate(ACTIVATIONS):
                m = m + w[0, di, ai] * map_activation(logits, a)
        out = m * v
        # dot family: one affinity per dimension, activations mixed on it
        for di, d in enumerate(DIMENSIONS):
            qg = group(q, d)
            kg = group(ew.pool_kv(k, d), d)
            vg = group(ew.pool_kv(v, d), d)
            out = out + ungroup(mixed_attention(qg, kg, vg, w[1, di]), d, z.shape)
        return out


def reference_mixed_edge(edge: MixedEdge, z: Tensor, w: Tensor, use_sdpa: bool = False) -> Tensor:
    """Explicit ``sum_i w_i * op_i(z)`` over the 24 candidates (slow; for tests/benchmarks).
    ``w`` is used as given (a normalised edge divides it by its scales before calling)."""
    out = 0
    for i, spec in enumerate(OPS):
        out = out + w[i] * single_op(edge.weights, spec, z, use_sdpa=use_sdpa)
    return out
