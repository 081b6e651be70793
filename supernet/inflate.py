"""Initialise an I3D ResNet from a 2-D ImageNet ResNet-50 (torchvision format), no downloads.

Each 2-D kernel ``(O, I, kh, kw)`` becomes ``(O, I, kt, kh, kw)``: repeated ``kt`` times over
time and divided by ``kt``, so on a static clip (one frame repeated) an inflated conv gives
the 2-D conv's output on that frame (away from the zero-padded first/last frames).
BatchNorm statistics and affine parameters are copied; ``fc.*`` is dropped (the video head
keeps its own initialisation), as do inserted attention blocks.

Key mapping (torchvision -> :class:`~supernet.backbones.VideoResNet`)::

    conv1, bn1                         -> stem.conv, stem.bn
    layer{i}.{j}.conv{1,2,3}, bn{1,2,3} -> stages.res{i+1}.blocks.{j}.conv_{a,b,c}, bn_{a,b,c}
    layer{i}.0.downsample.{0,1}         -> stages.res{i+1}.blocks.0.shortcut.{0,1}
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import Tensor

from .backbones import VideoResNet

__all__ = ["key_map", "inflate_state_dict", "load_pretrained_2d", "read_state_dict"]

_CONV = {"conv_a": "conv1", "conv_b": "conv2", "conv_c": "conv3"}
_BN = {"bn_a": "bn1", "bn_b": "bn2", "bn_c": "bn3"}
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_OPTIONAL = ("num_batches_tracked",)  # absent from some older checkpoints


def key_map(model: VideoResNet) -> dict[str, str]:
    """``{torchvision key: model key}`` for every tensor the 2-D checkpoint provides."""
    out: dict[str, str] = {"conv1.weight": "stem.conv.weight"}
    out.update({f"bn1.{f}": f"stem.bn.{f}" for f in _BN_FIELDS})
    for s, (name, stage) in enumerate(model.stages.items()):
        for j, block in enumerate(stage.blocks):
            src = f"layer{s + 1}.{j}"
            dst = f"stages.{name}.blocks.{j}"
            for ours, theirs in _CONV.items():
                out[f"{src}.{theirs}.weight"] = f"{dst}.{ours}.weight"
            for ours, theirs in _BN.items():
                out.update({f"{src}.{theirs}.{f}": f"{dst}.{ours}.{f}" for f in _BN_FIELDS})
            if block.shortcut is not None:
                out[f"{src}.downsample.0.weight"] = f"{dst}.shortcut.0.weight"
                out.update({f"{src}.downsample.1.{f}": f"{dst}.shortcut.1.{f}"
                            for f in _BN_FIELDS})
    return out


def _inflate(w: Tensor, target: torch.Size) -> Tensor | None:
    """2-D conv kernel -> 3-D ``target`` shape (repeat over time / kt); None if incompatible."""
    if w.dim() != 4 or len(target) != 5 or tuple(w.shape) != (*target[:2], *target[3:]):
        return None
    kt = target[2]
    return w.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt


def _short(items: list[str], limit: int = 6) -> str:
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def inflate_state_dict(state_2d: Mapping[str, Tensor], model: VideoResNet) -> dict[str, Tensor]:
    """Map and inflate a torchvision ResNet-50 state dict onto ``model``'s keys.

    Raises:
        ValueError: naming the missing, mis-shaped and unexpected keys (``fc.*`` is ignored).
    """
    target = model.state_dict()
    mapping = key_map(model)
    state = {k: v for k, v in state_2d.items() if not k.startswith("fc.")}
    missing, misshaped, out = [], [], {}
    for src, dst in mapping.items():
        if src not in state:
            if not src.endswith(_OPTIONAL):
                missing.append(src)
            continue
        value, want = state[src], target[dst].shape
        if not isinstance(value, Tensor):
            misshaped.append(f"{src} (not a tensor)")
            continue
        if src == "conv1.weight" and value.ndim == 4 and value.shape[1] == 3 \
                and len(want) == 5 and want[1] != 3:
            # another modality (flow: 2 channels): the RGB filters averaged over their
            # input channels and copied to each, as two-stream I3D initialises its flow net
            value = value.mean(1, keepdim=True).expand(-1, want[1], -1, -1).contiguous()
        if value.shape == want:
            out[dst] = value.detach().clone()
        elif (inflated := _inflate(value, want)) is not None:
            out[dst] = inflated
        else:
            misshaped.append(f"{src} {tuple(value.shape)} (expected {tuple(_2d(want))})")
    unexpected = sorted(set(state) - set(mapping))
    if missing or misshaped or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_short(missing)}")
        if misshaped:
            parts.append(f"{len(misshaped)} mis-shaped: {_short(misshaped)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_short(unexpected)}")
        raise ValueError(
            f"not a torchvision-format ResNet-50 state dict for {model.name}: "
            + "; ".join(parts)
            + ". Expected keys like conv1.weight (64, 3, 7, 7), bn1.*, layer1.0.conv1.weight, "
              "layer1.0.downsample.0.weight ... layer4.2.bn3.*; fc.* is ignored"
        )
    return out


def _2d(shape: torch.Size) -> tuple[int, ...]:
    return (*shape[:2], *shape[3:]) if len(shape) == 5 else tuple(shape)


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a local checkpoint (a state dict, or a dict holding one under ``state_dict`` or
    ``model``; a DataParallel ``module.`` prefix is stripped)."""
    if not os.path.isfile(path):
        raise ValueError(f"pretrained_2d: no such file {os.fspath(path)!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file gets the same clear message
        raise ValueError(f"pretrained_2d: cannot read {os.fspath(path)!r} as a torch "
                         f"checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(obj, Mapping) and "conv1.weight" not in obj:
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"pretrained_2d: {os.fspath(path)!r} holds a {type(obj).__name__}, "
                         f"not a state dict")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_pretrained_2d(model: VideoResNet, source: str | os.PathLike | Mapping[str, Tensor]
                       ) -> VideoResNet:
    """Inflate a 2-D ResNet-50 (path or state dict) into ``model`` in place; returns it.

    Only the ResNet's own tensors are replaced; the head and inserted blocks keep theirs.
    """
    state = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else source
    inflated = inflate_state_dict(state, model)
    result = model.load_state_dict(inflated, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    return model

