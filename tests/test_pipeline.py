"""Search -> derive -> retrain through the real CLI, Trainer, checkpoints and video files."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from datamodules.synth import ensure_synthetic
from derive import load_genotype
from supernet.app.cli import main as attnas

# tiny everything: 2 classes, 16 px, 8 frames, a 1-stage-per-width proxy
PROXY = '{"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}'


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "data", classes=2,
                            videos_per_class=12, frames=8, size=16, seed=3, workers=1)


def _data_args(root: Path, search: bool) -> list[str]:
    return [f"--data.root={root}", "--data.num_frames=8", "--data.crop_size=16",
            "--data.batch_size=4", "--data.num_workers=0", f"--data.search={search}",
            "--data.cache=memory"]


#: round 1's search (bi-level DARTS, argmax): alpha moves, so these tests see the
#: architecture step, its resume and its DDP averaging (the default search freezes alpha)
DARTS = ("--model.strategy=darts", "--model.select=argmax")


def _search(root: Path, out: Path, *extra: str, epochs: int = 2) -> int:
    torch.set_num_threads(1)
    return attnas([
        "search", "fit", *_data_args(root, True), *DARTS,
        f"--model.backbone_kwargs={PROXY}", "--model.num_nodes=2",
        f"--trainer.max_epochs={epochs}", "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
        *extra,
    ])


def _run_dir(out: Path, name: str = "search") -> Path:
    return sorted((out / name).glob("version_*"))[-1]


@pytest.fixture(scope="module")
def searched(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert _search(synth, out) == 0
    return _run_dir(out)


def test_search_writes_checkpoint_genotype_and_pictures(searched: Path) -> None:
    assert (searched / "checkpoints" / "last.ckpt").is_file()
    for name in ("genotype.json", "genotype.png", "alpha.png", "arch.csv"):
        assert (searched / name).stat().st_size > 0, name
    g = load_genotype(searched / "genotype.json")
    assert g.num_nodes == 2 and g.provenance["epoch"] == 1
    rows = (searched / "arch.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + one row per epoch
    ckpt = torch.load(searched / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["attnas_kind"] == "search"
    # alpha moved away from its init (the architecture step ran) and is what derive reads
    assert ckpt["state_dict"]["model.arch.alpha"].abs().max() > 1e-3


def test_derive_then_retrain_fit_and_test(searched: Path, synth: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    cell = tmp_path / "cell.json"
    assert attnas(["derive", str(searched / "checkpoints" / "last.ckpt"), "-o", str(cell)]) == 0
    assert "node 0:" in capsys.readouterr().out
    assert cell.is_file() and cell.with_suffix(".png").stat().st_size > 0
    g = load_genotype(cell)
    assert g.nodes == load_genotype(searched / "genotype.json").nodes
    code = attnas(["retrain", "fit", *_data_args(synth, False), "--data.test_clips=2",
                   f"--model.block={cell}", f"--model.backbone_kwargs={PROXY}",
                   "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                   "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
                   f"--trainer.logger.init_args.save_dir={tmp_path}"])
    assert code == 0
    run = _run_dir(tmp_path, "retrain")
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    code = attnas(["retrain", "test", *_data_args(synth, False), "--data.test_clips=2",
                   f"--model.block={cell}", f"--model.backbone_kwargs={PROXY}",
                   f"--ckpt_path={ckpt}", "--trainer.enable_progress_bar=false",
                   f"--trainer.logger.init_args.save_dir={tmp_path}"])
    assert code == 0
    metrics = (_run_dir(tmp_path, "retrain") / "metrics.csv").read_text()
    assert "test/video_top1" in metrics


@pytest.mark.parametrize("block", ["none", "nonlocal", "nonlocal_dot", "a2", "cinst", "stinc"])
def test_retrain_each_baseline_block(block: str, synth: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    code = attnas(["retrain", "fit", *_data_args(synth, False), f"--model.block={block}",
                   f"--model.backbone_kwargs={PROXY}", "--trainer.max_epochs=1",
                   "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
                   "--trainer.enable_progress_bar=false",
                   f"--trainer.logger.init_args.save_dir={tmp_path}"])
    assert code == 0
    assert (_run_dir(tmp_path, "retrain") / "checkpoints" / "last.ckpt").is_file()


#: the shipped config's loader: a worker process (kept between epochs) and the memory cache
SHIPPED_LOADER = ("--data.num_workers=1", "--data.persistent_workers=true")


def _search_process(root: Path, out: Path, *extra: str) -> subprocess.Popen:
    """A real ``attnas search fit`` process (3 epochs, the shipped loader settings)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "supernet.app.cli", "search", "fit", *_data_args(root, True),
           *SHIPPED_LOADER, *DARTS, f"--model.backbone_kwargs={PROXY}", "--model.num_nodes=2",
           "--trainer.max_epochs=3", "--trainer.limit_train_batches=2",
           "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
           f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
           *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[1])


