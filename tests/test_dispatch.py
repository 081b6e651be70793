"""Kernels chosen by measurement (supernet/dispatch.py): a stand-in choice point timed by an
injected timer picks the faster implementation, remembers it (in memory, in the cache file,
read back by a fresh memo and by a second process), replaces an unreadable cache with one
warning, and refuses an implementation that does not exist; every implementation of the
real choice points (1x1x1 convolution, softmax non-local attention) computes the function
of its reference in float64 to 1e-10, forward and backward. No wall-clock timing is
asserted anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from repo import REPO
from torch.utils.flop_counter import FlopCounterMode

from supernet import dispatch
from supernet.app.cli import main as attnas
from supernet.blocks import NONLOCAL_SOFTMAX, NonLocalBlock
from supernet.ops import (
    DOT_SOFTMAX,
    POINTWISE,
    AttentionOp,
    PointwiseConv3d,
    pool_kv,
    single_op,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = {"atol": 1e-10, "rtol": 1e-10}


# -- a stand-in point: two ways of one function, timed by a fake clock ---------------------

def _by_sum(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x + x * w


def _by_product(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * (1 + w)


def fake_timer(seconds: dict[str, float], log: list[str]
               ) -> Callable[[str, Callable[[], None]], float]:
    """Runs the call, logs the implementation's name and says it took ``seconds[name]``."""
    def timer(name: str, call: Callable[[], None]) -> float:
        call()
        log.append(name)
        return seconds[name]
    return timer


def failing_timer(name: str, call: Callable[[], None]) -> float:
    raise AssertionError(f"measured {name} again")


def make_standin(timer: Callable[[str, Callable[[], None]], float],
                 first: str = "sum") -> dispatch.ChoicePoint:
    """The point ``standin`` with ``sum`` and ``product`` (``first`` listed first); fixed: sum."""
    impls = {"sum": _by_sum, "product": _by_product}
    order = [first] + [k for k in impls if k != first]
    return dispatch.ChoicePoint("standin", {k: impls[k] for k in order},
                                fixed=lambda x, w: "sum", timer=timer)


