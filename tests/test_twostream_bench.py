"""The two-stream search benchmark runs end to end at toy scale (a real progressive search,
then real retrains in subprocesses), reports its table, targets and figure, and refuses
bad input with one line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmarks.twostream import main as twostream

pytestmark = pytest.mark.usefixtures("one_thread")


def test_quick_twostream_searches_retrains_and_reports(tmp_path: Path) -> None:
    assert twostream(["--quick", "--out", str(tmp_path)]) == 0
    with (tmp_path / "twostream.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["row"], r["block"]) for r in rows} == {
        ("search/s0", "search"), ("searched/s0", "retrain"), ("slowfast", "retrain"),
        ("proxy+none", "retrain"), ("random/0", "retrain")}
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    search = next(r for r in rows if r["block"] == "search")
    assert all(float(search[f"{s}_s"]) > 0 for s in ("streams", "fusion", "attention"))
    retrains = [r for r in rows if r["block"] == "retrain"]
    assert all(0.0 <= float(r["video_top1"]) <= 1.0 and int(r["macs"]) > 0 for r in retrains)
    searched = next(r for r in rows if r["row"] == "searched/s0")
    assert (searched["params"], searched["macs"]) == (search["params"], search["macs"])
    md = (tmp_path / "twostream.md").read_text()
    assert "| row | top-1 (%) | params | MMACs |" in md and "| slowfast |" in md
    assert "searched (mean over search seeds)" in md and "random (mean over random archs)" in md
    assert "Target (searched ≥ slowfast + 2 points" in md and "Target (searched > random)" in md
    assert "| streams |" in md and "| search/s0 |" in md
    assert (tmp_path / "twostream.png").stat().st_size > 0


@pytest.mark.parametrize("argv", [["--seeds", "0"], ["--random", "-1"], ["--jobs", "0"]])
def test_bad_input_exits_2_with_one_line(argv: list[str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    assert twostream([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "must be >= 1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "twostream.csv").exists()


def test_random_points_match_the_searches_budget() -> None:
    """With the config's budget, the random rows are points of matched cost: each is the
    first uniform draw of its seed within the budget (the same draw every time)."""
    from benchmarks.twostream import random_values
    from supernet.costmodel import TwoStreamBudget

    budget = TwoStreamBudget("1x", {"width_div": 8, "depths": [1, 1, 1, 1],
                                    "stem_pool": False}, (8, 16, 16), 4)
    points = [random_values(i, budget) for i in range(4)]
    assert all(budget.macs(p) <= budget.target for p in points)
    assert points == [random_values(i, budget) for i in range(4)]
    free = [random_values(i) for i in range(8)]
    assert any(budget.macs(p) > budget.target for p in free)  # the space has costlier points


def test_the_full_plan_reads_the_embedded_benchmark(tmp_path: Path) -> None:
    """The full-size plan (not only --quick) builds: every run reads the embedded synthetic
    benchmark the accuracy benchmark reads, with its generator's parameters."""
    from benchmarks.twostream import REPO, _parser, _plan
    from datamodules.synth import DEFAULTS

    searches, runs = _plan(_parser().parse_args(["--out", str(tmp_path)]))
    assert len(searches) == 3 and runs
    datas = [r["spec"]["data"] for r in runs if "data" in r.get("spec", {})]
    assert len(datas) == len(runs)
    for data in datas:
        assert data["root"] == str(REPO / "data" / "synth")
        assert data["synthetic_params"] == DEFAULTS
