"""Options renamed for clarity (issue 31): ``position`` -> ``position_encoding``,
``supernet`` -> ``strategy``, ``remedy`` / ``remedy_weight`` -> ``anti_collapse`` /
``anti_collapse_weight``. The old names are still accepted for one release, on the command
line and in a YAML config, with one warning line naming the new key; the new names warn
about nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cliargs import search_argv

from benchmarks.run import build_plan
from supernet.app.cli import main as attnas
from supernet.hparams import RENAMED_OPTIONS, rename_options

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
