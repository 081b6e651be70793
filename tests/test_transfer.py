"""The generalisation protocol runs end to end at toy scale (real retrains in subprocesses,
flow included), resumes from its CSV, and refuses bad rows with one line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmarks.transfer import main as transfer


def test_quick_transfer_runs_resumes_and_reports(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    assert transfer(["--quick", "--out", str(tmp_path)]) == 0
    with (tmp_path / "transfer.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["row"], r["block"]) for r in rows} == {
        ("proxy/rgb/synth", "none"), ("proxy/rgb/synth", "cell"),
        ("proxy/flow/synth", "none"), ("proxy/flow/synth", "cell")}
    assert all(r["status"] == "ok" and 0.0 <= float(r["video_top1"]) <= 1.0 for r in rows)
    flow_cell = next(r for r in rows if r["row"] == "proxy/flow/synth" and r["block"] == "cell")
    rgb_none = next(r for r in rows if r["row"] == "proxy/rgb/synth" and r["block"] == "none")
    assert int(flow_cell["params"]) > int(rgb_none["params"])
    md = (tmp_path / "transfer.md").read_text()
    assert "proxy/flow/synth" in md and "| none | nonlocal | cell |" in md
    capsys.readouterr()
    assert transfer(["--quick", "--out", str(tmp_path)]) == 0  # resumed: nothing to run
    assert "4 done, 0 to run" in capsys.readouterr().out


@pytest.mark.parametrize(("rows", "needle"), [("proxy/rgb", "not backbone/modality/dataset"),
                                              ("x3d/rgb/synth", "unknown backbone 'x3d'"),
                                              ("proxy/depth/synth", "unknown modality"),
                                              ("proxy/rgb/kinetics", "unknown dataset")])
def test_bad_rows_exit_2(rows: str, needle: str, tmp_path: Path,
                         capsys: pytest.CaptureFixture) -> None:
    assert transfer(["--rows", rows, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
