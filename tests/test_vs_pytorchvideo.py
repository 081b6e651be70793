"""``benchmarks/vs_pytorchvideo.py`` at toy size (``--tiny``), the torchvision stub, and the
message when pytorchvideo is missing. The comparisons need pytorchvideo (``pip install -e
'.[compare]'``) and are skipped without it."""

from __future__ import annotations

import sys

import pytest

from benchmarks import vs_pytorchvideo as bench

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_run_prints_the_table(tmp_path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("pytorchvideo")
    out = tmp_path / "vs.md"
    code = bench.main(["--tiny", "--repeats", "1", "--warmup", "0", "--threads", "1",
                       "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for row in ("| I3D-R50 SGD train step", "| non-local fwd+bwd (ms", "| non-local fwd+bwd peak"):
        assert row in printed
    assert "failed" not in printed
    text = out.read_text()
    assert "| comparison | shape | ours | pytorchvideo |" in text and "1×3×4×32²" in text


def test_pytorchvideo_imports_without_torchvision() -> None:
    pytest.importorskip("pytorchvideo")
    real = "torchvision" in sys.modules
    i3d_r50, create_nonlocal = bench.import_pytorchvideo()
    assert callable(i3d_r50) and callable(create_nonlocal)
    assert ("torchvision" in sys.modules) == real  # the stub does not outlive the import
    from pytorchvideo.models import head

    if not real and head.RoIAlign is bench._RoIAlignStub:
        with pytest.raises(RuntimeError, match="torchvision is not installed"):
            head.RoIAlign((7, 7), 1.0, 0)


def test_same_weights_same_function() -> None:
    pytest.importorskip("pytorchvideo")
    import torch

    ours, theirs = bench.build_nonlocal_pair(16)
    x = torch.randn(1, 16, 2, 6, 6)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-3)
    assert sum(p.numel() for p in bench.build_i3d("ours", 10).parameters()) == \
        sum(p.numel() for p in bench.build_i3d("theirs", 10).parameters())


def test_an_unknown_dispatch_is_one_line_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert bench.main(["--tiny", "--dispatch", "pointwise_conv=fft"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no implementation 'fft'" in err and "bmm, conv3d" in err


def test_missing_pytorchvideo_says_how_to_install(monkeypatch, capsys: pytest.CaptureFixture
                                                  ) -> None:
    monkeypatch.setattr(bench, "import_pytorchvideo", lambda: None)
    assert bench.main(["--tiny"]) == 2
    err = capsys.readouterr().err
    assert "make install-compare" in err and ".[compare]" in err
