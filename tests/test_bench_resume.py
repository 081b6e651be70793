"""A benchmark retrain killed part-way (a session that ends) resumes from its last finished
epoch: a real job process, really killed, launched again with the same spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from repo import REPO

from benchmarks import executor
from benchmarks.jobs import KILL_ENV
from datamodules.synth import ensure_synthetic


def _launch(spec_path: Path, result: Path, env_extra: dict[str, str]) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "benchmarks.jobs", str(spec_path),
                           str(result)], env=env, cwd=str(REPO), check=False,
                          capture_output=True).returncode


TINY = {"widths": [8, 16, 32], "depths": [1, 1, 1], "stem_width": 8}


def _spec(tmp_path: Path, kind: str, key: str, root: Path, batch: int) -> dict:
    """A 3-epoch job on the tiny proxy with a resume folder (what the runners launch)."""
    return {"kind": kind, "key": key, "seed": 0, "threads": 1,
            "run_dir": str(tmp_path / "run"), "resume_dir": str(tmp_path / "resume"),
            "data": {"root": str(root), "num_frames": 8, "crop_size": 16, "batch_size": batch,
                     "num_workers": 0},
            "trainer": {"max_epochs": 3, "accelerator": "cpu", "devices": 1,
                        "limit_train_batches": 2, "limit_val_batches": 1,
                        "log_every_n_steps": 1}}


def test_killed_retrain_resumes_from_its_last_epoch(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "data", classes=2, videos_per_class=6, frames=8,
                            size=16, seed=4, workers=1)
    resume = tmp_path / "resume"
    spec = _spec(tmp_path, "retrain", "nonlocal", root, batch=4)
    spec["data"]["test_clips"] = 1
    spec["trainer"]["limit_test_batches"] = 2
    spec["model"] = {"backbone": "proxy", "block": "nonlocal", "optimizer": "adamw",
                     "lr": 0.002, "backbone_kwargs": TINY}
    spec_path, result = tmp_path / "spec.json", tmp_path / "result.json"
    spec_path.write_text(json.dumps(spec))
    # first attempt: killed (SIGKILL, no result written) right after epoch 1 is saved
    assert _launch(spec_path, result, {KILL_ENV: "1"}) == -9
    assert not result.exists()
    saved = list(resume.glob("retrain-*.ckpt"))
    assert len(saved) == 1
    # a torn write from an earlier kill is never what resumes: only the renamed file counts
    assert not list(resume.glob(".*.tmp"))
    # the same spec again: resumes after epoch 1 and finishes the run
    assert _launch(spec_path, result, {}) == 0
    out = json.loads(result.read_text())
    assert out["status"] == "ok" and out["resumed_at_epoch"] == 2 and out["epochs"] == 3
    assert out["prior_s"] > 0 and 0.0 <= out["video_top1"] <= 1.0
    assert not saved[0].exists()  # a finished run leaves nothing to resume
    # another spec (another seed) does not pick up this run's state
    spec["seed"] = 1
    spec_path.write_text(json.dumps(spec))
    assert _launch(spec_path, result, {KILL_ENV: "0"}) == -9
    (ckpt,) = resume.glob("retrain-*.ckpt")
    ckpt.write_bytes(b"torn")  # a checkpoint that does not load: trained again from scratch
    assert _launch(spec_path, result, {}) == 0
    out = json.loads(result.read_text())
    assert out["status"] == "ok" and out["resumed_at_epoch"] == 0 and out["prior_s"] == 0


def test_killed_search_resumes_and_still_derives_its_cell(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "data", classes=2, videos_per_class=8, frames=8,
                            size=16, seed=5, workers=1)
    resume = tmp_path / "resume"
    spec = {**_spec(tmp_path, "search", "searched[g]/s0", root, batch=2),
            "genotype": str(tmp_path / "g" / "cell.json"), "title": "g",
            "provenance": {"benchmark": "searched[g]/s0"},
            "model": {"strategy": "uniform", "select": "perturb", "select_bn": "batch",
                      "select_val_batches": 1, "optimizer": "adamw", "lr": 0.002,
                      "backbone_kwargs": TINY}}
    spec_path, result = tmp_path / "spec.json", tmp_path / "result.json"
    spec_path.write_text(json.dumps(spec))
    assert _launch(spec_path, result, {KILL_ENV: "0"}) == -9
    assert not result.exists() and not Path(spec["genotype"]).exists()
    assert len(list(resume.glob("search-*.ckpt"))) == 1
    assert _launch(spec_path, result, {}) == 0
    out = json.loads(result.read_text())
    assert out["status"] == "ok" and out["resumed_at_epoch"] == 1 and out["prior_s"] > 0
    assert out["wall_s"] > out["prior_s"] and len(out["nodes"]) == 3
    assert json.loads(Path(spec["genotype"]).read_text())["nodes"]
    assert not list(resume.glob("*.ckpt"))


def test_a_run_killed_inside_ray_fails_alone_and_resumes(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's Ray tasks: a run whose worker process is killed comes back as a failed
    result while a run beside it finishes, a run that waited for it does not start, and the
    same spec sent again resumes from the killed run's last epoch."""
    root = ensure_synthetic(tmp_path / "data", classes=2, videos_per_class=6, frames=8,
                            size=16, seed=4, workers=1)
    spec = _spec(tmp_path, "retrain", "nonlocal", root, batch=4)
    spec["data"]["test_clips"] = 1
    spec["trainer"]["limit_test_batches"] = 2
    spec["model"] = {"backbone": "proxy", "block": "nonlocal", "optimizer": "adamw",
                     "lr": 0.002, "backbone_kwargs": TINY}
    beside = {**spec, "key": "none", "run_dir": str(tmp_path / "beside"), "resume_dir": "",
              "model": {**spec["model"], "block": "none"}}
    waiting = {**beside, "run_dir": str(tmp_path / "waiting"),
               "requires": ["nonlocal", str(tmp_path / "cell.json")]}
    monkeypatch.setenv(KILL_ENV, "0")  # forwarded to the tasks (an ATTNAS_ variable)
    executor.start(None, 2)
    try:
        killed = executor.submit(spec, tmp_path / "killed.log", 1, None, {}, {})
        other = executor.submit(beside, tmp_path / "beside.log", 1, None, {}, {})
        after = executor.submit(waiting, tmp_path / "waiting.log", 1, None,
                                {"nonlocal": killed}, {})
        result, ran = executor.outcome(killed, spec, [])
        assert result["status"] == "failed" and "its process died" in result["error"]
        assert ran == spec and len(list((tmp_path / "resume").glob("retrain-*.ckpt"))) == 1
        result, ran = executor.outcome(other, beside, [])
        assert result["status"] == "ok" and ran is not None and result["run_s"] > 0
        assert executor.outcome(after, waiting, ["nonlocal"]) == (
            {"status": "failed", "error": "its search nonlocal failed"}, None)
        monkeypatch.delenv(KILL_ENV)
        result, ran = executor.outcome(
            executor.submit(spec, tmp_path / "again.log", 1, None, {}, {}), spec, [])
        assert result["status"] == "ok" and result["resumed_at_epoch"] == 1, result
        assert "Trainer.fit" in (tmp_path / "again.log").read_text()  # its output, its log
    finally:
        executor.stop()


