"""Side by side with pytorchvideo: our I3D-R50 and non-local block against its ``i3d_r50``
and ``create_nonlocal`` on CPU, same inputs, same thread count, timed alternately.

1. **I3D-R50 SGD train step** -- forward, cross-entropy, backward, ``SGD.step`` on a
   2x3x8x112x112 clip (400 classes, train mode). Ours: ``create_backbone("i3d_r50", 400)``;
   pytorchvideo: ``i3d_r50(pretrained=False)`` with its head pool made global
   (``AdaptiveAvgPool3d``: the default 4x7x7 ``AvgPool3d`` only fits 224x224 inputs), the
   same function as our global average pool. Both have 28,043,472 parameters.
2. **Non-local block forward+backward** at 2x512x4x28x28 (the res3 shape). Ours: the
   benchmark's ``nonlocal`` block (``create_block("nonlocal", 512)``: inner width 256,
   embedded Gaussian, keys/values max-pooled 1x2x2, attention through
   ``F.scaled_dot_product_attention``). pytorchvideo: ``create_nonlocal(dim_in=512,
   dim_inner=256, pool_size=(1, 2, 2), instantiation="softmax")`` (the same convs with
   bias, the same 1x2x2 max-pool of the phi/g input, the same 1/sqrt(256) scale, but the
   2 x 3136 x 784 affinity materialised by ``einsum`` and ``softmax``). Both get the same
   weights (their outputs are checked to agree) and their BN gamma at 1, so the gradient
   flows through the attention; the input requires grad, as inside a network.
3. **Peak memory** of that non-local forward+backward at 2x512x8x56x56, each block in a
   fresh subprocess started with ``MALLOC_MMAP_THRESHOLD_=65536``, measured by
   :func:`benchmarks.block_cost._peak_mib` (RSS high-water increase during one call, after
   a warm-up call; see that module's docstring).

Times: ``--warmup`` steps each, then ``--repeats`` rounds, each timing one step of each
model (the order alternating between rounds, so load drifts on this shared machine hit
both alike); the table gives the medians, their ratio and the median of the per-round
ratios. pytorchvideo is an optional dependency: ``make install-compare`` or
``pip install -e '.[compare]'``. torchvision is not needed (and must not be installed next
to our CPU torch): see :func:`import_pytorchvideo`.

Our 1x1x1 convolutions and non-local attention run the kernels :mod:`supernet.dispatch`
chooses (measured during the warm-up steps, or read from its cache); ``--dispatch fixed``
prints the table on the fixed rule's kernels instead, ``--dispatch measure`` (or a forced
implementation, e.g. ``pointwise_conv=conv3d``) on others. The header says which setting
ran and how many shapes took each kernel.

    python -m benchmarks.vs_pytorchvideo [--threads 2] [--repeats 7] [--warmup 2] [--tiny]
        [--no-mem] [--dispatch auto|measure|fixed|IMPL|POINT=IMPL]
        [--out benchmarks/results/vs_pytorchvideo.md]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.block_cost import _machine, _peak_mib
from datamodules.atomic import atomic_write_text
from supernet import create_backbone, create_block, dispatch
from supernet.blocks import NonLocalBlock

CLIP = (2, 3, 8, 112, 112)
NL_TIME = (2, 512, 4, 28, 28)
NL_MEM = (2, 512, 8, 56, 56)
TINY = {"clip": (1, 3, 4, 32, 32), "nl_time": (1, 64, 2, 8, 8), "nl_mem": (1, 64, 2, 16, 16)}
TARGET = 0.95
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
INSTALL_HINT = ("vs_pytorchvideo: pytorchvideo is not installed; run `make install-compare` "
                "or `pip install -e '.[compare]'`")


NOTES = """## Notes

- **Same work.** The two I3D-R50s are the same network (28,043,472 parameters; the same
  convolutions, BN, ReLU, pools, dropout 0.5, linear head); pytorchvideo's head pool is made
  global for 112² inputs. Both non-local blocks compute θ on x, φ and g on x max-pooled
  1×2×2, softmax(θᵀφ/√256)·g, W_z, BN, residual, with the same weights.
