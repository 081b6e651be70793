"""``attnas export CKPT --format torchscript|onnx -o FILE``: a retrained network as a file
that runs without this package.

The checkpoint's network (any block or derived cell) is rebuilt from its hyper-parameters,
put in eval mode and exported for one clip shape -- by default the one it was trained on
(``num_frames`` x ``crop_size``, from the checkpoint's data settings); batch size is free
in ONNX (a dynamic axis) and fixed to the traced one in TorchScript. The export is then
checked: the exported model and the PyTorch model run on the same random clip and the
largest absolute difference of their logits is printed (and must be below ``--atol``).
The file is written atomically: a failed export or check leaves nothing behind.

Input ``video`` ``float32 (N, 3, T, H, W)`` (normalised like the training data), output
``logits`` ``(N, num_classes)``.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from datamodules.atomic import atomic_path
from supernet.paths import check_writable, output_file
from supernet.retrain import VideoClassifier

from .lightning_cli import check_checkpoint
from .parsing import OneLineParser

__all__ = ["FORMATS", "export_checkpoint", "main"]

FORMATS = ("torchscript", "onnx")


def _load(ckpt_path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    check_checkpoint(str(ckpt_path), "retrain")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    module = VideoClassifier.load_from_checkpoint(str(ckpt_path), map_location="cpu")
    return module.model.eval(), dict(ckpt.get("datamodule_hyper_parameters") or {})


def _write(model: torch.nn.Module, fmt: str, clip: torch.Tensor, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about shape-dependent Python values
        if fmt == "torchscript":
            torch.jit.trace(model, clip).save(str(path))
        else:
            torch.onnx.export(model, (clip,), str(path), dynamo=False, opset_version=17,
                              input_names=["video"], output_names=["logits"],
                              dynamic_axes={"video": {0: "batch"}, "logits": {0: "batch"}})


def _run_export(fmt: str, path: Path, clip: torch.Tensor) -> torch.Tensor:
    if fmt == "torchscript":
        return torch.jit.load(str(path)).eval()(clip).detach()
    import onnxruntime as ort  # optional (the [export] extra): only for an ONNX check

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"video": clip.numpy()})[0])


def export_checkpoint(ckpt_path: str | Path, out: str | Path, fmt: str = "torchscript",
                      frames: int | None = None, size: int | None = None, batch: int = 1,
                      atol: float = 1e-3) -> dict[str, Any]:
    """Export a retrain checkpoint's network to ``out``; returns ``{"path", "format",
    "input", "max_abs_diff"}``.

    Raises:
        ValueError / FileNotFoundError: a bad checkpoint, format or shape, or an export that
            does not match the PyTorch model within ``atol`` (nothing is written then).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    for name, value in (("--frames", frames), ("--size", size), ("--batch", batch)):
        if value is not None and value < 1:  # 0 is not "the default"
            raise ValueError(f"{name} must be >= 1, got {value}")
    model, data = _load(ckpt_path)
    frames = int(frames if frames is not None else data.get("num_frames") or 8)
    size = int(size if size is not None else data.get("crop_size") or 224)
    out = output_file(out, Path(ckpt_path).stem + (".onnx" if fmt == "onnx" else ".pt"))
    check_writable(out.parent, create=False)
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(batch, 3, frames, size, size, generator=g)
    with torch.no_grad():
        want = model(clip)
    with atomic_path(out) as tmp:
        _write(model, fmt, clip, tmp)
        got = _run_export(fmt, tmp, clip)
        diff = float((got - want).abs().max())
        if not diff <= atol:
            raise ValueError(f"the {fmt} export differs from the PyTorch model by {diff:.3g} "
                             f"(> --atol {atol:g}); nothing written")
    return {"path": str(out), "format": fmt, "input": [batch, 3, frames, size, size],
            "max_abs_diff": diff}


def main(argv: list[str]) -> int:
    """Entry point of ``attnas export``."""
    p = OneLineParser(prog="attnas export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a retrain checkpoint (.ckpt)")
    p.add_argument("--format", default="torchscript", help=" | ".join(FORMATS))
    p.add_argument("-o", "--out", required=True, help="file to write (.pt / .onnx); a folder: "
                   "<checkpoint name>.pt/.onnx in it")
    p.add_argument("--frames", type=int, default=None, help="clip length (default: trained)")
    p.add_argument("--size", type=int, default=None, help="crop size (default: trained)")
    p.add_argument("--batch", type=int, default=1, help="batch of the traced example")
    p.add_argument("--atol", type=float, default=1e-3,
                   help="largest accepted |exported - PyTorch| of the logits")
    try:
        args = p.parse_args(argv)
        torch.set_num_threads(max(1, (os.cpu_count() or 2)))
        res = export_checkpoint(args.checkpoint, args.out, args.format, args.frames, args.size,
                                args.batch, args.atol)
    except (ValueError, FileNotFoundError, ImportError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"attnas export: error: {msg}", file=sys.stderr)
        return 2
    shape = "x".join(map(str, res["input"]))
    print(f"wrote {res['path']} ({res['format']}, input {shape}); max |exported - PyTorch| "
          f"= {res['max_abs_diff']:.2e}")
    return 0
