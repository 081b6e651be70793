"""Mixed precision on the CPU: the supernet's hand-written mixed-attention autograd function
under bf16 autocast matches float32 within a stated tolerance, and a search and a retrain
run end to end with ``--trainer.precision bf16-mixed``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from datamodules.synth import ensure_synthetic
from supernet.app.cli import main as attnas
from supernet.ops import MixedEdge
from supernet.space import NUM_OPS

pytestmark = pytest.mark.usefixtures("one_thread")

#: bf16 keeps 8 bits of mantissa: relative error of the edge output and its gradients
BF16_RTOL = 0.05


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


@pytest.mark.parametrize("position", ["none", "sincos"])
def test_mixed_edge_under_bf16_autocast_matches_float32(position: str) -> None:
    torch.manual_seed(0)
    edge = MixedEdge(16, position=position)
    z = torch.randn(2, 16, 4, 6, 6)
    w = torch.softmax(torch.randn(NUM_OPS), 0)

    def run(autocast: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        edge.zero_grad()
        zz = z.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = edge(zz, w)
        y.float().square().sum().backward()
        return y, [zz.grad.clone()] + [p.grad.clone() for p in edge.parameters()]

    y32, g32 = run(False)
    y16, g16 = run(True)
    assert y16.dtype == torch.bfloat16 or y16.dtype == torch.float32
    assert _rel(y16, y32) < BF16_RTOL
    for a, b in zip(g16, g32):
        assert torch.isfinite(a).all() and _rel(a, b) < 2 * BF16_RTOL


PROXY = {"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "data", classes=2,
                            videos_per_class=8, frames=8, size=16, seed=3, workers=1)


@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_bf16_mixed_runs_end_to_end(kind: str, synth: Path, tmp_path: Path) -> None:
    argv = [kind, "fit", f"--data.root={synth}", "--data.num_frames=8", "--data.crop_size=16",
            "--data.batch_size=4", "--data.num_workers=0", "--data.cache=memory",
            f"--model.backbone_kwargs={json.dumps(PROXY)}", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false", "--trainer.precision=bf16-mixed",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}"]
    if kind == "search":
        argv += ["--data.search=true", "--model.num_nodes=2", "--model.strategy=uniform",
                 "--model.select=perturb", "--model.select_val_batches=1",
                 "--model.select_calib_batches=1"]
    else:
        argv += ["--model.block=nonlocal"]
    assert attnas(argv) == 0
    if kind == "search":
        doc = json.loads(sorted(tmp_path.rglob("genotype.json"))[-1].read_text())
        assert len(doc["nodes"]) == 2


@pytest.mark.parametrize(("option", "needles"), [
    ("--trainer.precision=bogus", ["--trainer.precision: 'bogus' is not accepted",
                                   "bf16-mixed", "16-mixed"]),
    ("--trainer.precision=transformer-engine", ["transformer_engine", "not installed"]),
    ("--model.lr=abc", ["--model.lr: 'abc' is not valid", "float"]),
    ("--no_such_option=1", ["unrecognized arguments"]),
])
def test_values_the_cli_cannot_use_are_one_line_exit_2(option: str, needles: list[str],
                                                        synth: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    argv = ["retrain", "fit", f"--data.root={synth}", "--data.num_workers=0", option,
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}"]
    assert attnas(argv) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0]
    assert not list(tmp_path.rglob("*.ckpt"))
