"""Start from a Kinetics-pretrained 3-D ResNet saved by another project (no downloads).

:func:`load_pretrained` reads a local checkpoint written by **pytorchvideo**
(``create_resnet``: ``blocks.0.conv``, ``blocks.N.res_blocks.J.branch2.conv_a`` ...),
**PySlowFast** (``s1.pathway0_stem.conv``, ``s2.pathway0_res0.branch2.a`` ...; the
checkpoint's ``model_state``), **mmaction2** (``backbone.conv1.conv``,
``backbone.layer1.0.conv1.conv`` ...; its ``state_dict``) or **attnas** itself (a retrain
checkpoint or a bare state dict), detecting the layout from its keys or taking it by name,
and maps it onto :class:`~supernet.backbones.VideoResNet`'s keys (S = 2..5, J = block)::

    ours              stem.conv, stem.bn           stages.resS.blocks.J.conv_a, bn_a (b, c)
    pytorchvideo      blocks.0.conv, .norm         blocks.N.res_blocks.J.branch2.conv_a, norm_a
    PySlowFast        s1.pathway0_stem.conv, .bn   sS.pathway0_resJ.branch2.a, a_bn
    mmaction2         backbone.conv1.conv, .bn     backbone.layer{S-1}.J.conv1.conv, conv1.bn

    ours              stages.resS.blocks.0.shortcut.0, .1        head
    pytorchvideo      ...res_blocks.0.branch1_conv, branch1_norm blocks.last.proj
    PySlowFast        ...pathway0_res0.branch1, branch1_bn       head.projection
    mmaction2         ...layer{S-1}.0.downsample.conv, .bn       cls_head.fc_cls

(pytorchvideo's N counts its residual stages in order, skipping pooling blocks.) The
classifier head is not loaded (another class count) unless ``head=True`` and the shapes
agree. Tensors whose shape differs from ours (another temporal kernel) are reported, not
loaded. Inserted attention blocks keep their initialisation, which makes each an identity
(its output BatchNorm starts at zero), so the pretrained network's function is unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from datamodules.paths import what_is

from .backbones import VideoResNet

__all__ = ["FORMATS", "LoadReport", "detect_format", "to_attnas_keys", "load_pretrained"]

FORMATS = ("auto", "pytorchvideo", "pyslowfast", "mmaction2", "attnas")
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class LoadReport(NamedTuple):
    """What :func:`load_pretrained` did: the layout, how many tensors were loaded, and the
    backbone keys it could not fill, the checkpoint keys it did not use, and the tensors
    whose shapes differ."""

    format: str
    loaded: int
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    def summary(self) -> str:
        """One line."""
        def few(items: list[str]) -> str:
            return ", ".join(items[:4]) + (f", ... ({len(items) - 4} more)" if len(items) > 4
                                           else "")
        parts = [f"{self.format} checkpoint: {self.loaded} tensors loaded"]
        for name, items in (("missing", self.missing), ("unused", self.unexpected),
                            ("shape mismatch", self.mismatched)):
            if items:
                parts.append(f"{len(items)} {name} ({few(items)})")
        return "; ".join(parts)


def _unwrap(obj: Any) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"holds a {type(obj).__name__}, not a state dict")
    out = {}
    for k, v in obj.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if isinstance(v, Tensor):
            out[k] = v
    return out


def detect_format(state: Mapping[str, Tensor]) -> str:
    """The layout of a state dict, from its keys; ``ValueError`` if none fits."""
    keys = list(state)
    if any(k.startswith("s1.pathway0_stem.") for k in keys):
        return "pyslowfast"
    if any(k.startswith("backbone.conv1.") for k in keys):
        return "mmaction2"
    if any(re.match(r"blocks\.\d+\.res_blocks\.", k) for k in keys):
        return "pytorchvideo"
    if any(k.startswith(("stem.conv.", "model.stem.conv.")) for k in keys):
        return "attnas"
    raise ValueError("unknown checkpoint layout (keys like " + ", ".join(keys[:3]) + "); "
                     f"accepted: {', '.join(FORMATS[1:])}")


def _bn(src: str, dst: str) -> dict[str, str]:
    return {f"{src}.{f}": f"{dst}.{f}" for f in _BN}


class _Layout(NamedTuple):
    """How a project names a 3-D ResNet's tensors (``{s}``: its stage number, ``{j}``: the
    block, ``{x}`` / ``{i}``: the bottleneck conv as a/b/c or 1/2/3)."""

    stem_conv: str
    stem_bn: str
    block: str
    conv: str
    bn: str
    shortcut_conv: str
    shortcut_bn: str
    head: str


_LAYOUTS = {
    "pytorchvideo": _Layout("blocks.0.conv", "blocks.0.norm", "blocks.{s}.res_blocks.{j}",
                            "branch2.conv_{x}", "branch2.norm_{x}", "branch1_conv",
                            "branch1_norm", "blocks.{s}.proj"),
    "pyslowfast": _Layout("s1.pathway0_stem.conv", "s1.pathway0_stem.bn",
                          "s{s}.pathway0_res{j}", "branch2.{x}", "branch2.{x}_bn", "branch1",
                          "branch1_bn", "head.projection"),
    "mmaction2": _Layout("backbone.conv1.conv", "backbone.conv1.bn", "backbone.layer{s}.{j}",
                         "conv{i}.conv", "conv{i}.bn", "downsample.conv", "downsample.bn",
                         "cls_head.fc_cls"),
}


def _stage_numbers(fmt: str, state: Mapping[str, Tensor], count: int) -> tuple[list[int], int]:
    """The layout's numbers of our ``count`` residual stages, and of its head block."""
    if fmt == "pyslowfast":
        return list(range(2, 2 + count)), 0
    if fmt == "mmaction2":
        return list(range(1, 1 + count)), 0
    # pytorchvideo numbers every block (stem, stages, pooling, head): read them off the keys
    res = sorted({int(x.group(1)) for k in state
                  if (x := re.match(r"blocks\.(\d+)\.res_blocks\.", k))})
    heads = [int(x.group(1)) for k in state if (x := re.match(r"blocks\.(\d+)\.proj\.", k))]
    return res, max(heads, default=-1)


