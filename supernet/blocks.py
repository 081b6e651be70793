"""Baseline attention blocks, inserted into backbones exactly as the searched cells are.

Every block maps ``x`` ``(N, C, T, H, W)`` to the same shape.

* :class:`NonLocalBlock` -- non-local block (Wang et al., CVPR 2018), embedded Gaussian
  (``softmax(theta^T phi / sqrt(d)) g``) or dot product (``theta^T phi g / L_k``).
  Residual, with the output BatchNorm's gamma at 0 (an identity at init).
* :class:`DoubleAttention` -- A^2 double attention (Chen et al., NeurIPS 2018): gather
  then distribute, never an ``L x L`` matrix. Residual, BN gamma 0.
* :class:`CinST` / :class:`STinC` -- Attention-in-Attention (Hao et al., TCSVT 2022):
  a position gate computed from channel statistics (``g_C``) and a gate averaged over
  three axis-pooled 3-D convolutions (``g_ST``), one nested inside the other. They are
  multiplicative (not residual), as defined in DESIGN.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .dispatch import ChoicePoint, register
from .ops import PointwiseConv3d, check_video, pool_kv, with_position
from .space import POSITIONS, check_choice

__all__ = ["NonLocalBlock", "DoubleAttention", "CinST", "STinC", "pool_kv",
           "channel_major_attention", "NONLOCAL_SOFTMAX"]

_NL_MODES = ("softmax", "dot")
_NL_IMPLS = ("sdpa", "explicit", "auto")
#: ``impl="auto"`` keeps the ``L x Lk`` probabilities for backward on CPU while
#: ``heads * Lk <= _AUTO_MAX_KEYS_PER_CHANNEL * C``, i.e. while they take at most twice the
#: memory of the block input (res3 of a 4-frame I3D clip at 224²: Lk = 784 <= 2 x 512);
#: beyond, it goes through SDPA's flash kernel, which stores no ``L x Lk`` matrix.
_AUTO_MAX_KEYS_PER_CHANNEL = 2


def _positive_int(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


class _ChannelMajorAttention(torch.autograd.Function):
    """``y = v softmax(q^T k * scale)^T`` on channel-major ``(B, d, L)`` tensors; the
    probabilities ``P`` ``(B, L, Lk)`` are kept for backward (see
    :func:`channel_major_attention`)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        p = _attention_probs(q, k, scale)
        y = torch.bmm(v, p.transpose(1, 2))  # (B, dv, L)
        ctx.save_for_backward(q, k, v, p, y)
        ctx.scale = scale
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):  # type: ignore[override]
        q, k, v, p, y = ctx.saved_tensors
        need_q, need_k, need_v, _ = ctx.needs_input_grad
        dq = dk = dv = None
        if need_v:
            dv = torch.bmm(dy, p)  # (B, dv, Lk)
        if need_q or need_k:
            # dS = P * (dP - rowsum(dP * P)), and rowsum(dP * P)_i = sum_c dy_ci y_ci
            ds = torch.bmm(dy.transpose(1, 2), v)  # dP (B, L, Lk)
            ds.sub_((dy * y).sum(1).unsqueeze(-1)).mul_(p)
            if need_q:
                dq = torch.bmm(k, ds.transpose(1, 2)).mul_(ctx.scale)  # (B, d, L)
            if need_k:
                dk = torch.bmm(q, ds).mul_(ctx.scale)  # (B, d, Lk)
        return dq, dk, dv, None