def test_search_killed_and_resumed_matches_the_uninterrupted_run(synth: Path, tmp_path: Path
                                                                 ) -> None:
    """SIGKILL a real search once its first epoch is checkpointed, resume from last.ckpt,
    with the shipped loader settings (a persistent worker draws the data): the same
    weights, alpha/beta and cell as a run never stopped, and the killed run's records
    are continued, not lost."""
    full = _search_process(synth, tmp_path / "full")
    killed = _search_process(synth, tmp_path / "cut")
    ckpt = tmp_path / "cut" / "search" / "version_0" / "checkpoints" / "epoch00.ckpt"
    last = ckpt.with_name("last.ckpt")
    deadline = time.monotonic() + 240
    while not last.is_file() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.kill()
    killed.communicate()
    assert ckpt.is_file() and last.is_file(), "the search wrote no epoch-0 checkpoint"
    assert full.wait(timeout=300) == 0, full.stderr.read()[-2000:] if full.stderr else ""
    assert torch.load(last, weights_only=False)["epoch"] in (0, 1)  # killed in epoch 1 or 2
    resumed = _search_process(synth, tmp_path / "cut", f"--ckpt_path={last}")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    run = _run_dir(tmp_path / "cut")
    assert run.name == "version_0"  # the resumed run continued the killed run's folder
    metrics = list(csv.DictReader((run / "metrics.csv").open()))
    assert {r["epoch"] for r in metrics if r.get("epoch")} >= {"0", "1", "2"}  # none lost
    assert (run / "arch.csv").read_text() == \
        (_run_dir(tmp_path / "full") / "arch.csv").read_text()  # every epoch, identical
    a = torch.load(_run_dir(tmp_path / "full") / "checkpoints" / "last.ckpt",
                   weights_only=False)["state_dict"]
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    epoch0 = torch.load(ckpt, weights_only=False)["state_dict"]
    assert not torch.equal(epoch0["model.arch.alpha"], a["model.arch.alpha"])  # it moved
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)
    g = [json.loads((_run_dir(tmp_path / name) / "genotype.json").read_text())["nodes"]
         for name in ("full", "cut")]
    assert g[0] == g[1]


