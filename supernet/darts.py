"""The DARTS architecture gradient, first and second order, and anti-collapse terms.

First order (DARTS-1st): ``dL_val(w, a)/da`` at the current weights.

Second order (DARTS-2nd, Liu et al. 2019, eq. 7-8): with one virtual SGD step
``w' = w - xi * dL_train(w, a)/dw``, the gradient is

    dL_val(w', a)/da  -  xi * d2L_train(w, a)/(da dw) . dL_val(w', a)/dw'

and the Hessian-vector product is a central finite difference:
``(dL_train(w+, a)/da - dL_train(w-, a)/da) / (2 eps)`` with ``w+- = w +- eps * v``,
``v = dL_val(w', a)/dw'``, ``eps = 0.01 / ||v||``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["arch_gradient", "beta_decay_penalty", "entropy_penalty"]


def _grads(loss: Tensor, params: Sequence[nn.Parameter]) -> list[Tensor]:
    gs = torch.autograd.grad(loss, list(params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


@torch.no_grad()
def _axpy(params: Sequence[nn.Parameter], vecs: Sequence[Tensor], scale: float) -> None:
    for p, v in zip(params, vecs):
        p.add_(v, alpha=scale)


def arch_gradient(
    train_loss: Callable[[], Tensor],
    val_loss: Callable[[], Tensor],
    weights: Sequence[nn.Parameter],
    arch: Sequence[nn.Parameter],
    order: int = 1,
    xi: float = 0.0,
    weight_decay: float = 0.0,
) -> list[Tensor]:
    """Gradient of the validation loss w.r.t. the architecture parameters.

    Args:
        train_loss: closure computing the training (weights-half) loss at the current weights.
        val_loss: closure computing the architecture-half loss (may include penalties on arch).
        weights: the network weights w (restored exactly on return).
        arch: the architecture parameters (alpha, beta).
        order: 1 (first order) or 2 (unrolled, finite-difference Hessian-vector product).
        xi: virtual step size for order 2 (DARTS uses the current weight learning rate).
        weight_decay: L2 term included in the virtual step (as the real SGD step has it).

    Returns:
        one gradient tensor per ``arch`` parameter (nothing is written to ``.grad``).
    """
    if order not in (1, 2):
        raise ValueError(f"arch order must be 1 or 2, got {order!r}")
    if order == 1 or xi == 0.0:
        return _grads(val_loss(), arch)
    weights = list(weights)
    backup = [p.detach().clone() for p in weights]
    # virtual step w' = w - xi * (dL_train/dw + wd * w)
    g_train = _grads(train_loss(), weights)
    with torch.no_grad():
        for p, g in zip(weights, g_train):
            p.sub_(g + weight_decay * p, alpha=xi)
    g_val = _grads(val_loss(), list(arch) + weights)
    d_arch, v = g_val[: len(arch)], g_val[len(arch):]
    with torch.no_grad():
        for p, b in zip(weights, backup):
            p.copy_(b)
    norm = torch.sqrt(sum((x.double() ** 2).sum() for x in v)).item()
    if norm == 0.0:
        return d_arch
    eps = 0.01 / norm
    _axpy(weights, v, eps)
    g_plus = _grads(train_loss(), arch)
    _axpy(weights, v, -2.0 * eps)
    g_minus = _grads(train_loss(), arch)
    with torch.no_grad():
        for p, b in zip(weights, backup):
            p.copy_(b)
    return [da - xi * (gp - gm) / (2.0 * eps) for da, gp, gm in zip(d_arch, g_plus, g_minus)]


def beta_decay_penalty(alpha: Tensor) -> Tensor:
    """beta-DARTS regulariser (Ye et al., CVPR 2022): mean over nodes of ``logsumexp(alpha_k)``.

    Its gradient is ``softmax(alpha_k)``: it pulls the logits of dominant ops down, keeping
    the architecture weights from saturating early (collapse) and the search stable.
    """
    return torch.logsumexp(alpha, dim=-1).mean()


def entropy_penalty(weights: Tensor) -> Tensor:
    """Mean entropy of per-node softmax weights ``(K, M)`` (minimising it sharpens choices,
    shrinking the gap between the mixed supernet and the derived discrete cell)."""
    return -(weights * weights.clamp_min(1e-12).log()).sum(-1).mean()