def _attention_probs(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """``softmax(q^T k * scale)`` ``(B, L, Lk)`` for ``q`` ``(B, d, L)``, ``k`` ``(B, d, Lk)``
    (the scale applied inside the product)."""
    # beta=0: the (broadcast) input is ignored; out of place, so FlopCounterMode sees it
    s = torch.baddbmm(q.new_zeros(1, 1, 1), q.transpose(1, 2), k, beta=0, alpha=scale)
    return s.softmax(-1)


def channel_major_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Softmax attention on channel-major tensors: ``q`` ``(B, d, L)``, ``k`` ``(B, d, Lk)``,
    ``v`` ``(B, dv, Lk)`` -> ``y`` ``(B, dv, L)``, ``y_i = sum_j softmax_j(scale q_i . k_j)
    v_j``.

    The layout is that of 1x1x1 conv outputs, so neither the inputs nor the output are
    transposed or copied (``bmm`` takes the transposed operands as they are). The ``L x
    Lk`` probabilities are materialised once and kept for backward, which then costs four
    batched products (dV, dP, dQ, dK) and two in-place passes over ``P`` -- one product fewer
    than a flash kernel, which recomputes them. Memory: one ``B x L x Lk`` matrix (plus a
    transient one in forward). Without autograd (``no_grad``, tracing, export) it runs as
    plain ``baddbmm``/``softmax``/``bmm`` ops.
    """
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _ChannelMajorAttention.apply(q, k, v, scale)
    return torch.bmm(v, _attention_probs(q, k, scale).transpose(1, 2))


def _autocast(device: torch.device) -> bool:
    try:
        return torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() if device.type == "cpu" else \
            torch.is_autocast_enabled()


def _softmax_channel_major(theta: Tensor, phi: Tensor, g: Tensor, heads: int,
                           keep_probs: bool) -> Tensor:
    """:func:`channel_major_attention` of ``theta`` ``(B, dh, L)``, ``phi`` ``(B, dh, Lk)``,
    ``g`` ``(B, dh, Lk)`` (``B = N * heads``) -> ``(B, dh, L)``, scale ``dh ** -0.5``."""
    return channel_major_attention(theta, phi, g, theta.shape[1] ** -0.5)


def _softmax_explicit(theta: Tensor, phi: Tensor, g: Tensor, heads: int,
                      keep_probs: bool) -> Tensor:
    """The textbook form: the ``(B, L, Lk)`` affinity, softmax, product with ``g``; shapes
    as :func:`_softmax_channel_major`."""
    s = torch.bmm(theta.transpose(1, 2), phi)  # (B, L, Lk)
    return torch.bmm(g, (s * theta.shape[1] ** -0.5).softmax(-1).transpose(1, 2))


def _softmax_sdpa(theta: Tensor, phi: Tensor, g: Tensor, heads: int,
                  keep_probs: bool) -> Tensor:
    """``F.scaled_dot_product_attention`` on 4-D contiguous ``(N, heads, L, dh)`` copies --
    the layout the CPU flash kernel accepts (3-D or strided inputs fall back to the math
    path, which stores the ``L x Lk`` matrix); shapes as :func:`_softmax_channel_major`."""
    b, hd, _ = theta.shape
    q, k, v = (z.reshape(b // heads, heads, hd, z.shape[-1]).transpose(2, 3).contiguous()
               for z in (theta, phi, g))
    y = F.scaled_dot_product_attention(q, k, v)  # (N, h, L, dh)
    return y.transpose(2, 3).reshape(b, hd, -1)


def _stores_probs_ok(theta: Tensor) -> bool:
    """Whether the channel-major form applies: float32/float64 outside autocast."""
    return theta.dtype in (torch.float32, torch.float64) and not _autocast(theta.device)


def _softmax_applicable(theta: Tensor, phi: Tensor, g: Tensor, heads: int,
                        keep_probs: bool) -> tuple[str, ...]:
    if _stores_probs_ok(theta):
        return ("channel_major", "sdpa", "explicit")
    return ("sdpa", "explicit")


def _softmax_candidates(theta: Tensor, phi: Tensor, g: Tensor, heads: int,
                        keep_probs: bool) -> tuple[str, ...]:
    """Beyond the memory bound (``keep_probs`` False) only SDPA, which stores no ``L x Lk``
    matrix, is worth measuring."""
    if not keep_probs:
        return ("sdpa",)
    return _softmax_applicable(theta, phi, g, heads, keep_probs)


def _softmax_fixed(theta: Tensor, phi: Tensor, g: Tensor, heads: int,
                   keep_probs: bool) -> str:
    return ("channel_major" if keep_probs and theta.device.type == "cpu"
            and _stores_probs_ok(theta) else "sdpa")


#: The softmax non-local attention's choice point (:mod:`supernet.dispatch`), used by
#: ``NonLocalBlock(impl="auto")``: ``channel_major``, ``sdpa`` or ``explicit`` on
#: ``(theta, phi, g, heads, keep_probs)``. ``keep_probs``: the ``L x Lk`` probabilities
#: take at most twice the block input's memory (``heads * Lk <= 2 C``); beyond, only SDPA
#: is measured. Without measuring: channel-major on the CPU within the bound (float32/64,
#: no autocast), SDPA otherwise.
NONLOCAL_SOFTMAX = register(ChoicePoint(
    "nonlocal_softmax",
    {"channel_major": _softmax_channel_major, "sdpa": _softmax_sdpa,
     "explicit": _softmax_explicit},
    fixed=_softmax_fixed, applicable=_softmax_applicable, candidates=_softmax_candidates))


class NonLocalBlock(nn.Module):
    """Non-local block: ``z = x + BN(W_z y)``, ``y_i = sum_j f(theta_i, phi_j) g_j``.

    ``theta`` is a 1x1x1 conv of ``x`` to ``d = round(C * inner_ratio)`` channels; ``phi`` and
    ``g`` are 1x1x1 convs of ``x`` max-pooled 1x2x2 over space (the pool is applied to the
    input of ``phi``/``g``, as in the original Caffe2 and SlowFast implementations, so the
    pooled keys cost a quarter). ``W_z`` is a 1x1x1 conv back to C, then BatchNorm with
    gamma initialised to 0, so a new block is the identity. All convs have a bias
    (SlowFast/pytorchvideo), which gives 526,592 parameters at C=512.

    Modes: ``softmax`` (embedded Gaussian) -- ``f = softmax_j(theta_i . phi_j / sqrt(d))``,
    computed by ``F.scaled_dot_product_attention`` on ``(N, 1, L, d)`` tensors so the CPU
    flash kernel is used and no ``L x L_k`` matrix is stored; ``dot`` -- ``f = theta_i .
    phi_j / L_k``, computed as ``theta (phi^T g) / L_k`` (associativity: ``d x d`` instead
    of ``L x L_k``). ``impl="explicit"`` materialises the affinity instead (the textbook
    formulation, kept for tests and the benchmark); ``impl="auto"`` (what
    :func:`~supernet.factory.create_block` builds) lets the :data:`NONLOCAL_SOFTMAX` choice
    point (:mod:`supernet.dispatch`) pick, by measurement on the machine at hand, among
    :func:`channel_major_attention` (no transposed copies, one product fewer in backward than
    the flash kernel; float32/float64 outside autocast), the explicit form and SDPA while
    the ``L x L_k`` probabilities take at most twice the block input's memory (``heads * L_k
    <= 2 C``), and uses SDPA beyond; with ``ATTNAS_DISPATCH=fixed``: channel-major on the CPU
    within that bound, SDPA otherwise. All give the same function. The four 1x1x1 convs
    are :class:`~supernet.ops.PointwiseConv3d` (kernel chosen by measurement too).

    Args:
        channels: C of the input/output ``(N, C, T, H, W)``.
        inner_ratio: ``d / C`` (default 0.5).
        mode: ``softmax`` | ``dot``.
        kv_pool: max-pool keys/values 1x2x2 over space (default True).
        position: ``none`` | ``coords`` (normalised t, y, x channels concatenated to the
            inputs of ``theta``/``phi``) | ``sincos`` (added to them).
        impl: ``sdpa`` | ``explicit`` | ``auto``.
        heads: attention heads (default 1, the non-local block of Wang et al.): ``d`` is
            split into ``heads`` groups of ``d / heads`` channels, each attending on its own
            (scale ``(d / heads) ** -0.5``). GPU flash kernels need a head dim <= 256, which
            a single-head block at res4 (d = 512) exceeds. Softmax MACs do not change;
            ``dot`` gets cheaper (``(d / heads)^2`` per head instead of ``d^2``).
    """

    def __init__(self, channels: int, inner_ratio: float = 0.5, mode: str = "softmax",
                 kv_pool: bool = True, position: str = "none", impl: str = "sdpa",
                 heads: int = 1) -> None:
        super().__init__()
        self.channels = _positive_int(channels, "channels")
        if not 0.0 < float(inner_ratio) <= 4.0:
            raise ValueError(f"inner_ratio must be in (0, 4], got {inner_ratio!r}")
        self.inner = max(1, round(channels * inner_ratio))
        self.mode = check_choice(mode, _NL_MODES, "non-local mode")
        self.impl = check_choice(impl, _NL_IMPLS, "non-local impl")
        self.position = check_choice(position, POSITIONS, "position")
        self.kv_pool = bool(kv_pool)
        if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1 \
                or self.inner % heads:
            raise ValueError(f"heads={heads!r} must be a positive integer dividing the inner "
                             f"width {self.inner} (channels {channels} x inner_ratio "
                             f"{inner_ratio})")
        self.heads = heads
        qk_in = channels + (3 if position == "coords" else 0)
        self.theta = PointwiseConv3d(qk_in, self.inner)
        self.phi = PointwiseConv3d(qk_in, self.inner)
        self.g = PointwiseConv3d(channels, self.inner)
        self.out = PointwiseConv3d(self.inner, channels)
        self.bn = nn.BatchNorm3d(channels)
        nn.init.zeros_(self.bn.weight)

    def _qk_input(self, x: Tensor) -> Tensor:
        return with_position(x, self.position)

    def attend(self, x: Tensor) -> Tensor:
        """The non-local response ``y`` ``(N, d, T, H, W)`` (before ``W_z``)."""
        n, _, t, h, w = x.shape
        qk = self._qk_input(x)
        pooled_qk = pool_kv(qk) if self.kv_pool else qk
        if self.position == "sincos":  # x + pos: the values need their own pooled input
            pooled_x = pool_kv(x) if self.kv_pool else x
        else:  # max-pooling is per channel: the first C channels of pool(qk) are pool(x)
            pooled_x = pooled_qk[:, : self.channels]
        theta = self.theta(qk).flatten(2)  # (N, d, L)
        phi = self.phi(pooled_qk).flatten(2)  # (N, d, Lk)
        g = self.g(pooled_x).flatten(2)  # (N, d, Lk)
        lk = phi.shape[-1]
        hd = self.inner // self.heads
        # (N * heads, dh, L): each head attends on its own slice of the d channels
        theta, phi, g = (z.reshape(n * self.heads, hd, z.shape[-1]) for z in (theta, phi, g))
        if self.mode == "softmax":
            keep = self.heads * lk <= _AUTO_MAX_KEYS_PER_CHANNEL * self.channels
            if self.impl == "auto":
                y = NONLOCAL_SOFTMAX(theta, phi, g, self.heads, keep)  # (N*h, dh, L)
            else:
                y = NONLOCAL_SOFTMAX.impls[self.impl](theta, phi, g, self.heads, keep)
        elif self.impl == "explicit":
            a = torch.bmm(theta.transpose(1, 2), phi) / lk  # (N*h, L, Lk)
            y = torch.bmm(g, a.transpose(1, 2))  # (N*h, dh, L)
        else:
            kv = torch.bmm(g, phi.transpose(1, 2)) / lk  # (N*h, dh, dh): sum_j g_j phi_j^T
            y = torch.bmm(kv, theta)  # (N*h, dh, L)
        return y.reshape(n, self.inner, t, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` -> ``(N, C, T, H, W)``."""
        check_video(x, self.channels)
        z = self.bn(self.out(self.attend(x)))
        if z.shape == x.shape and z.dtype == x.dtype:
            return z.add_(x)  # in place: BatchNorm's backward does not need its output
        return x + z

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, inner={self.inner}, mode={self.mode}, "
                f"kv_pool={self.kv_pool}, position={self.position}, impl={self.impl}"
                + (f", heads={self.heads}" if self.heads > 1 else ""))