def standin_args() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(3, 4, requires_grad=True), torch.full((4,), 2.0, requires_grad=True)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh cache folder and memo for every test (nothing written to the user's cache);
    the setting back to the environment's afterwards."""
    monkeypatch.setenv("ATTNAS_CACHE", str(tmp_path))
    dispatch.clear_memo()
    yield tmp_path / "dispatch.json"
    dispatch.set_dispatch(None)
    dispatch.clear_memo()


@pytest.mark.parametrize("first", ["sum", "product"])
def test_picks_the_faster_of_two_by_the_injected_timer(cache: Path, first: str) -> None:
    log: list[str] = []
    point = make_standin(fake_timer({"sum": 3e-3, "product": 1e-3}, log), first)
    x, w = standin_args()
    rng = torch.get_rng_state()
    with dispatch.dispatching("measure"):
        assert point.choose(x, w) == "product"
        y = point(x, w)
    assert set(log) == {"sum", "product"} and len(log) == 2 * point.repeats
    assert point.last_ms == {"sum": 3.0, "product": 1.0}
    torch.testing.assert_close(y, _by_sum(x, w))
    assert torch.equal(torch.get_rng_state(), rng)  # fresh inputs from a private generator
    assert x.grad is None and w.grad is None  # the timed backward touched no real tensor
    with dispatch.dispatching("fixed"):
        assert point.choose(x, w) == "sum"


def test_a_near_tie_keeps_the_fixed_rule(cache: Path) -> None:
    point = make_standin(fake_timer({"sum": 1.04e-3, "product": 1e-3}, []))  # fixed: sum
    with dispatch.dispatching("measure"):
        assert point.choose(*standin_args()) == "sum"  # 4 % slower: within the 5 % margin
    point = make_standin(fake_timer({"sum": 1.1e-3, "product": 1e-3}, []))
    dispatch.clear_memo()
    with dispatch.dispatching("measure"):
        assert point.choose(torch.ones(2, 4), torch.ones(4)) == "product"


def test_reuses_its_choice_from_memory_disk_and_another_process(cache: Path) -> None:
    log: list[str] = []
    point = make_standin(fake_timer({"sum": 1e-3, "product": 2e-3}, log))
    x, w = standin_args()
    with dispatch.dispatching("measure"):
        assert point.choose(x, w) == "sum"
        point.timer = failing_timer
        assert point.choose(x, w) == "sum"  # memory
        point.memo.clear()
        dispatch.clear_memo()
        assert point.choose(x, w) == "sum"  # the cache file
        # another key (a new shape, a different grad mode) is measured again
        point.timer = fake_timer({"sum": 2e-3, "product": 1e-3}, log)
        assert point.choose(torch.ones(5, 4), w) == "product"
        with torch.no_grad():
            assert point.choose(x, w) == "product"
    entries = json.loads(cache.read_text())["entries"]
    assert sorted(e["choice"] for e in entries.values()) == ["product", "product", "sum"]
    backward = {e["spec"]["backward"] for e in entries.values()}
    assert backward == {True, False}

    # a second process with a timer that fails reads the file
    code = ("import sys, torch; sys.path.insert(0, 'tests'); torch.set_num_threads(1)\n"
            "from supernet import dispatch\n"
            "from test_dispatch import failing_timer, make_standin, standin_args\n"
            "dispatch.set_dispatch('measure')\n"
            "print(make_standin(failing_timer).choose(*standin_args()))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["sum"]


def test_a_second_writer_adopts_the_first_entry(cache: Path) -> None:
    point = make_standin(fake_timer({"sum": 1e-3, "product": 2e-3}, []))
    x, w = standin_args()
    with dispatch.dispatching("measure"):
        assert point.choose(x, w) == "sum"
        # as if this process had read the file before another one wrote it, and then
        # measured the other way round
        point.memo.clear()
        dispatch._disk[cache] = {}
        point.timer = fake_timer({"sum": 2e-3, "product": 1e-3}, [])
        assert point.choose(x, w) == "sum"
    assert [e["choice"] for e in json.loads(cache.read_text())["entries"].values()] == ["sum"]


def test_an_unreadable_cache_is_replaced_with_one_warning(cache: Path) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{not json")
    dispatch._warned.clear()
    point = make_standin(fake_timer({"sum": 1e-3, "product": 2e-3}, []))
    with dispatch.dispatching("measure"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        point.choose(*standin_args())
        point.choose(torch.ones(2, 4), torch.ones(4))
        dispatch.clear_memo()
        point.memo.clear()
        point.choose(torch.ones(7, 4), torch.ones(4))
    messages = [str(c.message) for c in caught if issubclass(c.category, RuntimeWarning)]
    assert len(messages) == 1 and "unreadable" in messages[0] and str(cache) in messages[0]
    doc = json.loads(cache.read_text())
    assert doc["format"] == "attnas-dispatch" and len(doc["entries"]) == 3


def test_an_unknown_implementation_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match=r"no implementation 'bmmm'.*pointwise_conv: bmm, "
                                         r"conv3d.*nonlocal_softmax: channel_major, sdpa"):
        dispatch.set_dispatch("bmmm")
    with pytest.raises(ValueError, match="no implementation 'sdpa' at point 'pointwise_conv'"):
        dispatch.set_dispatch("fixed,pointwise_conv=sdpa")
    monkeypatch.setenv(dispatch.ENV, "measure,nope")
    with pytest.raises(ValueError, match="ATTNAS_DISPATCH 'measure,nope'"):
        PointwiseConv3d(2, 3)(torch.ones(1, 2, 1, 2, 2))
    assert attnas(["cost", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("attnas: ATTNAS_DISPATCH 'measure,nope'")
    assert "pointwise_conv: bmm, conv3d" in err


def test_forced_fixed_and_auto_settings(cache: Path) -> None:
    x = torch.randn(1, 4, 2, 3, 3)
    last = x.contiguous(memory_format=torch.channels_last_3d)
    conv = PointwiseConv3d(4, 5)
    args = (conv.weight, conv.bias)
    with dispatch.dispatching("fixed"):  # the rule before measuring: bmm on contiguous CPU
        assert POINTWISE.choose(x, *args) == "bmm"
        assert POINTWISE.choose(last, *args) == "conv3d"
    with dispatch.dispatching("pointwise_conv=conv3d"):
        assert POINTWISE.choose(x, *args) == "conv3d"
    with dispatch.dispatching("bmm"):  # a bare name: wherever it applies
        assert POINTWISE.choose(last, *args) == "bmm"
        assert POINTWISE.choose(x[0], *args) == "conv3d"  # 4-D input: bmm does not apply
    theta = torch.randn(2, 4, 6)
    with dispatch.dispatching("fixed,channel_major"):
        assert NONLOCAL_SOFTMAX.choose(theta, theta, theta, 1, False) == "channel_major"
        low = theta.bfloat16()  # channel-major does not apply: the mode's choice
        assert NONLOCAL_SOFTMAX.choose(low, low, low, 1, True) == "sdpa"
    with dispatch.dispatching("fixed"):
        assert NONLOCAL_SOFTMAX.choose(theta, theta, theta, 1, True) == "channel_major"
        assert NONLOCAL_SOFTMAX.choose(theta, theta, theta, 1, False) == "sdpa"


def test_nothing_is_measured_where_it_would_be_wrong_or_seen(cache: Path) -> None:
    point = make_standin(failing_timer)
    meta = (torch.ones(2, 4, device="meta"), torch.ones(4, device="meta"))
    with dispatch.dispatching("auto"):
        assert point.choose(*meta) == "sum"  # auto: not the CPU
    with dispatch.dispatching("measure"):
        assert point.choose(*meta) == "sum"  # no device to time on
        with FlopCounterMode(display=False):  # would count the timed calls
            assert point.choose(*standin_args()) == "sum"
        with torch.profiler.profile():  # would show them
            assert point.choose(*standin_args()) == "sum"
    assert not point.memo and not cache.exists()


def test_tracing_and_compiling_take_the_fixed_rule(cache: Path) -> None:
    conv = PointwiseConv3d(8, 4)
    x = torch.randn(1, 8, 2, 3, 3)
    with dispatch.dispatching("measure"):
        traced = torch.jit.trace(conv, x, check_trace=False)
        assert not POINTWISE.memo  # nothing measured while tracing
        compiled = torch.compile(conv, backend="eager", fullgraph=True)  # no graph break
        torch.testing.assert_close(compiled(x), conv(x))
    torch.testing.assert_close(traced(x), conv(x))


def test_the_key_holds_threads_and_grad_mode(cache: Path) -> None:
    log: list[str] = []
    point = make_standin(fake_timer({"sum": 1e-3, "product": 2e-3}, log))
    x, w = standin_args()
    threads = torch.get_num_threads()
    with dispatch.dispatching("measure"):
        point.choose(x, w)
        torch.set_num_threads(threads + 1)
        try:
            point.choose(x, w)
        finally:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            point.choose(x, w)
    assert len(point.memo) == 3 and len(log) == 3 * 2 * point.repeats
    specs = [e["spec"] for e in json.loads(cache.read_text())["entries"].values()]
    assert {s["threads"] for s in specs} == {threads, threads + 1}
    assert all(s["torch"] == torch.__version__ and s["device"] for s in specs)


def test_a_measured_real_point_leaves_the_model_alone(cache: Path) -> None:
    """The real points measured with the real clock (nothing about speed asserted): the
    result is one of the implementations, parameters get their usual gradients once."""
    torch.manual_seed(0)
    conv = PointwiseConv3d(6, 4).double()
    ref = torch.nn.Conv3d(6, 4, 1).double()
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    rng = torch.get_rng_state()
    with dispatch.dispatching("measure"):
        y = conv(x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert sum(dispatch.chosen()["pointwise_conv"].values()) == 1
    y.backward(torch.cos(y.detach()))
    yr = ref(x.detach())
    yr.backward(torch.cos(yr.detach()))
    torch.testing.assert_close(y, yr, **TOL)
    torch.testing.assert_close(conv.weight.grad, ref.weight.grad, **TOL)


# -- every implementation computes the reference's function (float64, 1e-10) -------------

def _compare(fn: Callable[..., torch.Tensor], ref: Callable[..., torch.Tensor],
             inputs: list[torch.Tensor | None]) -> None:
    """Outputs and the gradients of every tensor input of ``fn`` and ``ref`` agree."""
    results = []
    for f in (fn, ref):
        leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
        out = f(*leaves)
        go = torch.cos(torch.arange(out.numel(), dtype=out.dtype)).reshape(out.shape)
        out.backward(go)
        results.append([out.detach(), *(t.grad for t in leaves if t is not None)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("bias", [True, False])
def test_every_pointwise_implementation_is_the_convolution(layout: str, bias: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 3, 4, 5, dtype=torch.float64, generator=gen)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    w = torch.randn(5, 6, 1, 1, 1, dtype=torch.float64, generator=gen)
    b = torch.randn(5, dtype=torch.float64, generator=gen) if bias else None
    names = POINTWISE.applicable(x, w, b)
    assert set(names) == {"bmm", "conv3d"}
    for name in names:
        _compare(POINTWISE.impls[name], F.conv3d, [x, w, b])
    y = POINTWISE.impls["bmm"](x, w, b)  # the product keeps the input's layout, no copy
    assert y.is_contiguous(memory_format=torch.channels_last_3d
                           if layout == "channels_last" else torch.contiguous_format)
    small = [t.detach()[:1, :, :2, :2, :2].clone().requires_grad_() if t.dim() == 5 else t
             for t in (x, w)]
    assert torch.autograd.gradcheck(lambda a, c: POINTWISE.impls["bmm"](a, c, None), small)


@pytest.mark.parametrize("name", ["bmm", "conv3d"])
def test_pointwise_module_keeps_parameters_keys_and_init(name: str) -> None:
    torch.manual_seed(3)
    conv = torch.nn.Conv3d(6, 5, 1).double()
    torch.manual_seed(3)
    fast = PointwiseConv3d(6, 5).double()
    assert fast.state_dict().keys() == conv.state_dict().keys()
    for a, b in zip(fast.state_dict().values(), conv.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.randn(2, 6, 2, 3, 3, dtype=torch.float64)
    with dispatch.dispatching(f"fixed,pointwise_conv={name}"):
        assert POINTWISE.choose(x, fast.weight, fast.bias) == name
        _compare(lambda t: fast(t), lambda t: conv(t), [x])
    fast.zero_grad()
    conv.zero_grad()
    with dispatch.dispatching(f"fixed,pointwise_conv={name}"):
        fast(x).sum().backward()
    conv(x).sum().backward()
    for p, q in zip(fast.parameters(), conv.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **TOL)


def _reference_attention(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor, heads: int,
                         keep_probs: bool) -> torch.Tensor:
    """``y_i = sum_j softmax_j(theta_i . phi_j / sqrt(dh)) g_j`` by an explicit sum over keys."""
    a = torch.einsum("bdl,bdk->blk", theta, phi) / theta.shape[1] ** 0.5
    p = torch.exp(a - a.amax(-1, keepdim=True))
    return torch.einsum("blk,bdk->bdl", p / p.sum(-1, keepdim=True), g)


@pytest.mark.parametrize("heads", [1, 2])
def test_every_nonlocal_implementation_is_softmax_attention(heads: int) -> None:
    gen = torch.Generator().manual_seed(2)
    b, dh, lq, lk = 2 * heads, 4, 10, 6
    theta, phi, g = (torch.randn(b, dh, n, dtype=torch.float64, generator=gen)
                     for n in (lq, lk, lk))
    names = NONLOCAL_SOFTMAX.applicable(theta, phi, g, heads, True)
    assert set(names) == set(NONLOCAL_SOFTMAX.impls)
    for name in names:
        _compare(lambda t, k, v, f=NONLOCAL_SOFTMAX.impls[name]: f(t, k, v, heads, True),
                 lambda t, k, v: _reference_attention(t, k, v, heads, True), [theta, phi, g])


def _qkv(block: NonLocalBlock, x: torch.Tensor) -> list[torch.Tensor]:
    """The block's ``(N * heads, dh, L)`` theta, phi and g on ``x``."""
    pooled = pool_kv(x)
    return [conv(z).flatten(2).reshape(x.shape[0] * block.heads, -1, z[0, 0].numel())
            for conv, z in ((block.theta, x), (block.phi, pooled), (block.g, pooled))]


@pytest.mark.parametrize("name", ["channel_major", "sdpa", "explicit"])
def test_nonlocal_block_on_each_implementation(name: str) -> None:
    torch.manual_seed(4)
    auto = NonLocalBlock(16, heads=2, impl="auto").double()
    torch.nn.init.normal_(auto.bn.weight)
    ref = NonLocalBlock(16, heads=2, impl="explicit").double()
    ref.load_state_dict(auto.state_dict())
    x = torch.randn(2, 16, 2, 4, 4, dtype=torch.float64)  # 2 heads x Lk 8 <= 2 x 16
    with dispatch.dispatching(f"fixed,nonlocal_softmax={name}"):
        assert NONLOCAL_SOFTMAX.choose(*_qkv(auto, x), 2, True) == name
        _compare(lambda t: auto(t), lambda t: ref(t), [x])


def test_every_dot_product_implementation_is_softmax_attention() -> None:
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(3, 7, 4, dtype=torch.float64, generator=gen)  # (B, Lq, d)
    k, v = (torch.randn(3, 5, 4, dtype=torch.float64, generator=gen) for _ in range(2))
    assert DOT_SOFTMAX.candidates(q, k, v) == ("sdpa", "explicit")  # Lk 5 <= 2 d
    assert DOT_SOFTMAX.candidates(q, torch.cat([k, k], 1), torch.cat([v, v], 1)) == ("sdpa",)
    for impl in DOT_SOFTMAX.impls.values():
        _compare(impl, lambda a, b, c: _reference_attention(
            a.transpose(1, 2), b.transpose(1, 2), c.transpose(1, 2), 1, True).transpose(1, 2),
            [q, k, v])


@pytest.mark.parametrize("name", ["sdpa", "explicit"])
@pytest.mark.parametrize("dim", ["spatial", "temporal", "spatiotemporal"])
def test_attention_op_on_each_implementation(name: str, dim: str) -> None:
    torch.manual_seed(6)
    op = AttentionOp(8, f"dot.{dim}.softmax", "sincos").double()
    x = torch.randn(2, 8, 3, 4, 4, dtype=torch.float64)
    with dispatch.dispatching("fixed"):
        ref = single_op(op.weights, op.spec, x, use_sdpa=False)  # the explicit reference
    with dispatch.dispatching(f"fixed,dot_softmax={name}"):
        _compare(lambda t: op(t), lambda t: single_op(op.weights, op.spec, t, use_sdpa=False),
                 [x])
        torch.testing.assert_close(op(x), ref, **TOL)
