"""The memory layout a network trains in: one option shared by search, two-stream search
and retrain (``--model.memory_format``).

``auto`` (the default) is ``channels_last`` on the CPU and ``contiguous`` elsewhere:
``benchmarks/memory_format_speed.py`` measured channels-last-3d weights faster per training
step on the CPU for the proxy supernet, the derived networks, the baselines, S3D and the
two-stream proxy (``benchmarks/results/layout.md``; oneDNN has channels-last kernels for
3-D convolution and BatchNorm); on a GPU the choice is left to
``benchmarks/gpu.py --memory-formats`` until it is measured there. Only the weights are
converted: a convolution with channels-last weights returns channels-last activations, so
the clips need no copy. The layout changes the order of floating-point sums, not the
network: the same weights give the same outputs within rounding, and checkpoints load into
either layout.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MEMORY_FORMATS", "check_memory_format", "layout_for", "apply_layout",
           "LayoutHooks"]

MEMORY_FORMATS: tuple[str, ...] = ("auto", "contiguous", "channels_last")


def check_memory_format(name: str) -> str:
    """``name`` if it is one of :data:`MEMORY_FORMATS`, else ``ValueError`` listing them."""
    if name not in MEMORY_FORMATS:
        raise ValueError(f"unknown memory_format {name!r}; accepted: "
                         f"{', '.join(MEMORY_FORMATS)}")
    return name


def layout_for(name: str, device: torch.device | str) -> torch.memory_format:
    """The torch memory format ``name`` means on ``device`` (``auto``: channels-last-3d on
    the CPU, contiguous elsewhere)."""
    check_memory_format(name)
    if name == "channels_last" or (name == "auto" and torch.device(device).type == "cpu"):
        return torch.channels_last_3d
    return torch.contiguous_format


def apply_layout(module: nn.Module, name: str, device: torch.device | str
                 ) -> torch.memory_format:
    """Convert the 5-D weights of ``module`` in place (same Parameter objects, so an
    optimiser built on them stays valid) to the layout ``name`` means on ``device``;
    returns that layout."""
    layout = layout_for(name, device)
    module.to(memory_format=layout)
    return layout


class LayoutHooks:
    """Lightning hooks for a module with a ``memory_format`` hyperparameter and the network
    in ``self.model``: the network takes its layout when fit, validation, test or predict
    starts (once the module is on its device)."""

    def _apply_layout(self) -> None:
        name = str(self.hparams.get("memory_format", "auto"))  # type: ignore[attr-defined]
        apply_layout(self.model, name, self.device)  # type: ignore[attr-defined]

    def on_fit_start(self) -> None:
        self._apply_layout()

    def on_validation_start(self) -> None:
        self._apply_layout()

    def on_test_start(self) -> None:
        self._apply_layout()

    def on_predict_start(self) -> None:
        self._apply_layout()