class DoubleAttention(nn.Module):
    """A^2 double-attention block: gather, then distribute.

    With ``L = T*H*W`` and 1x1x1 convs ``phi`` (C->m), ``theta`` (C->n), ``rho`` (C->n)::

        A = phi(x)                  (N, m, L)   features
        B = softmax_L(theta(x))     (N, n, L)   n attention maps over positions (gather)
        V = softmax_n(rho(x))       (N, n, L)   per-position weights over the n descriptors
        G = A B^T                   (N, m, n)   global descriptors
        Z = G V                     (N, m, L)   distributed back to every position
        out = x + BN(conv_{m->C}(Z))            BN gamma 0 (identity at init)

    Cost ``O(m n L)``; no ``L x L`` matrix. The BN with gamma 0 is our addition (the paper
    adds the conv output directly), so that insertion never perturbs a pretrained
    backbone at step 0, like the non-local block and the cells.

    Args:
        channels: C of the input/output ``(N, C, T, H, W)``.
        m: number of feature channels (default ``C // 4``).
        n: number of attention maps (default ``C // 4``).
    """

    def __init__(self, channels: int, m: int | None = None, n: int | None = None) -> None:
        super().__init__()
        self.channels = _positive_int(channels, "channels")
        self.m = _positive_int(m if m is not None else max(1, channels // 4), "m")
        self.n = _positive_int(n if n is not None else max(1, channels // 4), "n")
        self.phi = nn.Conv3d(channels, self.m, 1)
        self.theta = nn.Conv3d(channels, self.n, 1)
        self.rho = nn.Conv3d(channels, self.n, 1)
        self.out = nn.Conv3d(self.m, channels, 1)
        self.bn = nn.BatchNorm3d(channels)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` -> ``(N, C, T, H, W)``."""
        check_video(x, self.channels)
        n, _, t, h, w = x.shape
        a = self.phi(x).flatten(2)
        b = self.theta(x).flatten(2).softmax(-1)
        v = self.rho(x).flatten(2).softmax(1)
        g = torch.bmm(a, b.transpose(1, 2))  # (N, m, n)
        z = torch.bmm(g, v).reshape(n, self.m, t, h, w)
        return x + self.bn(self.out(z))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, m={self.m}, n={self.n}"


def _max_mean(x: Tensor, dim: int) -> Tensor:
    """``[max, mean]`` of ``x`` over ``dim``, stacked as 2 channels at dim 1."""
    return torch.stack([x.amax(dim), x.mean(dim)], 1)


class _Gate(nn.Module):
    """3x3x3 conv (2->1, no bias) -> BN -> sigmoid on a 2-channel statistics volume."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 1, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(1)

    def forward(self, stats: Tensor) -> Tensor:
        return torch.sigmoid(self.bn(self.conv(stats)))


class ChannelGate(nn.Module):
    """AIA ``g_C``: ``[max, mean]`` over channels ``(N, 2, T, H, W)`` -> gate
    ``(N, 1, T, H, W)`` (one weight per position, shared by the channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = _Gate()

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(_max_mean(x, 1))


class STGate(nn.Module):
    """AIA ``g_ST``: the mean of three gates. Pooling ``[max, mean]`` over T gives a
    ``(N, 2, C, H, W)`` volume, a 3x3x3 conv over (C, H, W) + BN + sigmoid gives a gate
    ``(N, C, 1, H, W)``; likewise over H (gate ``(N, C, T, 1, W)``) and W (``(N, C, T, H,
    1)``). The three broadcast to ``(N, C, T, H, W)`` and are averaged."""

    def __init__(self) -> None:
        super().__init__()
        self.t = _Gate()
        self.h = _Gate()
        self.w = _Gate()

    def forward(self, x: Tensor) -> Tensor:
        gt = self.t(_max_mean(x, 2)).squeeze(1).unsqueeze(2)  # (N, C, 1, H, W)
        gh = self.h(_max_mean(x, 3)).squeeze(1).unsqueeze(3)  # (N, C, T, 1, W)
        gw = self.w(_max_mean(x, 4)).squeeze(1).unsqueeze(4)  # (N, C, T, H, 1)
        return (gt + gh + gw) / 3.0


class CinST(nn.Module):
    """AIA, channel attention inside spatiotemporal attention:
    ``x' = x * g_C(x)``, ``out = x * g_ST(x')``. ``(N, C, T, H, W)`` -> same shape.

    224 parameters whatever C (four 2->1 3x3x3 convs and four 1-channel BNs).
    ``channels`` is only checked against the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = _positive_int(channels, "channels")
        self.g_c = ChannelGate()
        self.g_st = STGate()

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` -> ``(N, C, T, H, W)``."""
        check_video(x, self.channels)
        return x * self.g_st(x * self.g_c(x))


class STinC(nn.Module):
    """AIA, spatiotemporal attention inside channel attention:
    ``x' = x * g_ST(x)``, ``out = x * g_C(x')``. ``(N, C, T, H, W)`` -> same shape."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = _positive_int(channels, "channels")
        self.g_c = ChannelGate()
        self.g_st = STGate()

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` -> ``(N, C, T, H, W)``."""
        check_video(x, self.channels)
        return x * self.g_c(x * self.g_st(x))
