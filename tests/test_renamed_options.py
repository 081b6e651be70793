"""Options renamed for clarity (issue 31): ``position`` -> ``position_encoding``,
``supernet`` -> ``strategy``, ``remedy`` / ``remedy_weight`` -> ``anti_collapse`` /
``anti_collapse_weight``, SlowFast's and the two-stream space's ``alpha`` (the fast / slow
frame ratio) -> ``frame_ratio``. The old names are still accepted for one release, on the
command line and in a YAML config, with one warning line naming the new key (in Python, a
``DeprecationWarning``); the new names warn about nothing; old checkpoints and files load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from cliargs import search_argv

from benchmarks.run import build_plan
from datamodules.synth import ensure_synthetic
from supernet.app.cli import main as attnas
from supernet.backbones import SlowFast, slowfast_r50
from supernet.factory import create_backbone
from supernet.hparams import RENAMED_OPTIONS, rename_backbone_kwargs, rename_options
from supernet.retrain import VideoClassifier
from supernet.twostream import TwoStreamArch, load_arch
from supernet.twostream.search import TwoStreamSearch

PROXY = {"widths": [8, 16, 32], "depths": [1, 1, 1], "stem_width": 8}
WARNING = "is deprecated and will be removed in the next release; use"


def _search(tmp_path: Path, capsys: pytest.CaptureFixture, *extra: str) -> list[str]:
    """Parse an ``attnas search fit`` (stopped before training: the data folder does not
    exist); returns the warning lines on stderr."""
    argv = search_argv(tmp_path / "data", tmp_path / "runs", PROXY, *extra)
    capsys.readouterr()
    assert attnas(argv) == 2
    err = capsys.readouterr().err
    assert "data does not exist" in err  # parsed: it stopped at the data
    return [line for line in err.splitlines() if WARNING in line]


@pytest.mark.parametrize(("old", "value"), [("position", "coords"), ("supernet", "darts"),
                                            ("remedy", "entropy"), ("remedy_weight", "0.5")])
def test_an_old_option_name_on_the_command_line_warns_once(
        old: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = _search(tmp_path, capsys, f"--model.{old}={value}")
    assert lines == [f"attnas search: warning: --model.{old} {WARNING} "
                     f"--model.{RENAMED_OPTIONS[old]}"]


def test_old_option_names_in_a_yaml_config_warn_once_each(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "old.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"position": "none", "supernet": "single_path"}}))
    lines = _search(tmp_path, capsys, f"--config={cfg}")
    assert len(lines) == 2
    assert "--model.position " in lines[0] and lines[0].endswith("--model.position_encoding")
    assert "--model.supernet " in lines[1] and lines[1].endswith("--model.strategy")


def test_the_new_option_names_warn_about_nothing(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "new.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"position_encoding": "none"}}))
    assert _search(tmp_path, capsys, f"--config={cfg}", "--model.strategy=darts",
                   "--model.anti_collapse=entropy", "--model.anti_collapse_weight=0.5") == []


def test_rename_options_refuses_two_different_values() -> None:
    options = {"position": "none", "strategy": "darts"}
    assert rename_options(options) == ["position"]
    assert options == {"position_encoding": "none", "strategy": "darts"}
    with pytest.raises(ValueError, match="supernet .deprecated. and strategy are both given"):
        rename_options({"supernet": "uniform", "strategy": "darts"})


def test_the_benchmark_accepts_its_old_flag_and_old_config_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--remedy`` is ``--anti-collapse``; a search config with the old keys plans the same
    searches (the same fingerprints) as one with the new keys."""
    new = build_plan(["--anti-collapse", "none,beta_decay", "--out", str(tmp_path / "a")])
    assert capsys.readouterr().err == ""
    old = build_plan(["--remedy", "none,beta_decay", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"attnas bench: warning: --remedy {WARNING} --anti-collapse"]
    assert [s.settings for s in old.searches] == [s.settings for s in new.searches]
    cfg = tmp_path / "old.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"root": "data/synth", "synthetic": True},
                                   "model": {"position": "none"}}))
    renamed = tmp_path / "new.yaml"
    renamed.write_text(yaml.safe_dump({"data": {"root": "data/synth", "synthetic": True},
                                       "model": {"position_encoding": "none"}}))
    a = build_plan(["--search-config", str(cfg), "--out", str(tmp_path / "b")])
    assert "model.position is deprecated" in capsys.readouterr().err
    b = build_plan(["--search-config", str(renamed), "--out", str(tmp_path / "b")])
    assert [s.settings for s in a.searches] == [s.settings for s in b.searches]
    assert all(s.model["position_encoding"] == "none" for s in a.searches)


# ------------------------------------------- SlowFast's alpha (the frame ratio) -> frame_ratio
SMALL_SLOWFAST = {"width_div": 8, "depths": [1, 1, 1, 1]}


def test_slowfast_takes_alpha_as_a_deprecated_name_of_frame_ratio() -> None:
    assert slowfast_r50(3, frame_ratio=2, **SMALL_SLOWFAST).frame_ratio == 2
    for build in (lambda: SlowFast(3, alpha=2, width_div=8, depths=(1, 1, 1, 1)),
                  lambda: slowfast_r50(3, alpha=2, **SMALL_SLOWFAST),
                  lambda: create_backbone("slowfast_r50", 3, positions="none", alpha=2,
                                          **SMALL_SLOWFAST)):
        with pytest.warns(DeprecationWarning, match="alpha is deprecated .* use frame_ratio"):
            assert build().frame_ratio == 2
    with pytest.raises(ValueError, match="alpha .deprecated. and frame_ratio are both given"):
        slowfast_r50(3, alpha=2, frame_ratio=8, **SMALL_SLOWFAST)
    with pytest.raises(ValueError, match="unknown keyword") as err:
        create_backbone("slowfast_r50", 3, ratio=2)
    assert "frame_ratio" in str(err.value) and "alpha" not in str(err.value)


