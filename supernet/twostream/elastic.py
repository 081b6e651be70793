"""The two-stream supernet: one SlowFast-family network whose weights every point of a
stage's sub-space shares, and the architecture logits of that stage's variables.

How each variable of :mod:`.space` is shared (``w`` = the variable's weights over its
allowed values: ``softmax(logits)`` in ``darts``, uniform in ``uniform``, one-hot when a
value is pinned -- single-path steps, selection, or a variable this stage does not search):

* ``beta_inv`` -- the fast stream is built at the widest value; every fast BatchNorm
  output is multiplied by the channel mask ``sum_b w_b * [c < C / b]`` (the first channels
  are shared, as in once-for-all networks), so a pinned value is exactly the narrower
  stream and the masked channels get no gradient;
* ``slow_kt`` / ``fast_kt`` -- the convs are built with the largest temporal kernel and its
  taps are multiplied by ``sum_k w_k * [|t| <= k // 2]`` (the centre taps are shared; with
  the same padding a cropped kernel gives exactly the smaller conv's output);
* ``fusion`` / ``fusion_at`` -- every candidate lateral exists at every site; their outputs
  are mixed by ``w`` (concatenating ops zero-padded to the widest, ``sum`` added), scaled by
  the weight of the ``fusion_at`` values that fuse at that site;
* ``attention`` / ``attention_at`` -- every candidate block exists after the last block of
  res3 and res4 in each pathway: ``x + g * sum_b w_b * (block_b(x) - x)`` with ``g`` the
  weight of the values of ``attention_at`` that use the pathway;
* ``frame_ratio`` -- cannot be mixed (the slow stream reads another number of frames): a
  training step draws one value from ``w`` (its logits then learn through a
  straight-through factor on the slow stream, as in GDAS); evaluation uses the pinned value,
  else the most likely one (ties: SlowFast's 4).

Shapes: ``(N, C, T, H, W)`` with ``T`` a multiple of every allowed ``frame_ratio`` ->
``(N, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones.slowfast import _WIDTHS, FUSION_SITES, SlowFast, _Lateral
from ..block_factory import create_block
from ..ops import check_video
from .space import SLOWFAST_DEFAULT, VARIABLE_NAMES, Variable, attention_positions, variable

__all__ = ["StageChoices", "ElasticTwoStream"]


class StageChoices(nn.Module):
    """The architecture of one stage: logits per searched variable and, for every
    variable, the values still allowed. Variables outside the stage are fixed (one
    allowed value, no logits).

    Args:
        fixed: the value of every variable (the searched ones' entries are ignored).
        free: the variables this stage searches.
        exclude: values a free variable may not take here (e.g. ``{"attention":
            ("cell",)}`` when no cell is given).
    """

    def __init__(self, fixed: Mapping[str, Any], free: tuple[Variable, ...],
                 exclude: Mapping[str, tuple] | None = None) -> None:
        super().__init__()
        self.values = {**SLOWFAST_DEFAULT, **dict(fixed)}
        self.free = tuple(v.name for v in free)
        drop = {k: tuple(v) for k, v in (exclude or {}).items()}
        self._options = {v.name: tuple(x for x in v.values if x not in drop.get(v.name, ()))
                         for v in free}
        self.logits = nn.ParameterDict({n: nn.Parameter(torch.zeros(len(vals)))
                                        for n, vals in self._options.items()})
        self._allowed: dict[str, list[int]] = {}
        self.clear_restrictions()

    # -- what is allowed --------------------------------------------------------------
    def candidates(self, name: str) -> tuple:
        """Every value ``name`` may take in this stage (one for a fixed variable)."""
        variable(name)
        return self._options[name] if name in self.free else (self.values[name],)

    def allowed(self, name: str) -> list[Any]:
        """The values still allowed (restrictions applied)."""
        cands = self.candidates(name)
        return [cands[i] for i in self._allowed[name]]

    def restrict(self, name: str, values: list[Any]) -> None:
        """Allow only ``values`` of free variable ``name`` (one value: pinned)."""
        cands = self.candidates(name)
        idx = sorted(cands.index(v) for v in values)
        if not idx:
            raise ValueError(f"{name}: a restriction must leave at least one value")
        self._allowed[name] = idx

    def clear_restrictions(self) -> None:
        """Every candidate allowed again."""
        self._allowed = {n: list(range(len(self.candidates(n)))) for n in variable_names()}

    def restrictions(self) -> dict[str, list[int]]:
        """A copy of the restrictions (for :meth:`set_restrictions`)."""
        return {k: list(v) for k, v in self._allowed.items()}

    def set_restrictions(self, saved: Mapping[str, list[int]]) -> None:
        """Restore restrictions saved by :meth:`restrictions`."""
        self._allowed = {k: list(v) for k, v in saved.items()}

    def pinned(self, name: str) -> Any | None:
        """The value when only one is allowed, else None."""
        allowed = self.allowed(name)
        return allowed[0] if len(allowed) == 1 else None

    # -- weights -------------------------------------------------------------------------
    def weights(self, name: str) -> Tensor:
        """``(len(candidates),)`` float: softmax of the logits over the allowed values
        (exact zeros elsewhere; one-hot when pinned)."""
        n = len(self.candidates(name))
        idx = self._allowed[name]
        if name not in self.free or len(idx) == 1:
            out = torch.zeros(n)
            out[idx[0]] = 1.0
            dev = next(iter(self.logits.values())).device if len(self.logits) else None
            return out if dev is None else out.to(dev)
        logits = self.logits[name]
        mask = torch.full_like(logits, float("-inf"))
        mask[idx] = 0.0
        return torch.softmax(logits + mask, 0)

    def weight_of(self, name: str, value: Any) -> Tensor | float:
        """The weight of one value (0.0 when not allowed)."""
        cands = self.candidates(name)
        if value not in cands or cands.index(value) not in self._allowed[name]:
            return 0.0
        return self.weights(name)[cands.index(value)]

    def eval_value(self, name: str) -> Any:
        """A non-mixable variable at evaluation: the pinned value, else the most likely
        allowed one (ties: SlowFast's value if allowed, else the first)."""
        allowed = self.allowed(name)
        if len(allowed) == 1:
            return allowed[0]
        w = self.weights(name).detach().cpu()
        cands = self.candidates(name)
        best = max(float(w[cands.index(v)]) for v in allowed)
        tied = [v for v in allowed if float(w[cands.index(v)]) >= best - 1e-9]
        default = SLOWFAST_DEFAULT[name]
        return default if default in tied else tied[0]

    def sample(self, name: str, generator: torch.Generator | None = None
               ) -> tuple[Any, Tensor | float]:
        """A non-mixable variable in training: one allowed value drawn from its weights
        (``generator``: the caller's stream, so DDP ranks draw alike; else the global RNG)
        and the straight-through factor (1 in value; its gradient reaches the logits)."""
        allowed = self.allowed(name)
        if len(allowed) == 1:
            return allowed[0], 1.0
        w = self.weights(name)
        i = int(torch.multinomial(w.detach().float().cpu(), 1, generator=generator))
        return self.candidates(name)[i], w[i] - w[i].detach() + 1.0

    def state(self) -> dict[str, Any]:
        """Values where decided (pinned), for records."""
        return {n: self.pinned(n) for n in variable_names()}


def variable_names() -> tuple[str, ...]:
    """Names of every variable of the space, in order."""
    return VARIABLE_NAMES


class _Masked(nn.Module):
    """``module(x) * mask(channels)`` -- a fast-stream layer under the ``beta_inv`` mask."""

    def __init__(self, module: nn.Module, mask: Callable[[int, torch.device], Tensor | None]
                 ) -> None:
        super().__init__()
        self.module = module
        object.__setattr__(self, "_mask", mask)  # not a submodule

    def forward(self, x: Tensor) -> Tensor:
        y = self.module(x)
        m = self._mask(y.shape[1], y.device)
        return y if m is None else y * m.view(1, -1, 1, 1, 1).to(y.dtype)


class _ElasticTemporalConv(nn.Module):
    """A ``kt x 1 x 1`` conv whose taps are masked to the chosen temporal kernel."""

    def __init__(self, conv: nn.Conv3d, taps: Callable[[torch.device], Tensor | None]) -> None:
        super().__init__()
        self.conv = conv
        object.__setattr__(self, "_taps", taps)

    def forward(self, x: Tensor) -> Tensor:
        m = self._taps(x.device)
        w = self.conv.weight if m is None else self.conv.weight * m.view(1, 1, -1, 1, 1)
        return F.conv3d(x, w.to(x.dtype), None, self.conv.stride, self.conv.padding)


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent = root.get_submodule(name.rpartition(".")[0]) if "." in name else root
    setattr(parent, name.rpartition(".")[2], new)


class ElasticTwoStream(nn.Module):
    """The supernet of one stage (see the module docstring).

    Args:
        num_classes: classes of the head.
        choices: the stage's :class:`StageChoices` (registered as ``self.choices``).
        width_div: width divisor of the SlowFast family (8: the CPU proxy).
        depths: blocks per stage res2..res5 ((1, 1, 1, 1): the proxy).
        in_channels: input channels (3 RGB, 2 flow).
        dropout: before the head.
        cell: the genotype object of attention ``cell`` (``.build(channels)``), or None.
        stem_pool: the stems' max-pool (as :class:`~supernet.backbones.SlowFast`).
    """

    def __init__(self, num_classes: int, choices: StageChoices, width_div: int = 8,
                 depths: tuple[int, ...] = (1, 1, 1, 1), in_channels: int = 3,
                 dropout: float = 0.5, cell: Any = None, stem_pool: bool = True) -> None:
        super().__init__()
        self.choices = choices
        c = choices
        beta = min(c.candidates("beta_inv"))
        slow_kt, fast_kt = max(c.candidates("slow_kt")), max(c.candidates("fast_kt"))
        fusions = c.candidates("fusion")
        sites = sorted({s for v in c.candidates("fusion_at") for s in FUSION_SITES[v]})
        build_fusion = "tconv" if "tconv" in fusions else max(
            fusions, key=lambda op: {"tsample": 1, "avgpool": 1, "sum": 0}[op])
        self.depths = tuple(int(d) for d in depths)
        net = SlowFast(num_classes, frame_ratio=4, beta_inv=beta, width_div=width_div,
                       depths=self.depths, in_channels=in_channels, dropout=dropout,
                       fusion=build_fusion, slow_kt=slow_kt, fast_kt=fast_kt,
                       stem_pool=stem_pool,
                       fusion_at=next(k for k, v in FUSION_SITES.items()
                                      if set(v) == set(sites)) if sites else "none")
        self.beta_build = beta
        # every candidate lateral at every site, each padded to the site's widest output
        stem_w = 64 // width_div
        fast_in = [stem_w // beta, *(w // width_div // beta for w in _WIDTHS[:3])]
        slow_at = [stem_w, *(w // width_div for w in _WIDTHS[:3])]
        self.pad = {s: (net.laterals[str(s)].extra if str(s) in net.laterals else 0)
                    for s in range(4)}
        self.fusions = nn.ModuleDict()
        for s in sites:
            ops = nn.ModuleDict()
            for op in fusions:
                lat = (net.laterals[str(s)] if op == build_fusion else
                       _Lateral(fast_in[s], slow_at[s], 2, 4, 7, op))
                if lat.bn is not None and op != "sum":
                    lat.bn = _Masked(lat.bn, self._channel_mask)
                ops[op] = lat
            self.fusions[str(s)] = ops
        net.laterals = nn.ModuleDict()
        # the beta mask on every fast BatchNorm, the kernel masks on the temporal convs
        for name, mod in list(net.named_modules()):
            if isinstance(mod, nn.BatchNorm3d) and (name.startswith("fast_stem")
                                                    or name.startswith("stages.fast_")):
                _replace(net, name, _Masked(mod, self._channel_mask))
        for name, mod in list(net.named_modules()):
            if not (isinstance(mod, nn.Conv3d) and name.endswith("conv_a")):
                continue
            stage = name.split(".")[1]
            if stage.startswith("fast_"):
                _replace(net, name, _ElasticTemporalConv(mod, self._taps("fast_kt", fast_kt)))
            elif stage in ("res4", "res5"):
                _replace(net, name, _ElasticTemporalConv(mod, self._taps("slow_kt", slow_kt)))
        self.net = net
        # attention candidates after the last block of res3 / res4 of each pathway used
        self.attention = nn.ModuleDict()
        blocks = [b for b in c.candidates("attention") if b != "none"]
        if "cell" in blocks and cell is None:
            raise ValueError("attention 'cell' needs a genotype (--model.attention_cell)")
        widths = {"res3": _WIDTHS[1] // width_div, "res4": _WIDTHS[2] // width_div}
        for pathway in ("slow", "fast"):
            if not any(pathway in (v, "both") for v in c.candidates("attention_at")):
                continue
            for stage in ("res3", "res4"):
                ch = widths[stage] if pathway == "slow" else widths[stage] // beta
                key = stage if pathway == "slow" else f"fast_{stage}"
                self.attention[key] = nn.ModuleDict({
                    b: cell.build(ch) if b == "cell" else create_block(b, ch) for b in blocks})
        self.positions = attention_positions("both", self.depths)
        #: the stream α is drawn from in training (set per step by the stage module so that
        #: DDP ranks and resumed runs draw alike; None: the global RNG)
        self.generator: torch.Generator | None = None

    # -- masks -----------------------------------------------------------------------------
    def _channel_mask(self, channels: int, device: torch.device) -> Tensor | None:
        c = self.choices
        if len(c.candidates("beta_inv")) == 1:
            return None
        w = c.weights("beta_inv").to(device)
        mask = torch.zeros(channels, device=device)
        for i, b in enumerate(c.candidates("beta_inv")):
            active = max(1, channels * self.beta_build // b)
            mask = mask + w[i] * (torch.arange(channels, device=device) < active)
        return mask

    def _taps(self, name: str, kt: int) -> Callable[[torch.device], Tensor | None]:
        def taps(device: torch.device) -> Tensor | None:
            c = self.choices
            if len(c.candidates(name)) == 1:
                return None
            w = c.weights(name).to(device)
            offset = torch.arange(kt, device=device) - kt // 2
            mask = torch.zeros(kt, device=device)
            for i, k in enumerate(c.candidates(name)):
                mask = mask + w[i] * (offset.abs() <= k // 2)
            return mask
        return taps

    # -- forward ---------------------------------------------------------------------------
    def _fuse(self, site: int, slow: Tensor, fast: Tensor, frame_ratio: int) -> Tensor:
        pad = self.pad[site]
        ops = self.fusions[str(site)] if str(site) in self.fusions else None
        c = self.choices
        on = sum(c.weight_of("fusion_at", v) for v in c.allowed("fusion_at")
                 if site in FUSION_SITES[v])
        extra = None
        if ops is not None and not (isinstance(on, (int, float)) and on == 0):
            w = c.weights("fusion")
            cands = c.candidates("fusion")
            for op in c.allowed("fusion"):
                wi = on * w[cands.index(op)]
                y = ops[op].fused(fast, frame_ratio)
                if op == "sum":
                    slow = slow + wi * y
                    continue
                y = F.pad(y, (0, 0, 0, 0, 0, 0, 0, pad - y.shape[1])) * wi
                extra = y if extra is None else extra + y
        if pad == 0:
            return slow
        if extra is None:
            extra = slow.new_zeros(slow.shape[0], pad, *slow.shape[2:])
        return torch.cat([slow, extra], 1)

    def _attend(self, key: str, x: Tensor) -> Tensor:
        if key not in self.attention:
            return x
        c = self.choices
        pathway = "fast" if key.startswith("fast_") else "slow"
        gate = sum(c.weight_of("attention_at", v) for v in c.allowed("attention_at")
                   if v in (pathway, "both"))
        if isinstance(gate, (int, float)) and gate == 0:
            return x
        w, cands = c.weights("attention"), c.candidates("attention")
        delta = None
        for b in c.allowed("attention"):
            if b == "none":
                continue
            d = w[cands.index(b)] * (self.attention[key][b](x) - x)
            delta = d if delta is None else delta + d
        if delta is None:
            return x
        out = x + gate * delta
        if pathway == "fast":
            m = self._channel_mask(out.shape[1], out.device)
            out = out if m is None else out * m.view(1, -1, 1, 1, 1)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` -> logits ``(N, num_classes)``."""
        net, c = self.net, self.choices
        check_video(x, net.in_channels, "clip")
        if self.training:
            ratio, st = c.sample("frame_ratio", self.generator)
        else:
            ratio, st = c.eval_value("frame_ratio"), 1.0
        t = x.shape[2]
        if t % ratio:
            raise ValueError(f"two-stream search: the clip's {t} frames are not a multiple "
                             f"of frame_ratio={ratio} (every allowed fast/slow frame ratio "
                             f"must divide --data.num_frames)")
        idx = torch.linspace(0, t - 1, t // ratio, device=x.device).long()
        slow, fast = net.slow_stem(x.index_select(2, idx)) * st, net.fast_stem(x)
        slow = self._fuse(0, slow, fast, ratio)
        for i, name in enumerate(("res2", "res3", "res4", "res5")):
            slow, fast = net.stages[name](slow), net.stages[f"fast_{name}"](fast)
            if name in ("res3", "res4"):
                slow, fast = self._attend(name, slow), self._attend(f"fast_{name}", fast)
            if i < 3:
                slow = self._fuse(i + 1, slow, fast, ratio)
        feats = torch.cat([net.pool(slow).flatten(1), net.pool(fast).flatten(1)], 1)
        return net.head(net.dropout(feats))

    def arch_parameters(self) -> list[nn.Parameter]:
        """The stage's logits."""
        return list(self.choices.logits.parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]