def _key_map(fmt: str, state: Mapping[str, Tensor], model: VideoResNet) -> dict[str, str]:
    """``{their key: our key}`` for the backbone's tensors (head: ``head.*``)."""
    if fmt == "attnas":  # a retrain checkpoint (model.*) or a VideoResNet state dict
        prefix = "model." if any(k.startswith("model.stem.") for k in state) else ""
        return {f"{prefix}{k}": k for k in model.state_dict()}
    lay = _LAYOUTS[fmt]
    stages = list(model.stages.items())
    numbers, head = _stage_numbers(fmt, state, len(stages))
    m = {f"{lay.stem_conv}.weight": "stem.conv.weight", **_bn(lay.stem_bn, "stem.bn")}
    for s, (name, stage) in zip(numbers, stages):
        for j in range(len(stage.blocks)):
            src, dst = lay.block.format(s=s, j=j), f"stages.{name}.blocks.{j}"
            for i, x in enumerate("abc", 1):
                m[f"{src}.{lay.conv.format(x=x, i=i)}.weight"] = f"{dst}.conv_{x}.weight"
                m.update(_bn(f"{src}.{lay.bn.format(x=x, i=i)}", f"{dst}.bn_{x}"))
            m[f"{src}.{lay.shortcut_conv}.weight"] = f"{dst}.shortcut.0.weight"
            m.update(_bn(f"{src}.{lay.shortcut_bn}", f"{dst}.shortcut.1"))
    if head >= 0:
        out = lay.head.format(s=head)
        m.update({f"{out}.weight": "head.weight", f"{out}.bias": "head.bias"})
    return m


