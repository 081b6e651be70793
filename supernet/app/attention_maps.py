"""Where the inserted blocks attend: one map per block for one clip, and its pictures.

:func:`attention_maps` runs the network on a clip and, with forward pre-hooks, recomputes
for every attention op of a derived cell (:class:`~supernet.ops.AttentionOp`) and every
non-local block (:class:`~supernet.blocks.NonLocalBlock`):

* map ops: the map itself (over the attended axes, broadcast over the others);
* dot-product ops and non-local blocks: the mean attention each key position receives
  from all queries (the attention matrix averaged over its rows), on the key grid (keys
  pooled 1x2x2 when the block pools them).

Each map comes back as ``(T, h, w)`` on the block's own grid; :func:`save_attention`
upsamples them to the clip, overlays them on the frames and writes a PNG grid (rows:
the frames, then one row per block; columns: evenly spaced frames) and an animated GIF
(every frame, the clip beside each block's overlay).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.atomic import atomic_path
from supernet.blocks import NonLocalBlock
from supernet.ops import AttentionOp, dot_activation, group, map_activation, pool_kv, ungroup

__all__ = ["attention_maps", "save_attention"]


def _op_map(op: AttentionOp, z: Tensor) -> Tensor:
    spec, w = op.spec, op.weights
    n, _, t, h, wd = z.shape
    if spec.family == "map":
        m = map_activation(w.map_logits(z, spec.dimension), spec.activation)
        return m.expand(n, 1, t, h, wd)[0, 0]
    q, k, _ = w.qkv(z)
    kp = w.pool_kv(k, spec.dimension)
    s = group(q, spec.dimension) @ group(kp, spec.dimension).transpose(1, 2)
    a = dot_activation(s * q.shape[1] ** -0.5, spec.activation)  # (B, Lq, Lk)
    received = a.mean(1, keepdim=True).transpose(1, 2)  # (B, Lk, 1)
    return ungroup(received, spec.dimension, torch.Size((n, 1, *kp.shape[2:])))[0, 0]


def _nonlocal_map(block: NonLocalBlock, x: Tensor) -> Tensor:
    qk = block._qk_input(x)
    pooled = pool_kv(qk) if block.kv_pool else qk
    theta, phi = block.theta(qk).flatten(2), block.phi(pooled).flatten(2)
    s = torch.bmm(theta.transpose(1, 2), phi)  # (N, L, Lk)
    a = (s * block.inner ** -0.5).softmax(-1) if block.mode == "softmax" else s / s.shape[-1]
    return a.mean(1)[0].reshape(pooled.shape[2:])


def attention_maps(model: nn.Module, clip: Tensor) -> dict[str, Tensor]:
    """``{block name: map (T, h, w)}`` for ``clip`` ``(1, 3, T, H, W)``; names are module
    paths (``stages.res3.inserted.0.edges.1 [dot.temporal.softmax]``). Empty when the
    network has no attention op or non-local block."""
    maps: dict[str, Tensor] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, AttentionOp):
            label = f"{name} [{mod.spec.name}]"
            hooks.append(mod.register_forward_pre_hook(
                lambda m, args, label=label: maps.__setitem__(label, _op_map(m, args[0]))))
        elif isinstance(mod, NonLocalBlock):
            label = f"{name} [non-local {mod.mode}]"
            hooks.append(mod.register_forward_pre_hook(
                lambda m, args, label=label: maps.__setitem__(label, _nonlocal_map(m, args[0]))))
    try:
        with torch.no_grad():
            model.eval()(clip)
    finally:
        for h in hooks:
            h.remove()
    return {k: v.detach().float() for k, v in maps.items()}


def _to_clip(m: Tensor, t: int, h: int, w: int) -> np.ndarray:
    up = F.interpolate(m[None, None], size=(t, h, w), mode="trilinear", align_corners=False)
    up = up[0, 0]
    lo, hi = float(up.min()), float(up.max())
    return ((up - lo) / (hi - lo + 1e-12)).numpy()


def save_attention(frames: np.ndarray, maps: dict[str, Tensor], out_stem: str | Path,
                   columns: int = 8) -> list[Path]:
    """Write ``<out_stem>.png`` and ``<out_stem>.gif``; ``frames`` is the clip as
    ``float (T, H, W, 3)`` in ``[0, 1]``. Returns the two paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from PIL import Image

    t, h, w, _ = frames.shape
    ups = {k: _to_clip(v, t, h, w) for k, v in maps.items()}
    cols = np.unique(np.linspace(0, t - 1, min(columns, t)).round().astype(int))
    rows = 1 + len(ups)
    fig, axes = plt.subplots(rows, len(cols), figsize=(1.6 * len(cols), 1.7 * rows),
                             squeeze=False)
    for j, ti in enumerate(cols):
        axes[0, j].imshow(frames[ti])
        axes[0, j].set_title(f"frame {ti}", fontsize=7)
        for i, up in enumerate(ups.values(), 1):
            axes[i, j].imshow(frames[ti])
            axes[i, j].imshow(up[ti], cmap="jet", alpha=0.5, vmin=0, vmax=1)
    for i, name in enumerate(ups, 1):
        axes[i, 0].set_ylabel(name.replace(" [", "\n["), fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    png, gif = out_stem.with_suffix(".png"), out_stem.with_suffix(".gif")
    with atomic_path(png, suffix=".tmp.png") as tmp_png:
        fig.savefig(tmp_png, dpi=120)
    plt.close(fig)
    jet = colormaps["jet"]
    scale = max(1, 96 // max(h, w))
    strips = []
    for ti in range(t):
        panels = [frames[ti]] + [0.5 * frames[ti] + 0.5 * jet(up[ti])[..., :3]
                                 for up in ups.values()]
        strip = np.concatenate(panels, 1)
        img = Image.fromarray((np.clip(strip, 0, 1) * 255).astype(np.uint8))
        strips.append(img.resize((img.width * scale, img.height * scale), Image.NEAREST))
    with atomic_path(gif, suffix=".tmp.gif") as tmp_gif:
        strips[0].save(tmp_gif, save_all=True, append_images=strips[1:], duration=120, loop=0)
    return [png, gif]
