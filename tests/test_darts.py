"""The DARTS architecture gradient on a toy bi-level problem with a known answer."""

from __future__ import annotations

import pytest
import torch

from supernet.darts import arch_gradient, beta_decay_penalty, entropy_penalty


def _toy(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64, generator=g))
    a = torch.nn.Parameter(torch.randn(3, dtype=torch.float64, generator=g))
    m_tr = torch.randn(3, 5, dtype=torch.float64, generator=g)
    m_va = torch.randn(3, 5, dtype=torch.float64, generator=g)
    x_tr = torch.randn(4, 5, dtype=torch.float64, generator=g)
    x_va = torch.randn(4, 5, dtype=torch.float64, generator=g)

    def loss(wv, av, m, x):  # non-quadratic, with alpha-w interaction
        h = torch.tanh(x * (wv + av.softmax(0) @ m))
        return (h.sum(1) - 1.0).pow(2).mean() + 0.1 * (wv * (av @ m)).sum().pow(2)

    def train_loss(wv=None):
        return loss(w if wv is None else wv, a, m_tr, x_tr)

    def val_loss(wv=None):
        return loss(w if wv is None else wv, a, m_va, x_va)

    return w, a, train_loss, val_loss


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_second_order_matches_exact_unrolled_gradient(weight_decay: float) -> None:
    w, a, train_loss, val_loss = _toy()
    xi = 0.1
    # exact: differentiate L_val(w - xi * (dL_train/dw + wd * w), a) through the virtual step
    g = torch.autograd.grad(train_loss(), w, create_graph=True)[0]
    w_prime = w - xi * (g + weight_decay * w)
    exact = torch.autograd.grad(val_loss(w_prime), a)[0]
    w_before = w.detach().clone()
    approx = arch_gradient(train_loss, val_loss, [w], [a], order=2, xi=xi,
                           weight_decay=weight_decay)[0]
    torch.testing.assert_close(approx, exact, rtol=1e-4, atol=1e-6)
    assert torch.equal(w.detach(), w_before)  # weights restored exactly
    first = arch_gradient(train_loss, val_loss, [w], [a], order=1)[0]
    assert (first - approx).abs().max() > 1e-3  # second order really differs here


def test_first_order_is_plain_gradient_and_bad_order_rejected() -> None:
    w, a, train_loss, val_loss = _toy(1)
    ref = torch.autograd.grad(val_loss(), a)[0]
    torch.testing.assert_close(arch_gradient(train_loss, val_loss, [w], [a])[0], ref)
    with pytest.raises(ValueError, match="arch order must be 1 or 2"):
        arch_gradient(train_loss, val_loss, [w], [a], order=3)


def test_penalties() -> None:
    alpha = torch.zeros(3, 24, requires_grad=True)
    beta_decay_penalty(alpha).backward()
    # gradient of mean logsumexp is softmax / K: uniform here
    torch.testing.assert_close(alpha.grad, torch.full((3, 24), 1 / 24 / 3))
    uniform = torch.full((2, 4), 0.25)
    one_hot = torch.eye(4)[:2]
    assert entropy_penalty(uniform) > entropy_penalty(one_hot) - 1e-9
    torch.testing.assert_close(entropy_penalty(uniform), torch.log(torch.tensor(4.0)))