def to_attnas_keys(state: Mapping[str, Tensor], model: VideoResNet, fmt: str = "auto"
                   ) -> tuple[str, dict[str, str]]:
    """``(layout, {their key: our key})`` for ``state`` and ``model``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown pretrained format {fmt!r}; accepted: {', '.join(FORMATS)}")
    fmt = detect_format(state) if fmt == "auto" else fmt
    return fmt, _key_map(fmt, state, model)


#: the fraction of the backbone's weight tensors a pretrained file must supply: less is a
#: checkpoint of another network (BatchNorm's ``num_batches_tracked`` counters match any
#: ResNet and are not counted)
MIN_MATCH = 0.5


def load_pretrained(model: VideoResNet, source: str | os.PathLike | Mapping[str, Tensor],
                    fmt: str = "auto", head: bool = False) -> LoadReport:
    """Load a pretrained 3-D ResNet into ``model`` in place (see the module docstring).

    Only keys of the backbone are "missing" (inserted attention blocks are new by design;
    the head too unless ``head``). Raises ``ValueError`` for an unreadable file or an
    unknown layout, and when fewer than :data:`MIN_MATCH` of the backbone's weight tensors
    (``num_batches_tracked`` counters are not weights) could be loaded, naming how many.
    """
    if isinstance(source, Mapping):
        state = _unwrap(source)
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ValueError(f"pretrained: {path!r} {what_is(path)}, expected a checkpoint file")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
            state = _unwrap(obj)
        except ValueError as err:
            raise ValueError(f"pretrained: {path!r} {err}") from None
        except Exception as err:  # noqa: BLE001 - any unreadable file: one clear message
            raise ValueError(f"pretrained: cannot read {path!r} as a torch checkpoint "
                             f"({type(err).__name__})") from None
    fmt, mapping = to_attnas_keys(state, model, fmt)
    ours = model.state_dict()
    inserted = tuple(f"stages.{name}.inserted." for name in model.stages)
    wanted = {k for k in ours
              if not k.startswith(inserted) and (head or not k.startswith("head."))}
    load, mismatched, misfit = {}, [], set()
    for theirs, mine in mapping.items():
        if theirs not in state or mine not in wanted:
            continue
        if state[theirs].shape != ours[mine].shape:
            mismatched.append(f"{theirs} {tuple(state[theirs].shape)} vs "
                              f"{tuple(ours[mine].shape)}")
            misfit.add(mine)
            continue
        load[mine] = state[theirs].detach().clone()
    missing = sorted(k for k in wanted - set(load) - misfit
                     if not k.endswith("num_batches_tracked"))
    used = {t for t, o in mapping.items() if o in load}
    unexpected = sorted(k for k in set(state) - used
                        if not (k in mapping and (mapping[k] in misfit
                                                  or (mapping[k].startswith("head.")
                                                      and not head))))
    weights = [k for k in load if not k.endswith("num_batches_tracked")]  # counters are not
    total = len([k for k in wanted if not k.endswith("num_batches_tracked")])  # weights
    if not weights:
        raise ValueError(f"pretrained: nothing could be loaded from the {fmt} checkpoint "
                         f"({len(state)} tensors; 0 of the backbone's {total} weight tensors "
                         f"match, BatchNorm counters not counted; first keys: "
                         f"{', '.join(list(state)[:3])})")
    if len(weights) < MIN_MATCH * total:
        raise ValueError(f"pretrained: only {len(weights)} of the backbone's {total} weight "
                         f"tensors match the {fmt} checkpoint ({len(missing)} missing, "
                         f"{len(mismatched)} of another shape; BatchNorm counters not counted): "
                         f"a checkpoint of another backbone or depth?")
    model.load_state_dict(load, strict=False)
    return LoadReport(fmt, len(load), missing, unexpected, mismatched)