def test_an_old_retrain_checkpoint_with_alpha_still_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    new = VideoClassifier(num_classes=2, backbone="slowfast_r50", positions="none",
                          backbone_kwargs={"frame_ratio": 2, **SMALL_SLOWFAST})
    old_hparams = {**new.hparams, "backbone_kwargs": {"alpha": 2, **SMALL_SLOWFAST}}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": new.state_dict(), "hyper_parameters": old_hparams,
                "pytorch-lightning_version": pl.__version__, "attnas_kind": "retrain"}, path)
    with pytest.warns(DeprecationWarning, match="alpha is deprecated"):
        loaded = VideoClassifier.load_from_checkpoint(path, map_location="cpu")
    assert loaded.model.frame_ratio == 2
    for k, v in new.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # evaluated with the new name on the command line: the same architecture, not refused
    root = ensure_synthetic(tmp_path / "data", classes=2, videos_per_class=3, frames=8,
                            size=16, seed=1, workers=1)
    kwargs = json.dumps({"frame_ratio": 2, **SMALL_SLOWFAST})
    capsys.readouterr()
    assert attnas(["retrain", "test", f"--data.root={root}", "--data.num_frames=8",
                   "--data.crop_size=16", "--data.batch_size=2", "--data.num_workers=0",
                   "--data.test_clips=1", "--model.backbone=slowfast_r50",
                   "--model.positions=none", f"--model.backbone_kwargs={kwargs}",
                   "--trainer.enable_progress_bar=false",
                   f"--trainer.default_root_dir={tmp_path / 'o'}",
                   f"--trainer.logger.init_args.save_dir={tmp_path / 'o'}",
                   f"--ckpt_path={path}"]) == 0, capsys.readouterr().err


def test_backbone_kwargs_alpha_on_the_command_line_warns_once_and_is_renamed(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["retrain", "fit", f"--data.root={tmp_path / 'data'}", "--data.num_frames=8",
            "--model.backbone=slowfast_r50", "--model.positions=none",
            f"--model.backbone_kwargs={json.dumps({'alpha': 2, **SMALL_SLOWFAST})}",
            f"--trainer.default_root_dir={tmp_path / 'o'}"]
    capsys.readouterr()
    assert attnas(argv) == 2
    err = capsys.readouterr().err
    assert "data does not exist" in err
    assert [line for line in err.splitlines() if WARNING in line] == [
        "attnas retrain: warning: --model.backbone_kwargs key alpha is deprecated and will "
        "be removed in the next release; use frame_ratio"]
    # renamed in the parsed settings, so the backbone is built with frame_ratio (no
    # DeprecationWarning) and config.yaml / the checkpoint hold the new name; both names
    # given are left for the backbone to refuse
    kwargs = {"alpha": 2, "width_div": 8}
    assert rename_backbone_kwargs(kwargs) == ["alpha"]
    assert kwargs == {"frame_ratio": 2, "width_div": 8}
    both = {"alpha": 2, "frame_ratio": 8}
    assert rename_backbone_kwargs(both) == ["alpha"]
    assert both == {"alpha": 2, "frame_ratio": 8}
    assert rename_backbone_kwargs(None) == []
    # attnas cost takes the old key with the same line
    capsys.readouterr()
    assert attnas(["cost", "--backbone", "slowfast_r50", "--frames", "8", "--size", "32",
                   "--no-latency", "--positions", "none", "--backbone-kwargs",
                   json.dumps({"alpha": 2, **SMALL_SLOWFAST})]) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if WARNING in line] == [
        "attnas cost: warning: --backbone-kwargs key alpha is deprecated and will be removed "
        "in the next release; use frame_ratio"]


def test_a_version_1_twostream_file_with_alpha_still_loads(tmp_path: Path) -> None:
    arch = TwoStreamArch.create({"frame_ratio": 8, "fusion": "sum"}, "fusion",
                                ["frame_ratio", "beta_inv", "slow_kt", "fast_kt", "fusion",
                                 "fusion_at"])
    doc = arch.to_dict()
    assert doc["version"] == 2
    old = {**doc, "version": 1, "values": {("alpha" if k == "frame_ratio" else k): v
                                           for k, v in doc["values"].items()},
           "decided": ["alpha", *doc["decided"][1:]]}
    (tmp_path / "v1.json").write_text(json.dumps(old))
    back = load_arch(tmp_path / "v1.json")
    assert back.values == arch.values and back.decided == arch.decided
    assert back.backbone_kwargs()["frame_ratio"] == 8
    with pytest.warns(DeprecationWarning, match="variable alpha is deprecated"):
        made = TwoStreamArch.create({"alpha": 8, "fusion": "sum"}, "fusion",
                                    ["alpha", "beta_inv", "slow_kt", "fast_kt", "fusion",
                                     "fusion_at"])
    assert made == arch


def test_an_old_twostream_search_checkpoint_gets_its_logits_new_key() -> None:
    module = TwoStreamSearch(num_classes=2, stage="streams")
    state = module.state_dict()
    key = next(k for k in state if k.endswith("choices.logits.frame_ratio"))
    old = {(k.replace("logits.frame_ratio", "logits.alpha") if k == key else k): v
           for k, v in state.items()}
    checkpoint = {"state_dict": old}
    module.on_load_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == set(state)
    module.load_state_dict(checkpoint["state_dict"])
