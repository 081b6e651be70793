"""The benchmark runner (``benchmarks/run.py``): the whole chain at toy scale (``--quick``),
resume without recomputation, a crashed row, and bad input.

The quick run is done once per test session (~75 s on 2 loaded cores: 11 runs as Ray tasks,
1 thread each; shared by the pytest-xdist workers); everything else reuses its results folder
or copies of it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from benchmarks import executor
from benchmarks.jobs import CRASH_ENV
from benchmarks.plan import BenchError
from benchmarks.run import main as bench

#: the search config's group (supernet mode + selection rule), the default group
GROUP = "uniform+perturb+sincos"
CONTROL = "benchmarks/baselines/nonlocal_sincos.json"  # non-local with positions
EXPECTED_ROWS = ["none", "nonlocal", "a2", "cinst", "stinc", CONTROL, f"searched[{GROUP}]/s0",
                 "random/0"]
EXPECTED_LABELS = ["none", "nonlocal", "a2", "cinst", "stinc", "nonlocal_sincos",
                   f"{GROUP} (seed 0)", "random cell 0", "**random cells (mean)**"]
SEARCHED = "searched_uniform_perturb_sincos__s0"  # its genotype file's stem
CSVS = ("accuracy.csv", "search.csv", "steptime.csv")


def _run(argv: list[str]) -> tuple[int, str]:
    """Run the benchmark in this process; (exit code, printed output)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = bench(argv)
    return code, buf.getvalue()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The quick chain's results folder (a copy of this worker's own) and its output. The
    chain is built once per test session: under pytest-xdist the first worker to get here
    builds it in the session's shared temporary folder, under a file lock, and the others
    wait for it and copy it."""
    import fcntl
    import os

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    built, record = shared / "bench_quick" / "quick", shared / "bench_quick" / "output.json"
    built.parent.mkdir(parents=True, exist_ok=True)
    with (shared / "bench_quick.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.is_file():
            code, text = json.loads(record.read_text())
        else:  # the parallel scheduler
            code, text = _run(["--quick", "--out", str(built), "--jobs", "2"])
            record.write_text(json.dumps([code, text]))
    assert code == 0, text
    out = tmp_path_factory.mktemp("bench") / "quick"
    shutil.copytree(built, out)
    return out, text


def test_quick_runs_the_whole_chain(quick: tuple[Path, str]) -> None:
    out, text = quick
    for name in (*CSVS, "accuracy.md", "accuracy.png"):
        assert (out / name).stat().st_size > 0, name
    rows = _rows(out / "accuracy.csv")
    assert sorted(r["row"] for r in rows) == sorted(EXPECTED_ROWS)  # finish order varies
    assert all(r["status"] == "ok" for r in rows), rows
    for r in rows:
        assert 0.0 <= float(r["video_top1"]) <= 1.0
        assert int(r["params"]) > 0 and int(r["macs"]) > 0 and float(r["wall_s"]) > 0
    # every row ran with one of the accepted cells: genotypes written and drawn
    for name in (SEARCHED, f"{SEARCHED}_repeat1", "random_0"):
        assert (out / "genotypes" / f"{name}.json").is_file(), name
        assert (out / "genotypes" / f"{name}.png").stat().st_size > 0, name
    # the table has every row and the random-cell summary
    md = (out / "accuracy.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    for label in EXPECTED_LABELS:
        assert any(ln.startswith(f"| {label} |") for ln in table), label
    assert "python -m benchmarks.run --quick --out" in md and "torch" in md
    # search cost, step time ratio, reproducibility
    searches = _rows(out / "search.csv")
    assert [s["status"] for s in searches] == ["ok", "ok"]
    assert all(float(s["peak_rss_mib"]) > 0 and float(s["wall_s"]) > 0 for s in searches)
    step = _rows(out / "steptime.csv")[0]
    assert step["status"] == "ok" and float(step["supernet_iteration_s"]) > 0
    assert "search iteration / derived step" in text
    # the same seed twice gave the same genotype, and the table says so
    assert searches[0]["nodes"] == searches[1]["nodes"]
    assert searches[0]["alpha_softmax"] == searches[1]["alpha_softmax"]
    assert "search seed 0 run twice → **identical genotype**" in md
    assert "| node | op chosen (seeds) |" in md
    # the selection ran (perturb scores on validation clips) and the group table reports it
    assert all(s["select"] == "perturb" and s["supernet"] == "uniform" for s in searches)
    decisions = json.loads(searches[0]["decisions"])
    assert decisions and all(d["ci"] is not None for d in decisions)
    assert int(searches[0]["flagged"]) <= len(decisions)
    assert searches[0]["decisions"] == searches[1]["decisions"]  # same seed, same scores
    assert "## Search groups" in md and f"| `{GROUP}` (default) |" in md
    assert f"Default group: `{GROUP}`" in md and "mean − nonlocal" in md
    assert float(step["supernet_single_path_s"]) > 0
    assert "full run ≈" in text  # the running estimate


def test_rerun_recomputes_nothing(quick: tuple[Path, str]) -> None:
    out, _ = quick
    before = {name: (out / name).read_text() for name in CSVS}
    code, text = _run(["--quick", "--out", str(out)])
    assert code == 0, text
    assert "skipped 11 finished runs" in text and "ran 0 runs" in text
    assert {name: (out / name).read_text() for name in CSVS} == before
    code, text = _run(["--quick", "--out", str(out), "--plan"])
    assert code == 0 and "all done" in text


def test_crashed_row_is_recorded_then_retried(quick: tuple[Path, str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "copy"
    shutil.copytree(quick[0], out)
    finished = {r["row"]: r for r in _rows(out / "accuracy.csv")}
    argv = ["--quick", "--out", str(out), "--blocks", "none,nonlocal,a2,cinst,stinc,nonlocal_dot"]
    monkeypatch.setenv(CRASH_ENV, "nonlocal_dot")
    code, text = _run(argv)
    assert code == 1, text
    rows = {r["row"]: r for r in _rows(out / "accuracy.csv")}
    assert rows["nonlocal_dot"]["status"] == "failed"
    assert rows["nonlocal_dot"]["error"] == f"RuntimeError: injected crash ({CRASH_ENV})"
    assert {k: v for k, v in rows.items() if k != "nonlocal_dot"} == finished  # untouched
    md = (out / "accuracy.md").read_text()
    assert "## Failed runs" in md and "injected crash" in md
    assert any(ln.startswith("| nonlocal_dot |") and "failed" in ln for ln in md.splitlines())
    # the next run retries the failed row only
    monkeypatch.delenv(CRASH_ENV)
    code, text = _run(argv)
    assert code == 0, text
    assert "ran 1 runs" in text
    assert _rows(out / "accuracy.csv")[-1]["status"] == "ok"


def test_other_settings_are_refused(quick: tuple[Path, str],
                                    capsys: pytest.CaptureFixture) -> None:
    out, _ = quick
    before = (out / "accuracy.csv").read_text()
    assert bench(["--quick", "--out", str(out), "--retrain-epochs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "other settings" in err and len(err.splitlines()) == 1
    assert (out / "accuracy.csv").read_text() == before


@pytest.mark.parametrize(("argv", "message"), [
    (["--search-seeds", "0"], "--search-seeds must be >= 1, got 0"),
    (["--train-seeds", "-2"], "--train-seeds must be >= 1, got -2"),
    (["--train-seeds", "three"], "invalid int value: 'three'"),
    (["--random-cells", "-1"], "--random-cells must be >= 0"),
    (["--blocks", "none,nonlocal,bogus"], "unknown block 'bogus'; accepted: none, nonlocal"),
    (["--blocks", "search"], "unknown block 'search'"),
    (["--anti-collapse", "none,magic"],
     "unknown anti-collapse regulariser 'magic'; accepted: none, beta_decay"),
    (["--positions", "coords,polar"], "unknown position 'polar'; accepted: none, coords"),
    (["--retrain-epochs", "0"], "--retrain-epochs must be >= 1"),
    (["--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["--groups", "uniform+magic"], "unknown token 'magic' in group 'uniform+magic'; accepted"),
    (["--groups", "darts+uniform"], "gives two strategy values (darts, uniform)"),
    (["--groups", ","], "--groups is empty"),
    (["--groups", "uniform++perturb"], "empty group spec in 'uniform++perturb'"),
    (["--budget-epochs", "0"], "--budget-epochs must be >= 1, got 0"),
    (["--budget-epochs", "six"], "--budget-epochs: 'six' is not an epoch count"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_input_fails_at_once(argv: list[str], message: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "never"
    assert bench([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("attnas bench: error: "), err
    assert message in err
    assert not out.exists()


def test_bad_genotype_file_and_the_attnas_command(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from supernet.app.cli import main as attnas

    bad = tmp_path / "cell.json"
    bad.write_text(json.dumps({"format": "attnas-genotype", "version": 1, "nodes": []}))
    assert attnas(["bench", "--blocks", f"none,{bad}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--blocks:" in err and str(bad) in err
    assert attnas(["bench", "--quick", "--search-seeds", "0"]) == 2


def test_empty_blocks_plans_searched_rows_only(tmp_path: Path) -> None:
    from benchmarks.run import build_plan

    plan = build_plan(["--blocks", "", "--random-cells", "0", "--search-seeds", "2",
                       "--groups", "", "--out", str(tmp_path / "o")])
    assert [r.key for r in plan.rows] == [f"searched[{GROUP}]/s0", f"searched[{GROUP}]/s1"]
    assert [r.kind for r in plan.rows] == ["searched", "searched"]
    # "," is not the empty list but a typo: refused
    assert bench(["--blocks", ",", "--out", str(tmp_path / "p")]) == 2


def test_groups_and_budget_rows_are_planned(tmp_path: Path) -> None:
    from benchmarks.run import build_plan

    plan = build_plan(["--blocks", "none,nonlocal", "--random-cells", "0", "--search-seeds",
                       "3", "--out", str(tmp_path / "o")])
    # the default group first (the config's settings, 5 search epochs), then the groups the
    # targets name, the rule studies that decide the default, the cost study, the rest
    assert plan.groups == [f"{GROUP}+5ep", GROUP, "darts+argmax+sincos",
                           "single_path+perturb+sincos", "uniform+perturb+5ep",
                           "uniform+alone+sincos+5ep", "darts+perturb+sincos",
                           f"{GROUP}+cost0.5x+5ep", f"{GROUP}+cost1x+5ep",
                           "darts+argmax+sincos+cost1x+cw0",
                           "darts+argmax+sincos+cost1x+cw0+minw0.5", "darts+argmax+sincos+cost1x",
                           f"{GROUP}+cost2x+5ep",
                           "single_path+alone+sincos"]
    # a budget only changes the selection of a uniform supernet: re-selected from the
    # default group's supernets, with the budget in its model settings
    cost = next(j for j in plan.searches if j.group == f"{GROUP}+cost1x+5ep" and j.seed == 1)
    assert cost.source == f"searched[{GROUP}+5ep]/s1" and cost.model["cost_target"] == "1x"
    assert cost.settings != plan.searches[1].settings
    # a darts budget enters the architecture loss: that group trains its own supernets
    dcost = next(j for j in plan.searches if j.group == "darts+argmax+sincos+cost1x")
    assert dcost.source is None and dcost.model["cost_target"] == "1x"
    # a rule compared on the same supernets: re-selected from the group before it
    src = {j.key: j.source for j in plan.searches}
    assert src["searched[uniform+alone+sincos+5ep]/s2"] == f"searched[{GROUP}+5ep]/s2"
    assert src["searched[darts+perturb+sincos]/s0"] == "searched[darts+argmax+sincos]/s0"
    assert src["searched[single_path+alone+sincos]/s1"] == \
        "searched[single_path+perturb+sincos]/s1"
    # the position study's other arm: the same group without positions
    none = next(j for j in plan.searches if j.group == "uniform+perturb+5ep")
    assert none.model["position_encoding"] == "none" and none.source is None
    assert plan.default_group == f"{GROUP}+5ep"
    assert [j.key for j in plan.searches][:4] == [
        f"searched[{GROUP}+5ep]/s0", f"searched[{GROUP}+5ep]/s1", f"searched[{GROUP}+5ep]/s2",
        f"searched[{GROUP}]/s0"]
    # after the default group, one group at a time: its searches, then its rows
    from benchmarks.runner import Runner, _tasks

    pos = {key: i for i, (_, _, key) in enumerate(_tasks(plan, Runner(plan, None)))}
    assert pos[f"searched[{GROUP}]/s2"] < pos[f"searched[{GROUP}]/s0/0"] < \
        pos[f"searched[{GROUP}]/s2/2"] < pos["searched[darts+argmax+sincos]/s0"]
    assert pos["searched[darts+argmax+sincos]/s2/2"] < \
        pos["searched[single_path+perturb+sincos]/s0"]
    plain = next(j for j in plan.searches if j.group == GROUP)
    assert plan.searches[0].trainer["max_epochs"] == 5 and plain.trainer is None
    assert plan.searches[0].settings != plain.settings
    models = {j.group: j.model for j in plan.searches}
    assert models["darts+argmax+sincos"]["strategy"] == "darts"
    assert models["darts+argmax+sincos"]["select"] == "argmax"
    assert models["single_path+perturb+sincos"]["strategy"] == "single_path"
    # the retrain-budget study: nonlocal at 6 epochs, with its own fingerprint
    budget = [r for r in plan.rows if r.kind == "budget"]
    assert [(r.key, r.block, r.epochs) for r in budget] == [("nonlocal@6ep", "nonlocal", 6)]
    assert plan.trainer_for(budget[0])["max_epochs"] == 6
    base = {r.key: r for r in plan.rows}
    assert budget[0].settings != base["nonlocal"].settings
    # a baseline row's fingerprint is the retrain settings alone: it does not change when
    # the searches do, so finished baseline rows are kept
    other = build_plan(["--blocks", "none,nonlocal", "--random-cells", "0", "--groups",
                        "darts+argmax+sincos", "--search-epochs", "5",
                        "--out", str(tmp_path / "o")])
    assert {r.key: r.settings for r in other.rows if r.kind == "baseline"} == \
        {r.key: r.settings for r in plan.rows if r.kind == "baseline"}
    assert "darts+argmax+sincos" in other.groups
    assert next(j for j in other.searches if j.group == "darts+argmax+sincos"
                ).model["position_encoding"] == "sincos"


def test_a_new_group_reuses_every_finished_run(quick: tuple[Path, str], tmp_path: Path
                                               ) -> None:
    out = tmp_path / "grown"
    shutil.copytree(quick[0], out)
    code, text = _run(["--quick", "--out", str(out), "--groups",
                       f"{GROUP},single_path+perturb"])
    assert code == 0, text
    assert "ran 2 runs" in text  # the new group's search and its row, nothing else
    searches = {s["search"]: s for s in _rows(out / "search.csv")}
    assert searches["searched[single_path+perturb+sincos]/s0"]["supernet"] == "single_path"
    md = (out / "accuracy.md").read_text()
    assert "| `single_path+perturb+sincos` |" in md


def test_a_group_that_differs_in_its_rule_reselects_from_the_trained_supernet(
        quick: tuple[Path, str], tmp_path: Path) -> None:
    from benchmarks.run import build_plan

    plan = build_plan(["--groups", f"{GROUP},uniform+alone,darts+argmax", "--search-seeds",
                       "2", "--out", str(tmp_path / "o")])
    src = {j.key: j.source for j in plan.searches}
    assert src["searched[uniform+alone+sincos]/s1"] == f"searched[{GROUP}]/s1"  # same supernet
    assert src[f"searched[{GROUP}]/s0"] is None
    assert src["searched[darts+argmax+sincos]/s0"] is None
    out = tmp_path / "rule"
    shutil.copytree(quick[0], out)
    code, text = _run(["--quick", "--out", str(out), "--groups", f"{GROUP},uniform+alone"])
    assert code == 0, text
    assert f"re-select uniform+alone+sincos (seed 0) from searched[{GROUP}]/s0" in text
    rows = {s["search"]: s for s in _rows(out / "search.csv")}
    new, old = rows["searched[uniform+alone+sincos]/s0"], rows[f"searched[{GROUP}]/s0"]
    assert new["status"] == "ok" and new["supernet_from"] == f"searched[{GROUP}]/s0"
    assert new["select"] == "alone" and json.loads(new["decisions"])
    genotype = json.loads((out / "genotypes" / "searched_uniform_alone_sincos__s0.json"
                           ).read_text())
    assert genotype["provenance"]["select"] == "alone"
    assert genotype["provenance"]["supernet_from"] == f"searched[{GROUP}]/s0"
    # its search cost is the shared supernet training plus its own selection
    assert float(new["total_s"]) > float(old["total_s"]) - float(old["select_s"])
    # without the checkpoint, the group would train its own supernet (the plan says so)
    again = tmp_path / "nockpt"
    shutil.copytree(quick[0], again)
    code, text = _run(["--quick", "--out", str(again), "--groups", f"{GROUP},uniform+alone",
                       "--plan"])
    assert code == 0 and (f"search uniform+alone+sincos (seed 0): to re-select from "
                          f"searched[{GROUP}]/s0 (its supernet is trained)") in text, text
    for ckpt in (again / "_work" / "runs").glob("search_*/last.ckpt"):
        ckpt.unlink()
    code, text = _run(["--quick", "--out", str(again), "--groups", f"{GROUP},uniform+alone",
                       "--plan"])
    assert code == 0 and (f"search uniform+alone+sincos (seed 0): to run (a full search: "
                          f"searched[{GROUP}]/s0's checkpoint is gone)") in text, text
    # two groups on that lost supernet: one trains it again, the other re-selects from it
    # (waiting for it in the schedule) instead of training its own
    from benchmarks.runner import Runner, _tasks

    argv = ["--quick", "--out", str(again), "--groups", f"{GROUP},uniform+alone,uniform+argmax"]
    code, text = _run([*argv, "--plan"])
    assert code == 0 and ("search uniform+argmax+sincos (seed 0): to re-select from "
                          "searched[uniform+alone+sincos]/s0 once that search is done") in text
    plan = build_plan(argv)
    needs = {key: n for _, n, key in _tasks(plan, Runner(plan, None))}
    assert "searched[uniform+alone+sincos]/s0" in needs["searched[uniform+argmax+sincos]/s0"]


def test_report_writes_the_tables_and_runs_nothing(quick: tuple[Path, str], tmp_path: Path
                                                   ) -> None:
    out = tmp_path / "report"
    shutil.copytree(quick[0], out)
    (out / "accuracy.md").unlink()
    before = {name: (out / name).read_text() for name in CSVS}
    code, text = _run(["--quick", "--out", str(out), "--report"])
    assert code == 0, text
    assert "tables of the finished runs" in text and "started" not in text
    md = (out / "accuracy.md").read_text()
    assert "## Search groups" in md and "clear family choices" in md
    assert {name: (out / name).read_text() for name in CSVS} == before


def test_random_cells_follow_the_search_configs_cell_settings(tmp_path: Path) -> None:
    import yaml

    from benchmarks.arguments import SEARCH_CONFIG
    from benchmarks.run import build_plan

    doc = yaml.safe_load(SEARCH_CONFIG.read_text())
    doc.setdefault("model", {})["position_encoding"] = "none"  # round 1's cells
    cfg = tmp_path / "none.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    argv = ["--blocks", "nonlocal", "--random-cells", "1", "--groups", "", "--out",
            str(tmp_path / "o")]
    sincos = {r.key: r.settings for r in build_plan(argv).rows}  # the shipped config
    none = {r.key: r.settings for r in build_plan([*argv, "--search-config", str(cfg)]).rows}
    assert none["nonlocal"] == sincos["nonlocal"]  # baselines do not depend on the search
    assert none["random/0"] != sincos["random/0"]  # sincos random cells are other cells
    assert none["random/0"] == none["nonlocal"]  # round 1's cells keep their fingerprint

def test_quick_on_a_folder_per_class_dataset(tmp_path: Path) -> None:
    from videos import write_pattern_video

    data = tmp_path / "mydata"
    for c in ("cat", "dog"):
        (data / c).mkdir(parents=True)
        for i in range(6):
            write_pattern_video(data / c / f"{c}{i}.mp4", 8, width=32, height=32)
    out = tmp_path / "out"
    # one baseline and the searched cell: the chain itself is covered on the synthetic data
    code, text = _run(["--quick", "--data-root", str(data), "--out", str(out),
                       "--blocks", "none", "--random-cells", "0"])
    assert code == 0, text
    rows = _rows(out / "accuracy.csv")
    assert {r["row"] for r in rows} == {"none", f"searched[{GROUP}]/s0"}
    assert all(r["status"] == "ok" for r in rows), rows
    md = (out / "accuracy.md").read_text()
    assert f"- Data: `{data}` (2 classes" in md
    # the dataset is part of every run's fingerprint: another folder is other settings
    other = tmp_path / "other"
    shutil.copytree(data, other)
    assert bench(["--quick", "--data-root", str(other), "--out", str(out), "--plan"]) == 2
    assert bench(["--quick", "--data-root", str(tmp_path / "nowhere"), "--out",
                  str(tmp_path / "o2")]) == 2


def _bench_process(argv: list[str], env: dict[str, str], limit: float = 420) -> tuple[int, str]:
    """``python -m benchmarks.run ARGV`` in its own process group, killed (and the test
    failed) after ``limit`` seconds instead of hanging the suite."""
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.run", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).resolve().parents[1], start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the bench did not finish in {limit:.0f} s: {out[-1500:]}")
    return proc.returncode, out


def test_ray_runs_the_quick_chain_records_a_crash_and_resumes(
        quick: tuple[Path, str], tmp_path: Path) -> None:
    """In its own process (a local Ray started by the bench; the deprecated --executor is
    accepted): a crashing row is recorded as failed while the others complete; re-run, only
    that row runs again."""
    import os

    out = tmp_path / "ray"
    shutil.copytree(quick[0], out)
    with (out / "accuracy.csv").open() as fh:
        kept = [ln for ln in fh if not ln.startswith(("nonlocal,", "none,"))]
    (out / "accuracy.csv").write_text("".join(kept))  # two rows to run again
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    code, text = _bench_process(["--quick", "--out", str(out), "--executor", "ray",
                                 "--jobs", "2"], {**env, CRASH_ENV: "nonlocal"})
    assert code == 1 and "runs execute on: ray" in text, text[-1500:]
    rows = {r["row"]: r for r in _rows(out / "accuracy.csv")}
    assert rows["nonlocal"]["status"] == "failed" and "injected crash" in rows["nonlocal"]["error"]
    assert rows["none"]["status"] == "ok"
    code, text = _bench_process(["--quick", "--out", str(out), "--executor", "ray"], env)
    assert code == 0 and "ran 1 runs" in text, text[-1500:]


def test_an_unreachable_ray_cluster_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert bench(["--quick", "--out", str(tmp_path / "x"), "--executor", "dask"]) == 2
    assert "invalid choice: 'dask'" in capsys.readouterr().err
    # (``--address auto`` with no cluster: "cannot start or reach Ray (auto): Could not find
    # any running Ray instance", exit 2, measured by hand; not run here, since a machine
    # that runs another bench has a cluster to find). A closed port: refused, nothing written
    worker = pytest.importorskip("ray.util.client.worker")
    monkeypatch.setattr(worker, "INITIAL_TIMEOUT_SEC", 1)  # a closed port: fail in seconds
    out = tmp_path / "bench"
    assert bench(["--quick", "--out", str(out), "--address", "ray://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot start or reach Ray" in err and "\n" not in err
    assert not out.exists()
    # the failed connection leaves nothing behind: a local Ray starts in the same process
    try:
        assert executor.start(None, 1) == "ray (local, 1 CPUs)"
    finally:
        executor.stop()


def test_budget_groups_get_matched_cost_random_cells(tmp_path: Path) -> None:
    from benchmarks.run import build_plan

    plan = build_plan(["--blocks", "none,nonlocal", "--random-cells", "2", "--groups",
                       "uniform+perturb+5ep,uniform+perturb+5ep+cost1x",
                       "--out", str(tmp_path / "o")])
    matched = [r for r in plan.rows if r.kind == "random_cost"]
    assert [(r.key, r.group) for r in matched] == [("random@cost1x/0", "cost1x"),
                                                   ("random@cost1x/1", "cost1x")]
    plain = {r.key: r for r in plan.rows if r.kind == "random"}
    assert matched[0].settings != plain["random/0"].settings
    with pytest.raises(BenchError, match="unknown block 'foo'"):
        build_plan(["--groups", "uniform+perturb+costfoo", "--out", str(tmp_path / "p")])


def test_a_darts_budget_trains_its_own_supernet_unless_its_weight_is_zero(tmp_path: Path
                                                                         ) -> None:
    from benchmarks.run import build_plan

    plan = build_plan(["--blocks", "", "--random-cells", "0", "--search-seeds", "2",
                       "--groups", "darts+argmax,darts+argmax+cost1x+cw0,darts+argmax+cost1x",
                       "--out", str(tmp_path / "o")])
    assert plan.groups == ["darts+argmax+sincos", "darts+argmax+sincos+cost1x+cw0",
                           "darts+argmax+sincos+cost1x"]
    jobs = {j.key: j for j in plan.searches}
    # cw0: alpha never sees the budget -> the same supernet as the unbudgeted group
    cw0 = jobs["searched[darts+argmax+sincos+cost1x+cw0]/s1"]
    assert cw0.source == "searched[darts+argmax+sincos]/s1"
    assert cw0.model["cost_weight"] == 0.0 and cw0.model["cost_target"] == "1x"
    assert cw0.supernet == jobs["searched[darts+argmax+sincos]/s1"].supernet
    assert cw0.settings != jobs["searched[darts+argmax+sincos]/s1"].settings
    # the default weight: the budget is in the architecture loss -> its own supernet
    own = jobs["searched[darts+argmax+sincos+cost1x]/s1"]
    assert own.source is None and own.supernet != cw0.supernet
    # a node width only changes the selection: re-selected from the same supernets
    plan = build_plan(["--blocks", "", "--random-cells", "0", "--search-seeds", "1",
                       "--groups", "uniform+perturb,uniform+perturb+cost1x+minw0.25",
                       "--out", str(tmp_path / "p")])
    minw = next(j for j in plan.searches if j.group == "uniform+perturb+sincos+cost1x+minw0.25")
    assert minw.source == "searched[uniform+perturb+sincos]/s0"
    assert minw.model["cost_min_width"] == 0.25


@pytest.mark.parametrize("spec, message", [
    ("darts+argmax+cwfoo", "expected cw<number >= 0>"),
    ("darts+argmax+cost1x+cw-1", "expected cw<number >= 0>"),
    ("darts+argmax+cw0", "needs a budget"),
    ("darts+argmax+cost1x+cw0+cw1", "two cost weights"),
    ("uniform+perturb+cost1x+minw2", "expected minw<inner ratio in"),
    ("uniform+perturb+minw0.25", "needs a budget"),
])
def test_bad_cost_weight_tokens_are_refused(spec: str, message: str, tmp_path: Path) -> None:
    from benchmarks.run import build_plan

    with pytest.raises(BenchError, match=message):
        build_plan(["--groups", spec, "--out", str(tmp_path / "o")])
