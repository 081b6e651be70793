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
    assert "4 done (0 just taken from accuracy.csv), 0 to run" in capsys.readouterr().out


@pytest.mark.parametrize(("rows", "needle"), [("proxy/rgb", "not backbone/modality/dataset"),
                                              ("x3d/rgb/synth", "unknown backbone 'x3d'"),
                                              ("proxy/depth/synth", "unknown modality"),
                                              ("proxy/rgb/kinetics", "unknown dataset")])
def test_bad_rows_exit_2(rows: str, needle: str, tmp_path: Path,
                         capsys: pytest.CaptureFixture) -> None:
    assert transfer(["--rows", rows, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_reference_rows_come_from_the_accuracy_benchmark(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """The reference row is the accuracy benchmark's own rows: a finished `none` row of
    accuracy.csv with the same settings is taken over (not trained again); the cell, which
    the accuracy benchmark did not train, runs."""
    from benchmarks.run import main as bench

    assert bench(["--quick", "--out", str(tmp_path), "--groups", "", "--blocks", "none",
                  "--random-cells", "0"]) == 0
    with (tmp_path / "accuracy.csv").open() as f:
        acc = next(r for r in csv.DictReader(f) if r["row"] == "none")
    capsys.readouterr()
    assert transfer(["--quick", "--out", str(tmp_path), "--rows", "proxy/rgb/synth",
                     "--plan"]) == 0
    text = capsys.readouterr().out
    assert "none seed 0: from accuracy.csv (none)" in text and "cell seed 0: to run" in text
    assert not (tmp_path / "transfer.csv").exists()  # --plan runs and writes nothing
    top1 = f"{100 * float(acc['video_top1']):.1f}"
    assert transfer(["--quick", "--out", str(tmp_path), "--rows", "proxy/rgb/synth",
                     "--report"]) == 0  # read-only table: the taken-over row, the cell not yet
    table = capsys.readouterr().out
    assert f"| proxy/rgb/synth | {top1} | — | — |" in table
    assert not (tmp_path / "transfer.csv").exists()  # nor does --report
    assert transfer(["--quick", "--out", str(tmp_path), "--rows", "proxy/rgb/synth"]) == 0
    assert "1 just taken from accuracy.csv), 1 to run" in capsys.readouterr().out
    with (tmp_path / "transfer.csv").open() as f:
        rows = {r["block"]: r for r in csv.DictReader(f)}
    assert rows["none"]["source"] == "accuracy.csv (none)"
    assert rows["none"]["video_top1"] == acc["video_top1"]
    assert rows["none"]["settings"] == acc["settings"]
    assert rows["cell"]["status"] == "ok" and rows["cell"]["source"] == ""
    assert not (tmp_path / "_work" / "transfer" / "proxy-rgb-synth_none_s0").exists()
