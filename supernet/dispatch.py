"""Dispatch by measurement: where two implementations compute the same function, time them
once on the machine at hand and use the faster one from then on.

A :class:`ChoicePoint` holds named implementations of one function (same arguments, same
result up to floating-point rounding), the *fixed rule* (the choice the code makes without
measuring), which implementations *apply* to given arguments and which of those are worth
*measuring* (say, within a memory bound). Calling the point with arguments runs

1. the implementation forced by the dispatch setting, where it applies;
2. else, in ``fixed`` mode (and in ``auto`` mode off the CPU), the fixed rule;
3. else the choice remembered for this *key* -- the point, each argument's shape, strides,
   dtype, device and whether it requires grad, the candidates, the CPU thread count,
   whether autograd records (then forward+backward is timed, else the forward alone) and
   the autocast state -- first in memory, then in the cache file;
4. else it measures: one warm-up call of each candidate on fresh tensors like the
   arguments (filled from a private generator: the global RNG is left as it was), then up
   to ``repeats`` rounds timing one call of each, the order alternating, stopping early
   once the timed calls took ``budget_s``. The lowest median wins -- unless the fixed
   rule's choice is within ``margin`` of it (then that one stays: a tie is not worth
   leaving the fixed path for) -- and is remembered and written to the cache file.

The setting (``$ATTNAS_DISPATCH``, or :func:`set_dispatch` which takes precedence) is a
comma-separated list of tokens:

* ``auto`` (the default): measure on the CPU, the fixed rule on other devices;
* ``measure``: measure on every device; ``fixed``: the fixed rule everywhere;
* ``IMPL`` or ``POINT=IMPL``: force an implementation where it applies (a bare name: at
  every point that has one of that name), e.g. ``fixed,pointwise_conv=conv3d``.

An unknown token raises ``ValueError`` naming the choices (``attnas`` turns it into one
line, exit 2). Nothing is measured while tracing, scripting or compiling, under a
dispatch or function mode (``FlopCounterMode`` counts what it sees), under the profiler,
or for tensor subclasses and devices other than CPU and CUDA: the fixed rule applies
there, and is not remembered.

The cache file is ``$ATTNAS_CACHE/dispatch.json`` (default ``~/.cache/attnas``): one entry
per key, hashed with the device's name (CPU model or GPU) and the torch version, written
atomically. When two processes measure one key at once, the entry written first stays and
the second process adopts it. An unreadable cache file gives one warning and is replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from datamodules.atomic import atomic_write_text

from .machine import cache_dir, device_name

__all__ = ["ChoicePoint", "DispatchSpec", "ENV", "MODES", "register", "points", "parse_spec",
           "set_dispatch", "dispatching", "current_spec", "check_env", "cache_path",
           "clear_memo", "chosen", "wall_timer"]

ENV = "ATTNAS_DISPATCH"
MODES = ("auto", "measure", "fixed")
FORMAT = "attnas-dispatch"
VERSION = 1

#: ``timer(impl_name, call) -> seconds``: runs ``call()`` once and says how long it took
Timer = Callable[[str, Callable[[], None]], float]


def wall_timer(name: str, call: Callable[[], None]) -> float:
    """Wall-clock seconds of one ``call()`` (the call synchronises its device itself)."""
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


class DispatchSpec(NamedTuple):
    """A parsed setting: the mode and the forced implementations (point -> name)."""

    mode: str
    forced: Mapping[str, str]


_POINTS: dict[str, ChoicePoint] = {}
_override: DispatchSpec | None = None
_env_parsed: tuple[str | None, DispatchSpec] | None = None
_disk: dict[Path, dict[str, Any]] = {}
_warned: set[tuple[str, Path]] = set()


def _choices() -> str:
    pts = "; ".join(f"{p.name}: {', '.join(p.impls)}" for p in _POINTS.values())
    return f"expected {', '.join(MODES)}, IMPL or POINT=IMPL ({pts or 'no points registered'})"


def parse_spec(text: str | None, source: str = "dispatch") -> DispatchSpec:
    """The setting ``text`` (None or empty: ``auto``) as a :class:`DispatchSpec`;
    ``ValueError`` (one line, starting with ``source``) for an unknown token."""
    mode, forced = "auto", {}
    for tok in (t.strip() for t in (text or "").split(",")):
        if not tok:
            continue
        if tok in MODES:
            mode = tok
            continue
        point, sep, impl = tok.rpartition("=")
        if sep:
            if point not in _POINTS or impl not in _POINTS[point].impls:
                raise ValueError(f"{source} {text!r}: no implementation {impl!r} at point "
                                 f"{point!r}; {_choices()}")
            forced[point] = impl
            continue
        owners = [p.name for p in _POINTS.values() if impl in p.impls]
        if not owners:
            raise ValueError(f"{source} {text!r}: no implementation {impl!r}; {_choices()}")
        forced.update(dict.fromkeys(owners, impl))
    return DispatchSpec(mode, forced)


def current_spec() -> DispatchSpec:
    """The setting in force: :func:`set_dispatch`'s, else ``$ATTNAS_DISPATCH``'s."""
    global _env_parsed
    if _override is not None:
        return _override
    text = os.environ.get(ENV)
    if _env_parsed is None or _env_parsed[0] != text:
        _env_parsed = (text, parse_spec(text, ENV))
    return _env_parsed[1]


def check_env() -> None:
    """``ValueError`` (one line) when ``$ATTNAS_DISPATCH`` names no known choice."""
    parse_spec(os.environ.get(ENV), ENV)


def set_dispatch(spec: str | None) -> None:
    """Set the dispatch for this process (``"measure"``, ``"fixed"``, ``"auto"``, an
    implementation's name or ``POINT=IMPL``, comma-separated); None: back to
    ``$ATTNAS_DISPATCH``. ``ValueError`` for an unknown name."""
    global _override
    _override = None if spec is None else parse_spec(spec)


@contextmanager
def dispatching(spec: str | None) -> Iterator[None]:
    """:func:`set_dispatch` for the duration of a ``with`` block."""
    global _override
    before = _override
    set_dispatch(spec)
    try:
        yield
    finally:
        _override = before


def cache_path() -> Path:
    """The cache file: ``$ATTNAS_CACHE/dispatch.json``, else ``~/.cache/attnas/...``."""
    return cache_dir() / "dispatch.json"


def clear_memo() -> None:
    """Forget every registered point's remembered choices and the cache file's contents
    read so far (the file itself stays): the next call looks them up again."""
    for point in _POINTS.values():
        point.memo.clear()
    _disk.clear()


def chosen() -> dict[str, dict[str, int]]:
    """Per registered point, how many remembered keys chose each implementation."""
    out = {}
    for point in _POINTS.values():
        counts = dict.fromkeys(point.impls, 0)
        for impl in point.memo.values():
            counts[impl] += 1
        out[point.name] = counts
    return out


def register(point: ChoicePoint) -> ChoicePoint:
    """Add ``point`` to the registry (the names the setting may force); returns it."""
    _POINTS[point.name] = point
    return point


def points() -> dict[str, ChoicePoint]:
    """The registered points by name (a copy)."""
    return dict(_POINTS)


# -- the cache file ------------------------------------------------------------------------

def _warn_once(kind: str, path: Path, message: str) -> None:
    if (kind, path) not in _warned:
        _warned.add((kind, path))
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _read(path: Path, quiet: bool) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or doc.get("format") != FORMAT \
                or not isinstance(doc.get("entries"), dict):
            raise ValueError("not an attnas dispatch cache")
        return doc["entries"]
    except (OSError, ValueError) as err:
        if not quiet:
            _warn_once("read", path, f"attnas: dispatch cache {path} unreadable ({err}); "
                                     f"measuring again and replacing it")
        return {}


def _disk_get(path: Path, digest: str) -> Any:
    if path not in _disk:
        _disk[path] = _read(path, quiet=False)
    entry = _disk[path].get(digest)
    return entry.get("choice") if isinstance(entry, dict) else None


def _disk_put(path: Path, digest: str, entry: dict[str, Any]) -> str:
    """Store ``entry`` unless another process stored this key first; the stored choice."""
    entries = _read(path, quiet=True)
    old = entries.get(digest)
    if isinstance(old, dict) and old.get("choice") in entry["candidates"]:
        _disk[path] = entries
        return str(old["choice"])
    entries[digest] = entry
    try:
        atomic_write_text(path, json.dumps({"format": FORMAT, "version": VERSION,
                                            "entries": entries}, indent=1) + "\n")
    except OSError as err:
        _warn_once("write", path, f"attnas: dispatch cache {path} not written ({err}); "
                                  f"choices are kept in memory only")
    _disk[path] = entries
    return str(entry["choice"])


# -- keys and measurement ------------------------------------------------------------------

def _device(args: Sequence[Any]) -> torch.device:
    for a in args:
        if isinstance(a, Tensor):
            return a.device
    return torch.device("cpu")


def _signature(a: Any) -> Any:
    if isinstance(a, Tensor):
        return (a.shape, a.stride(), a.dtype, a.requires_grad)
    return a


def _autocast(device: torch.device) -> str | None:
    try:
        if not torch.is_autocast_enabled(device.type):
            return None
        return str(torch.get_autocast_dtype(device.type))
    except (TypeError, AttributeError, RuntimeError):  # older torch, unknown device type
        return None


def _can_measure(args: Sequence[Any], device: torch.device) -> bool:
    """False where a measurement would be wrong or seen: see the module docstring."""
    if device.type not in ("cpu", "cuda"):
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    stacks = (getattr(torch._C, "_len_torch_dispatch_stack", lambda: 0)(),
              getattr(torch._C, "_len_torch_function_stack", lambda: 0)())
    if any(stacks) or torch.autograd._profiler_enabled():
        return False
    return all(type(a) in (Tensor, nn.Parameter) for a in args if isinstance(a, Tensor))


def _like(a: Any, grad: bool, gen: torch.Generator) -> Any:
    """A fresh leaf with ``a``'s shape, strides and dtype (random values), or ``a``."""
    if not isinstance(a, Tensor):
        return a
    with torch.no_grad():
        t = torch.empty_like(a)
        if t.is_floating_point():
            t.normal_(generator=gen)
        else:
            t.copy_(a)
    return t.requires_grad_(grad and a.requires_grad)


def _json_arg(a: Any) -> Any:
    if isinstance(a, Tensor):
        return {"shape": list(a.shape), "stride": list(a.stride()), "dtype": str(a.dtype),
                "requires_grad": a.requires_grad}
    return a if a is None or isinstance(a, (bool, int, float, str)) else repr(a)


class ChoicePoint:
    """Named implementations of one function, chosen by measurement (module docstring).

    Args:
        name: the point's name in the setting (``POINT=IMPL``) and the cache.
        impls: name -> implementation; each takes the same arguments (tensors and plain
            values) and returns one tensor.
        fixed: ``fixed(*args) -> name``, the choice without measuring.
        applicable: ``applicable(*args) -> names`` that can compute these arguments (a
            forced one is used only there); default: all.
        candidates: ``candidates(*args) -> names`` worth measuring here (default:
            ``applicable``); one candidate is taken as it is, none falls back to ``fixed``.
        timer: how one call is timed (default :func:`wall_timer`; tests inject their own).
        warmup, repeats, budget_s: untimed calls of each candidate, at most this many timed
            rounds, and the timed seconds after which no further round starts.
        margin: the fixed rule's choice stays unless another is faster by more than this
            fraction of its time.
    """

    def __init__(self, name: str, impls: Mapping[str, Callable[..., Tensor]],
                 fixed: Callable[..., str],
                 applicable: Callable[..., Sequence[str]] | None = None,
                 candidates: Callable[..., Sequence[str]] | None = None,
                 timer: Timer | None = None, warmup: int = 1, repeats: int = 3,
                 budget_s: float = 0.25, margin: float = 0.05) -> None:
        if len(impls) < 1:
            raise ValueError(f"choice point {name!r} needs at least one implementation")
        self.name = name
        self.impls = dict(impls)
        self.fixed = fixed
        self.applicable = applicable or (lambda *args: tuple(self.impls))
        self.candidates = candidates or self.applicable
        self.timer = timer or wall_timer
        self.warmup, self.repeats, self.budget_s = int(warmup), int(repeats), float(budget_s)
        self.margin = float(margin)
        self.memo: dict[tuple, str] = {}
        #: the last measurement's median milliseconds per candidate (for reports)
        self.last_ms: dict[str, float] = {}

    def __call__(self, *args: Any) -> Tensor:
        """The chosen implementation's result on ``args``."""
        return self.impls[self.choose(*args)](*args)

    def choose(self, *args: Any) -> str:
        """The name of the implementation that ``args`` run through."""
        spec = current_spec()
        forced = spec.forced.get(self.name)
        if forced is not None and forced in self.applicable(*args):
            return forced
        if spec.mode == "fixed" or torch.compiler.is_compiling():  # compile: no key, no break
            return self.fixed(*args)
        device = _device(args)
        if spec.mode == "auto" and device.type != "cpu":
            return self.fixed(*args)
        cands = tuple(self.candidates(*args))
        if len(cands) < 2:
            return cands[0] if cands else self.fixed(*args)
        key = (tuple([_signature(a) for a in args]), device, cands, torch.get_num_threads(),
               torch.is_grad_enabled(), _autocast(device))
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        if not _can_measure(args, device):
            return self.fixed(*args)
        grad = key[4] and any(isinstance(a, Tensor) and a.requires_grad for a in args)
        choice = self._decide(args, cands, device, grad, key)
        self.memo[key] = choice
        return choice

    def _decide(self, args: Sequence[Any], cands: tuple[str, ...], device: torch.device,
                grad: bool, key: tuple) -> str:
        spec = {"point": self.name, "device": device_name(device), "torch": torch.__version__,
                "threads": key[3] if device.type == "cpu" else None,
                "args": [_json_arg(a) for a in args], "candidates": list(cands),
                "backward": grad, "autocast": key[5]}
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        path = cache_path()
        hit = _disk_get(path, digest)
        if hit in cands:
            return str(hit)
        ms = self.measure(args, cands, grad)
        finite = [c for c in cands if ms[c] != float("inf")]
        if not finite:
            return self.fixed(*args)
        choice = min(finite, key=lambda c: ms[c])
        rule = self.fixed(*args)
        if rule in finite and ms[rule] <= ms[choice] * (1 + self.margin):
            choice = rule
        return _disk_put(path, digest, {"spec": spec, "choice": choice,
                                        "ms": {c: ms[c] if c in finite else None for c in cands},
                                        "candidates": list(cands),
                                        "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def measure(self, args: Sequence[Any], cands: Sequence[str], grad: bool
                ) -> dict[str, float]:
        """Median milliseconds of one call of each candidate on fresh tensors like ``args``
        (forward, and backward to the arguments that require grad when ``grad``); a
        candidate that raises a ``RuntimeError`` gets ``inf``."""
        device = _device(args)
        gen = torch.Generator(device=device).manual_seed(0)
        fresh = [_like(a, grad, gen) for a in args]
        leaves = [a for a in fresh if isinstance(a, Tensor) and a.requires_grad]
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        grad_out: dict[str, Tensor] = {}

        def call(name: str) -> None:
            out = self.impls[name](*fresh)
            if grad and leaves:
                if name not in grad_out:
                    grad_out[name] = _like(out.detach(), False, gen)
                torch.autograd.grad(out, leaves, grad_out[name])
            sync()

        times: dict[str, list[float]] = {c: [] for c in cands}
        live = list(cands)
        for c in cands:
            try:
                for _ in range(self.warmup):
                    call(c)
            except RuntimeError:
                live.remove(c)
        spent = 0.0
        for r in range(self.repeats):
            for c in live if r % 2 == 0 else live[::-1]:
                seconds = self.timer(c, lambda c=c: call(c))
                times[c].append(seconds)
                spent += seconds
            if spent >= self.budget_s:
                break
        self.last_ms = {c: round(1e3 * statistics.median(times[c]), 4) if times[c]
                        else float("inf") for c in cands}
        return dict(self.last_ms)