def test_what_a_run_does_once_its_searches_ended(tmp_path: Path) -> None:
    cell, ckpt = tmp_path / "cell.json", tmp_path / "last.ckpt"
    cell.write_text("{}")
    ckpt.write_text("")
    row = {"kind": "retrain", "requires": ["s0", str(cell)]}
    assert executor.resolve(row, {"s0": True}) == ({"kind": "retrain"}, "")
    assert executor.resolve(row, {"s0": False}) == (None, "its search s0 failed")
    assert executor.resolve({**row, "requires": ["s0", str(tmp_path / "gone.json")]},
                            {"s0": True})[0] is None
    search = {"kind": "search", "provenance": {"group": "g"},
              "supernets": [["a", str(tmp_path / "gone.ckpt")], ["b", str(ckpt)]]}
    spec, _ = executor.resolve(search, {"a": True, "b": True})
    assert spec == {"kind": "reselect", "checkpoint": str(ckpt),
                    "provenance": {"group": "g", "supernet_from": "b"}}
    assert executor.resolve(search, {"b": False}) == ({"kind": "search",
                                                      "provenance": {"group": "g"}}, "")
    timing = {"kind": "steptime", "cells": [["a", str(tmp_path / "x.json")], ["b", str(cell)]]}
    assert executor.resolve(timing, {"a": True, "b": True})[0]["genotype"] == str(cell)
    assert executor.resolve(timing, {"b": False}) == (None, "no searched cell to time")