def test_too_many_broken_validation_videos_fail_before_training(
        synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = [f"{synth / ln.split()[0]} {ln.split()[1]}"
             for ln in (synth / "val.txt").read_text().splitlines()]
    for i in range(2):
        (tmp_path / f"bad{i}.mp4").write_bytes(b"\x00" * 64)
        lines.append(f"{tmp_path / f'bad{i}.mp4'} {lines[0].split()[1]}")
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    code = _search(synth, tmp_path / "runs", f"--data.val_list={tmp_path / 'val.txt'}")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("attnas search: error: 2 of ") and "bad0.mp4" in err
    assert len(err.splitlines()) == 1
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # nothing trained


def test_second_order_search_runs(synth: Path, tmp_path: Path) -> None:
    assert _search(synth, tmp_path, "--model.arch_order=2", "--model.anti_collapse=beta_decay",
                   "--model.anti_collapse_weight=0.5", epochs=1) == 0
    g = json.loads((_run_dir(tmp_path) / "genotype.json").read_text())
    assert g["provenance"]["arch_order"] == 2


@pytest.mark.parametrize("command", [["search", "--help"], ["retrain", "fit", "--help"],
                                     ["derive", "--help"], ["cost", "--help"],
                                     ["data", "synth", "--help"], ["demo", "--help"], ["--help"]])
def test_every_subcommand_has_help(command: list[str], capsys: pytest.CaptureFixture) -> None:
    try:
        code = attnas(command)
    except SystemExit as e:  # argparse-based subcommands exit after printing help
        code = e.code
    assert code in (0, None)
    assert "usage" in capsys.readouterr().out.lower()


def test_bad_inputs_exit_2_with_one_line(synth: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    bad_geno = tmp_path / "bad.json"
    bad_geno.write_text(json.dumps({"format": "attnas-genotype", "version": 1,
                                    "nodes": [{"op": "dot.spatial.tanh", "input": 0}],
                                    "cell": {"inner_ratio": 0.5, "kv_pool": True,
                                             "position": "none", "num_nodes": 1}}))
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"hello": 1}')
    not_ckpt = tmp_path / "x.ckpt"
    not_ckpt.write_text("nope")
    base = ["retrain", "fit", *_data_args(synth, False), "--trainer.max_epochs=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}"]
    cases = [
        (base + [f"--model.block={bad_geno}"], "dot.spatial.tanh"),
        (base + [f"--model.block={foreign}"], "not an attnas genotype"),
        (base + ["--model.block=transformer"], "transformer"),
        (base + ["--model.backbone=resnet9000"], "resnet9000"),
        (["retrain", "fit", *_data_args(tmp_path / "nowhere", False)], "nowhere"),
        (["derive", str(not_ckpt)], "not a readable PyTorch checkpoint"),
        (["derive", str(tmp_path / "missing.ckpt")], "does not exist"),
        (["retrain", "frobnicate"], "unknown subcommand"),
    ]
    for argv, needle in cases:
        capsys.readouterr()
        assert attnas(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert needle in err, (argv, err)
        assert "Traceback" not in err


def test_derive_rejects_a_retrain_checkpoint(synth: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    code = attnas(["retrain", "fit", *_data_args(synth, False), "--trainer.max_epochs=1",
                   f"--model.backbone_kwargs={PROXY}", "--trainer.limit_train_batches=1",
                   "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
                   f"--trainer.logger.init_args.save_dir={tmp_path}"])
    assert code == 0
    ckpt = _run_dir(tmp_path, "retrain") / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert attnas(["derive", str(ckpt)]) == 2
    assert "derive needs a search checkpoint" in capsys.readouterr().err
    capsys.readouterr()
    assert _search(synth, tmp_path, f"--ckpt_path={ckpt}", epochs=1) == 2
    assert "is a retrain checkpoint, expected a search checkpoint" in capsys.readouterr().err


_DDP = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
        "--trainer.max_epochs=2", "--trainer.limit_train_batches=2",
        "--trainer.log_every_n_steps=1"]


def _ddp(args: list[str], warnings: bool = False) -> subprocess.CompletedProcess:
    """``python -m supernet.app.cli ARGS`` as 2 gloo processes, with the default callbacks --
    the rich progress bar included (it once deadlocked the first epoch end under DDP)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not warnings:
        env["PYTHONWARNINGS"] = "ignore"
    cmd = [sys.executable, "-m", "supernet.app.cli", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[1],
                            start_new_session=True)  # a hang is killed with both ranks
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"DDP run hung (killed after 300 s): {' '.join(args[:2])}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def test_ddp_two_cpu_processes_keep_alpha_identical(synth: Path, tmp_path: Path) -> None:
    """Real DDP (gloo, 2 processes, progress bar on): each rank reads its own shard of both
    halves, the arch gradients are averaged, and the module checks every epoch that
    alpha/beta agree."""
    out = _ddp(["search", "fit", *_data_args(synth, True), f"--model.backbone_kwargs={PROXY}",
                "--model.num_nodes=2", "--trainer.limit_val_batches=1", *DARTS, *_DDP,
                f"--trainer.logger.init_args.save_dir={tmp_path}"])
    assert out.returncode == 0, out.stderr[-2000:]
    run = _run_dir(tmp_path)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    divergence = [float(r["arch/rank_divergence"]) for r in rows
                  if r.get("arch/rank_divergence")]
    assert len(divergence) == 2 and max(divergence) == 0.0
    assert (run / "genotype.json").is_file()


def test_ddp_retrain_fit_and_test_with_the_progress_bar(synth: Path, tmp_path: Path) -> None:
    common = [*_data_args(synth, False), f"--model.backbone_kwargs={PROXY}",
              "--model.block=nonlocal", f"--trainer.default_root_dir={tmp_path}",
              f"--trainer.logger.init_args.save_dir={tmp_path}", *_DDP]
    out = _ddp(["retrain", "fit", *common, "--trainer.limit_val_batches=2"])
    assert out.returncode == 0, out.stderr[-2000:]
    ckpt = next(tmp_path.rglob("last.ckpt"))
    out = _ddp(["retrain", "test", *common, f"--ckpt_path={ckpt}"], warnings=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test/video_top1" in out.stdout
    assert "sync_dist" not in out.stderr  # the gathered video metrics are logged as global


@pytest.mark.parametrize("config", sorted(str(p) for p in
                                          (Path(__file__).resolve().parents[1] / "configs")
                                          .rglob("*.yaml")))
def test_shipped_configs_parse(config: str, capsys: pytest.CaptureFixture) -> None:
    kind = "search" if "/search/" in config else "retrain"
    argv = [kind, "fit", "-c", config, "--print_config"]
    if config.endswith("twostream.yaml"):  # the progressive two-stream search
        argv = ["search", "twostream", "-c", config, "--print_config"]
    try:
        code = attnas(argv)
    except SystemExit as e:
        code = e.code
    assert code in (0, None)
    printed = capsys.readouterr().out
    assert "model:" in printed and "data:" in printed