- **Why ours was not faster (before this change: 0.98× and 1.04× on this machine, the
  issue's 1.07× and 1.08× on another day).** I3D-R50: op for op the graph of
  pytorchvideo, so parity up to noise. With 2 threads ATen hands every 1×1×1 conv to oneDNN,
  whose forward+backward of a small res3–res5 1×1×1 conv cost 2–3× a batched matmul here
  (≈ 90–100 ms against ≈ 30–45 ms of CPU time at 2×128…1024×4×7…14²; parity with one
  thread); 24 of the 53 convs are 1×1×1 with stride 1. Non-local: SDPA's CPU flash kernel
  recomputes the 2×3136×784 affinity in backward (7 L·Lk·d products against the explicit
  form's 6; its backward took 3× its forward, 356 against 119 ms with one thread), and the
  (N, 1, L, d) layout it requires costs four transposing copies per pass (θ, φ, g, y) and
  four more in backward, so it ran at 1.0–1.05× pytorchvideo's einsum + softmax.
- **What changed.** (1) `NonLocalBlock(impl="auto")`, what `create_block("nonlocal")` now
  builds: on CPU, while the probabilities take at most twice the block input's memory
  (heads·Lk ≤ 2C; float32/64, no autocast), the attention runs channel-major
  (`supernet.blocks.channel_major_attention`): `baddbmm` (scale folded in), softmax, `bmm`
  on the (N, d, L) layout of the conv outputs (no copies), keeping P for a backward of four
  products (dV, dP, dQ, dK; the row sums of dP∘P taken as Σ_c dy·y, a d×L product);
  larger affinities (the 2×512×8×56² memory row: 1.26 GB each) and GPUs stay on SDPA.
  (2) `supernet.ops.PointwiseConv3d`: the stride-1 1×1×1 convs of the bottlenecks and of
  the non-local block run as one `bmm`/`baddbmm` on CPU (same parameters, init and
  state-dict keys; other devices and channels-last inputs use the conv). (3) The
  bottleneck's and the non-local block's residual additions are in place (BatchNorm's
  backward does not need its output).
- **Kernels by measurement.** (1)'s channel-major attention and (2)'s `bmm` are now
  candidates of `supernet.dispatch`: next to SDPA and the explicit form, and next to the
  convolution, each timed once per shape, thread count and processor and the faster kept
  (cached in `~/.cache/attnas/dispatch.json`); "Our kernels" above says which ran.
  `--dispatch fixed` gives the fixed rule of (1) and (2).
- **Cost of (1).** Where `auto` takes the channel-major path the block keeps its B×L×Lk
  probabilities for backward: +9.8 MB per res3 block per 4-frame 224² clip in training
  (the non-local row of `block_cost.md`'s "peak train" column grows by that); inference,
  and training at larger affinities, are unchanged.
- **Noise.** The 2 cores of this machine are shared with other jobs (load average in the
  header). With 2 threads each parallel region waits until both threads are scheduled, so
  a step takes several times its 1-thread time and single steps vary up to 3× between
  rounds; the alternation and the per-round ratio keep the comparison paired, and the CPU
  time above is a second, less load-sensitive view.
"""


# -- importing pytorchvideo without torchvision --------------------------------------------

class _RoIAlignStub:
    """Stands in for ``torchvision.ops.RoIAlign``; only pytorchvideo's detection head
    (``create_res_roi_pooling_head``) would build one, and nothing here does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("torchvision is not installed: pytorchvideo's RoIAlign (detection "
                           "heads) is unavailable in benchmarks.vs_pytorchvideo")


@contextmanager
def _torchvision_stub() -> Iterator[None]:
    """Make ``from torchvision.ops import RoIAlign`` succeed while pytorchvideo imports.

    ``pytorchvideo/models/head.py`` imports ``torchvision.ops.RoIAlign`` at module level
    (used as a default argument of its ROI detection head only), and
    ``pytorchvideo.models`` imports ``head``; the classification models and the non-local
    layer use no other torchvision code. torchvision itself must not be installed next to
    our CPU torch 2.13 (its compiled ops do not load against it), so while pytorchvideo's
    modules import, ``sys.modules`` holds a two-module stub whose ``RoIAlign`` raises if
    instantiated. The stub is removed afterwards, so that other libraries probing for
    torchvision (``importlib.util.find_spec``) still see it absent. Nothing is stubbed when
    a real torchvision is importable.
    """
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return
    tv = types.ModuleType("torchvision")
    tv.__path__ = []  # a package, so that ``torchvision.ops`` resolves
    tv.__spec__ = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
    ops = types.ModuleType("torchvision.ops")
    ops.__spec__ = importlib.machinery.ModuleSpec("torchvision.ops", None)
    ops.RoIAlign = _RoIAlignStub
    tv.ops = ops
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = tv, ops
    try:
        yield
    finally:
        for name, mod in (("torchvision.ops", ops), ("torchvision", tv)):
            if sys.modules.get(name) is mod:
                del sys.modules[name]


def import_pytorchvideo() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """``(i3d_r50, create_nonlocal)`` from pytorchvideo, or None when it is not installed."""
    if importlib.util.find_spec("pytorchvideo") is None:
        return None
    with _torchvision_stub():
        from pytorchvideo.layers.nonlocal_net import create_nonlocal
        from pytorchvideo.models.hub.resnet import i3d_r50
    return i3d_r50, create_nonlocal


# -- the models ----------------------------------------------------------------------------

def build_i3d(which: str, num_classes: int = 400):
    from torch import nn

    if which == "ours":
        return create_backbone("i3d_r50", num_classes)
    i3d_r50, _ = import_pytorchvideo()
    return i3d_r50(pretrained=False, model_num_class=num_classes,
                   head_pool=nn.AdaptiveAvgPool3d, head_output_size=(1, 1, 1))


def build_nonlocal_pair(channels: int, seed: int = 0):
    """``(ours, theirs)`` with the same weights and BN gamma 1."""
    import torch

    _, create_nonlocal = import_pytorchvideo()
    torch.manual_seed(seed)
    ours = create_block("nonlocal", channels)  # inner 0.5, softmax, kv_pool, sdpa
    torch.nn.init.ones_(ours.bn.weight)
    theirs = create_nonlocal(dim_in=channels, dim_inner=ours.inner, pool_size=(1, 2, 2),
                             instantiation="softmax")
    names = {"conv_theta": "theta", "conv_phi": "phi", "conv_g": "g", "conv_out": "out",
             "norm": "bn"}
    src = ours.state_dict()
    theirs.load_state_dict({k: src[names[k.split(".", 1)[0]] + "." + k.split(".", 1)[1]]
                            for k in theirs.state_dict()})
    return ours, theirs


# -- timed steps ---------------------------------------------------------------------------

def _i3d_step(model, opt, x, y) -> None:
    import torch.nn.functional as F

    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _nl_step(block, x, go) -> None:
    for p in block.parameters():
        p.grad = None
    block(x.detach().requires_grad_()).backward(go)


def _alternate(steps: dict[str, Callable[[], None]], warmup: int, repeats: int
               ) -> dict[str, list[tuple[float, float]]]:
    """``(wall, process CPU)`` seconds per call of each step: ``warmup`` untimed calls
    each, then ``repeats`` rounds of one call each, the order reversed every other round."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            steps[name]()
            runs[name].append((time.perf_counter() - t0, time.process_time() - c0))
    return runs


def time_i3d(shape: tuple[int, ...], warmup: int, repeats: int
             ) -> dict[str, list[tuple[float, float]]]:
    import torch

    torch.manual_seed(0)
    x = torch.randn(shape)
    y = torch.randint(0, 400, (shape[0],))
    steps = {}
    for which in ("ours", "theirs"):
        model = build_i3d(which).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        steps[which] = (lambda m=model, o=opt: _i3d_step(m, o, x, y))
    return _alternate(steps, warmup, repeats)


def time_nonlocal(shape: tuple[int, ...], warmup: int, repeats: int
                  ) -> tuple[dict[str, list[tuple[float, float]]], float]:
    """Times of both blocks and of ours with ``impl="sdpa"`` (``"sdpa"``, for reference),
    and the largest |difference| of ours and theirs' outputs."""
    import torch

    ours, theirs = build_nonlocal_pair(shape[1])
    sdpa = NonLocalBlock(shape[1], impl="sdpa")
    sdpa.load_state_dict(ours.state_dict())
    x = torch.randn(shape)
    go = torch.randn(shape)
    with torch.no_grad():
        diff = float((ours(x) - theirs(x)).abs().max())
    runs = _alternate({"ours": lambda: _nl_step(ours, x, go),
                       "theirs": lambda: _nl_step(theirs, x, go),
                       "sdpa": lambda: _nl_step(sdpa, x, go)}, warmup, repeats)
    return runs, diff


def child_mem(which: str, shape: tuple[int, ...], threads: int) -> dict:
    """Peak RSS increase (MiB) of one non-local forward+backward (after a warm-up)."""
    import torch

    torch.set_num_threads(threads)
    block = build_nonlocal_pair(shape[1])[0 if which == "ours" else 1]
    x = torch.randn(shape)
    go = torch.randn(shape)
    _nl_step(block, x, go)  # warm-up: parameter gradients, oneDNN/MKL scratch
    return {"peak_mib": _peak_mib(lambda: _nl_step(block, x, go))}


def _run_mem(which: str, shape: tuple[int, ...], threads: int,
             setting: str | None = None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.vs_pytorchvideo", "--_child", which,
           "x".join(map(str, shape)), str(threads)]
    if setting is not None:
        cmd += ["--dispatch", setting]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env=dict(os.environ, **MMAP_ENV))
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report --------------------------------------------------------------------------------

def _shape(shape: tuple[int, ...]) -> str:
    *lead, h, w = shape
    return "×".join(map(str, lead)) + (f"×{h}²" if h == w else f"×{h}×{w}")


def _row(what: str, shape: tuple[int, ...], ours: float, theirs: float, unit: str,
         paired: float | None = None) -> str:
    ratio = ours / max(theirs, 1e-12)
    verdict = "met" if ratio <= TARGET else "NOT met"
    fmt = (lambda v: f"{v:,.1f}") if unit == "ms" else (lambda v: f"{v:,.0f}")
    paired_s = "–" if paired is None else f"{paired:.2f}×"
    return (f"| {what} | {_shape(shape)} | {fmt(ours)} | {fmt(theirs)} | {ratio:.2f}× | "
            f"{paired_s} | ≤ {TARGET}×: {verdict} |")


def _paired_ratio(runs: dict[str, list[tuple[float, float]]], ours: str = "ours") -> float:
    return statistics.median(a[0] / b[0] for a, b in zip(runs[ours], runs["theirs"]))


def _medians(runs: dict[str, list[tuple[float, float]]], which: int = 0) -> dict[str, float]:
    """Median milliseconds per step: wall (``which=0``) or process CPU time (1)."""
    return {k: 1e3 * statistics.median(r[which] for r in v) for k, v in runs.items()}


def _cpu_note(what: str, runs: dict[str, list[tuple[float, float]]]) -> str:
    cpu = _medians(runs, 1)
    extra = "".join(f", ours with impl={k} {v:,.0f} ms" for k, v in cpu.items()
                    if k not in ("ours", "theirs"))
    return (f"- {what}, process CPU time per step (medians, all threads): ours "
            f"{cpu['ours']:,.0f} ms, pytorchvideo {cpu['theirs']:,.0f} ms "
            f"({cpu['ours'] / max(cpu['theirs'], 1e-12):.2f}×){extra}.")


def _dispatch_note(setting: str | None) -> str:
    """The dispatch setting that ran and how many shapes each point sent to each kernel."""
    text = setting if setting is not None else os.environ.get(dispatch.ENV) or "auto"
    counts = "; ".join(
        f"`{point}` " + ", ".join(f"{impl} ×{n}" for impl, n in impls.items() if n)
        for point, impls in dispatch.chosen().items() if any(impls.values()))
    return (f"`--dispatch {text}` (supernet.dispatch); shapes per kernel where measured "
            f"or read from the cache: {counts or 'none (the fixed rule everywhere)'}.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps each (default 2)")
    ap.add_argument("--tiny", action="store_true",
                    help="toy sizes (1x3x4x32² clip, 64-channel non-local), for tests")
    ap.add_argument("--no-mem", action="store_true", help="skip the peak-memory row")
    ap.add_argument("--dispatch", default=None, metavar="SETTING",
                    help="kernels of our side (supernet.dispatch): auto (measure on the "
                         "CPU), measure, fixed, an implementation or POINT=IMPL; default: "
                         "$ATTNAS_DISPATCH, else auto")
    ap.add_argument("--out", default="benchmarks/results/vs_pytorchvideo.md")
    ap.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:  # an unknown implementation: one line, exit 2
        if args.dispatch is not None:
            dispatch.set_dispatch(args.dispatch)
        else:
            dispatch.check_env()
    except ValueError as err:
        print(f"vs_pytorchvideo: {err}", file=sys.stderr)
        return 2
    if import_pytorchvideo() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    if args._child:
        which, shape, threads = args._child
        print(json.dumps(child_mem(which, tuple(int(s) for s in shape.split("x")),
                                   int(threads))))
        return 0
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        print("vs_pytorchvideo: --repeats and --threads must be >= 1, --warmup >= 0",
              file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(args.threads)
    clip, nl_time, nl_mem = ((TINY["clip"], TINY["nl_time"], TINY["nl_mem"]) if args.tiny
                             else (CLIP, NL_TIME, NL_MEM))
    load_before = os.getloadavg()
    started = time.time()
    head = ["| comparison | shape | ours | pytorchvideo | ours / theirs (medians) "
            "| median of per-round ratios | target |",
            "|---|---|---:|---:|---:|---:|---|"]
    print("\n".join(head), flush=True)
    rows, cpu_notes = [], []
    runs = time_i3d(clip, args.warmup, args.repeats)
    med = _medians(runs)
    rows.append(_row(f"I3D-R50 SGD train step (ms, median of {args.repeats})", clip,
                     med["ours"], med["theirs"], "ms", _paired_ratio(runs)))
    cpu_notes.append(_cpu_note("I3D-R50 train step", runs))
    print(rows[-1], flush=True)
    runs, diff = time_nonlocal(nl_time, args.warmup, args.repeats)
    med = _medians(runs)
    rows.append(_row(f"non-local fwd+bwd (ms, median of {args.repeats})", nl_time,
                     med["ours"], med["theirs"], "ms", _paired_ratio(runs)))
    print(rows[-1], flush=True)
    rows.append(_row("↳ ours with `impl=\"sdpa\"` (the flash kernel; reference)", nl_time,
                     med["sdpa"], med["theirs"], "ms", _paired_ratio(runs, "sdpa"))
                .rsplit("|", 2)[0] + "| – |")
    cpu_notes.append(_cpu_note("non-local fwd+bwd", runs))
    print(rows[-1], flush=True)
    mem_note = ""
    if not args.no_mem:
        mem = {w: _run_mem(w, nl_mem, args.threads, args.dispatch) for w in ("ours", "theirs")}
        if any("error" in m for m in mem.values()):
            rows.append(f"| non-local fwd+bwd peak memory (MiB) | {_shape(nl_mem)} | "
                        f"failed: {mem} |")
        else:
            rows.append(_row("non-local fwd+bwd peak memory (MiB)", nl_mem,
                             mem["ours"]["peak_mib"], mem["theirs"]["peak_mib"], "MiB"))
            mem_note = " Peak memory: one fresh process per block (see the docstring)."
        print(rows[-1], flush=True)
    load_after = os.getloadavg()

    cmd = "python -m benchmarks.vs_pytorchvideo" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    import pytorchvideo

    text = "\n".join([
        "# attnas vs pytorchvideo (CPU)",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {_machine(args.threads)}, pytorchvideo {pytorchvideo.__version__}; "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {time.time() - started:.0f} s; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (shared cores: times are "
        f"noisy, hence the alternation).",
        "",
        f"Times: {args.warmup} warm-up step(s) each, then {args.repeats} round(s) timing one "
        f"step of each, alternating which goes first.{mem_note} Non-local outputs of the two "
        f"blocks (same weights) differ by at most {diff:.1e}.",
        "",
        f"Our kernels: {_dispatch_note(args.dispatch)}",
        "",
        *head,
        *rows,
        "",
        *cpu_notes,
        "",
        NOTES,
    ])
    atomic_write_text(args.out, text)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
