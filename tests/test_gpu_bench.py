"""benchmarks/gpu.py: the whole table at toy size on the CPU (the GPU path is the same
code with a CUDA device), and bad options refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.gpu import main as gpu_bench


def test_tiny_table_runs_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "gpu.md"
    assert gpu_bench(["--tiny", "--device", "cpu", "--out", str(out),
                      "--memory-formats", "contiguous,channels_last"]) == 0
    text = out.read_text()
    assert "No GPU here" in text and "| nonlocal | bf16 | off | channels_last |" in text
    doc = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["block"], r["precision"]): r for r in doc["rows"]
            if r["layout"] == "contiguous"}
    assert len(doc["rows"]) == 8
    assert set(rows) == {("none", "fp32"), ("none", "bf16"), ("nonlocal", "fp32"),
                         ("nonlocal", "bf16")}
    assert all(r["step_ms"] > 0 and r["gflop_step"] > 0 and r["mfu"] is None
               for r in rows.values())
    # attention adds counted FLOPs to the same step
    assert rows[("nonlocal", "fp32")]["gflop_step"] > rows[("none", "fp32")]["gflop_step"]
    assert doc["supernet"]["ratio"] > 0


@pytest.mark.parametrize("argv", [["--precisions", "fp8"], ["--compile", "maybe"],
                                  ["--batch", "0"], ["--memory-formats", "nhwc"]])
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert gpu_bench(["--tiny", *argv]) == 2
    assert "accepted" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_asking_for_cuda_without_a_gpu_is_refused(capsys: pytest.CaptureFixture) -> None:
    assert gpu_bench(["--tiny", "--device", "cuda"]) == 2
    assert "no GPU" in capsys.readouterr().err
