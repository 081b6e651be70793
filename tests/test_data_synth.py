"""The synthetic benchmark: classes, determinism, reuse, atomicity, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from datamodules.decode import decode_all, probe
from datamodules.synth import (
    COLOURS,
    DIRECTIONS,
    MOVE_FRAMES,
    MOVER_GREY,
    SynthError,
    check_params,
    class_colours,
    class_names,
    classes_markdown,
    ensure_synthetic,
    render_video,
)
from supernet.app.data_cli import main as data_main

SMALL = {"classes": 4, "videos_per_class": 6, "frames": 16, "size": 24, "seed": 1}


def _flash_times(video: np.ndarray, rgb: tuple[int, int, int]) -> list[int]:
    """Frames where a whole flash square (side 2 * round(size / 12)) close to ``rgb``
    is visible."""
    side = max(2, 2 * round(video.shape[1] / 12))
    d = np.abs(video.astype(int) - np.array(rgb)).max(-1)
    return [t for t in range(len(video)) if (d[t] < 40).sum() >= side * side]


def test_class_names() -> None:
    assert class_names(4) == ["blue_first", "green_first", "red_first", "yellow_first"]
    assert class_names(2) == ["green_first", "red_first"]
    assert len(class_names(6)) == 6 and class_names() == class_names(4)
    md = classes_markdown(4)
    assert "| 2 | `red_first` | red flashes before green, blue, yellow |" in md


@pytest.mark.parametrize("classes,frames,size", [(2, 8, 16), (4, 32, 24), (6, 16, 32)])
def test_the_class_colour_flashes_first_and_every_colour_once(classes: int, frames: int,
                                                              size: int) -> None:
    rng = np.random.default_rng(0)
    palette = dict(COLOURS)
    used = [name for name, _ in COLOURS[:classes]]
    for c, first in enumerate(class_colours(classes)):
        for _ in range(4):
            v = render_video(c, classes, frames, size, rng)
            assert v.shape == (frames, size, size, 3) and v.dtype == np.uint8
            times = {name: _flash_times(v, palette[name]) for name in used}
            assert all(len(ts) == 2 and ts[1] == ts[0] + 1 for ts in times.values()), times
            starts = sorted((ts[0], name) for name, ts in times.items())
            assert starts[0][1] == first
            assert len({t for t, _ in starts}) == classes  # distinct slots


def test_generator_is_deterministic_and_reuses(tmp_path) -> None:
    a = ensure_synthetic(tmp_path / "a", **SMALL, workers=1)
    b = ensure_synthetic(tmp_path / "b", **SMALL, workers=2)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.mp4"))
    assert len(files_a) == 4 * 6
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.mp4"))
    for rel in files_a:  # byte-identical whatever the number of processes
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    for s in ("train", "val", "test"):
        assert (a / f"{s}.txt").read_text() == (b / f"{s}.txt").read_text()
    meta = json.loads((a / "meta.json").read_text())
    assert meta["params"] == SMALL and meta["classes"] == class_names(4)
    assert meta["counts"] == {"train": 16, "val": 4, "test": 4}
    assert meta["params"]["size"] == 24
    lines = (a / "train.txt").read_text().split("\n")
    path, label = lines[0].split()
    assert (a / path).is_file() and label in class_names(4) and path.startswith(label + "/")
    # the files are real H.264 videos of the requested size
    info = probe(a / path)
    assert (info.num_frames, info.width, info.height) == (16, 24, 24)
    assert decode_all(a / path).shape == (16, 24, 24, 3)
    # same parameters: reused untouched
    stamp = (a / path).stat().st_mtime_ns
    assert ensure_synthetic(a, **SMALL) == a
    assert (a / path).stat().st_mtime_ns == stamp
    # a different seed gives different videos
    c = ensure_synthetic(tmp_path / "c", **{**SMALL, "seed": 2}, workers=1)
    assert (c / path).read_bytes() != (a / path).read_bytes()


def test_other_parameters_need_force_and_foreign_folders_are_refused(tmp_path) -> None:
    out = ensure_synthetic(tmp_path / "s", **SMALL, workers=1)
    with pytest.raises(SynthError, match="other parameters"):
        ensure_synthetic(out, **{**SMALL, "videos_per_class": 5})
    ensure_synthetic(out, **{**SMALL, "videos_per_class": 5}, force=True, workers=1)
    assert json.loads((out / "meta.json").read_text())["params"]["videos_per_class"] == 5
    assert len(list(out.rglob("*.mp4"))) == 20
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(SynthError, match="not a synthetic benchmark"):
        ensure_synthetic(foreign, **SMALL, force=True)
    assert (foreign / "thesis.tex").read_text() == "keep me"


def test_interrupted_run_leaves_whole_files_and_resumes(tmp_path, monkeypatch) -> None:
    import datamodules.synth as synth

    real, calls = synth.render_video, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt  # Ctrl-C while the 6th video is being made
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "render_video", interrupted)
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(out, **SMALL, workers=1)
    assert not (out / "meta.json").exists() and not (out / "train.txt").exists()
    done = sorted(out.rglob("*.mp4"))
    assert len(done) == 5 and not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    for p in done:  # whatever exists is a whole, decodable video
        assert decode_all(p).shape == (16, 24, 24, 3)
    monkeypatch.setattr(synth, "render_video", real)
    stamps = {p: p.stat().st_mtime_ns for p in done}
    ensure_synthetic(out, **SMALL, workers=1)  # resumes: keeps the 5, makes the rest
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    fresh = ensure_synthetic(tmp_path / "fresh", **SMALL, workers=1)
    for p in fresh.rglob("*.mp4"):
        assert (out / p.relative_to(fresh)).read_bytes() == p.read_bytes()


def test_default_parameters_are_quick_to_describe() -> None:
    assert class_names() == class_names(4)


def test_cli_synth_and_bad_input(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    code = data_main(["synth", "--out", str(out), "--classes", "2", "--videos-per-class", "4",
                      "--frames", "8", "--size", "16", "--seed", "3", "--workers", "1"])
    assert code == 0
    assert json.loads((out / "meta.json").read_text())["params"] == {
        "classes": 2, "videos_per_class": 4, "frames": 8, "size": 16, "seed": 3}
    assert "synthetic benchmark ready" in capsys.readouterr().out
    for argv, needle in ((["synth", "--out", str(tmp_path / "x"), "--size", "33"], "even"),
                         (["synth", "--out", str(tmp_path / "x"), "--classes", "7"], "classes"),
                         (["synth"], "--out"),
                         ([], "expected a subcommand"),
                         (["synth", "--out", str(tmp_path / "x"), "--frames", "abc"], "frames"),
                         (["bogus"], "invalid choice"),
                         (["synth", "--out", str(out), "--seed", "4"], "other parameters")):
        assert data_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (argv, err)
    assert not os.path.exists(tmp_path / "x")


def _mover_track(video: np.ndarray) -> list[tuple[int, float, float]]:
    """``(frame, centroid y, centroid x)`` of the motion task's grey mover, where one shows."""
    near = (np.abs(video.astype(int) - np.array(MOVER_GREY)).max(-1) < 20)
    out = []
    for t in range(len(video)):
        ys, xs = np.nonzero(near[t])
        if len(ys) >= 4:
            out.append((t, float(ys.mean()), float(xs.mean())))
    return out


@pytest.mark.parametrize("classes,frames,size", [(2, 8, 16), (4, 32, 24), (6, 24, 32)])
def test_the_first_mover_goes_the_class_direction_and_every_direction_once(
        classes: int, frames: int, size: int) -> None:
    steps = dict(DIRECTIONS)
    used = [name for name, _ in DIRECTIONS[:classes]]
    names = class_names(classes, task="motion")
    assert names == sorted(f"{d}_first" for d in used)
    rng = np.random.default_rng(3)
    for c, name in enumerate(names):
        for _ in range(3):
            v = render_video(c, classes, frames, size, rng, task="motion")
            assert v.shape == (frames, size, size, 3) and v.dtype == np.uint8
            track = _mover_track(v)
            times = [t for t, *_ in track]
            assert len(times) == classes * MOVE_FRAMES  # each mover shown 4 frames, apart
            moves = []
            for k in range(classes):
                seg = track[k * MOVE_FRAMES:(k + 1) * MOVE_FRAMES]
                assert [t for t, *_ in seg] == list(range(seg[0][0], seg[0][0] + MOVE_FRAMES))
                dy, dx = seg[-1][1] - seg[0][1], seg[-1][2] - seg[0][2]
                moves.append((int(np.sign(round(dy))), int(np.sign(round(dx)))))
            assert moves[0] == steps[name[:-len("_first")]]
            assert sorted(moves) == sorted(steps[d] for d in used)


def test_motion_folder_records_its_task_and_flow_sees_the_first_move(tmp_path) -> None:
    from datamodules.modality import compute_flow

    colour = ensure_synthetic(tmp_path / "c", **SMALL, workers=1)
    assert "task" not in json.loads((colour / "meta.json").read_text())["params"]
    out = ensure_synthetic(tmp_path / "m", **{**SMALL, "frames": 24}, task="motion",
                           workers=1)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["params"]["task"] == "motion"
    assert meta["classes"] == ["down_first", "left_first", "right_first", "up_first"]
    assert "first mover" in meta["description"]
    with pytest.raises(SynthError, match="other parameters"):  # a colour folder is not reused
        ensure_synthetic(tmp_path / "m", **{**SMALL, "frames": 24}, workers=1)
    # through H.264 and Farneback: the flow at the first mover points the class's way
    for name, axis, sign in (("right_first", 0, 1), ("up_first", 1, -1)):
        video = decode_all(str(out / name / f"{name}_00000.mp4"))
        flow = compute_flow(video).astype(float) - 128.0
        t0 = _mover_track(video)[0][0]
        near = np.abs(video[t0].astype(int) - np.array(MOVER_GREY)).max(-1) < 40
        assert sign * flow[t0][near][:, axis].mean() > 3.0


def test_bad_motion_settings_exit_2(tmp_path, capsys) -> None:
    assert data_main(["synth", "--out", str(tmp_path / "x"), "--task", "spin"]) == 2
    assert data_main(["synth", "--out", str(tmp_path / "y"), "--task", "motion",
                      "--classes", "4", "--frames", "12"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "invalid choice: 'spin'" in err[0]
    assert "--frames must be >= 16 for the motion task" in err[1]


def _flash_place(video: np.ndarray, rgb: tuple[int, int, int]) -> tuple[int, int]:
    d = np.abs(video.astype(int) - np.array(rgb)).max(-1)
    t, y, x = np.nonzero(d < 40)
    return int(y.min()), int(x.min())


def test_the_blink_lamp_shows_the_class_colour_first_at_one_place() -> None:
    rng = np.random.default_rng(5)
    palette = dict(COLOURS)
    used = [name for name, _ in COLOURS[:4]]
    places = set()
    for c, first in enumerate(class_colours(4)):
        for _ in range(3):
            v = render_video(c, 4, 32, 24, rng, task="blink")
            times = {name: _flash_times(v, palette[name]) for name in used}
            assert all(len(ts) == 2 and ts[1] == ts[0] + 1 for ts in times.values()), times
            assert min((ts[0], name) for name, ts in times.items())[1] == first
            where = {_flash_place(v, palette[name]) for name in used}
            assert len(where) == 1  # every flash of a video at the lamp's one place
            places |= where
    assert len(places) > 1  # the lamp's place changes from video to video
    assert "lamp" in classes_markdown(4, "blink")


def test_the_marker_accompanies_the_class_colour_and_only_it() -> None:
    rng = np.random.default_rng(7)
    palette = dict(COLOURS)
    used = [name for name, _ in COLOURS[:4]]
    marker = palette["white"]
    slots_of_class = set()
    for c, colour in enumerate(class_colours(4)):
        for _ in range(6):
            v = render_video(c, 4, 32, 24, rng, task="marker", events="graded")
            times = {name: ts for name in used if (ts := _flash_times(v, palette[name]))}
            assert colour in times
            assert _flash_times(v, marker) == times[colour]  # shown with that flash only
            assert _flash_place(v, marker) != _flash_place(v, palette[colour])
            slots_of_class.add(sorted(ts[0] for ts in times.values()).index(times[colour][0]))
    assert slots_of_class - {0}  # the marked flash is not always the first
    assert class_names(4, "marker")[0] == "blue_marked"
    with pytest.raises(ValueError, match="between 2 and 5 for the marker task"):
        check_params(6, 10, 32, 24, 0, task="marker")


def test_the_colour_videos_are_those_of_generator_version_2() -> None:
    # the blink task draws its lamp only for itself: a colour video is unchanged (checksum
    # of generator version 2's video (class 1, index 3, seed 0) at the default size)
    v = render_video(1, 4, 32, 24, np.random.default_rng([0, 1, 3]))
    assert hashlib.sha256(v.tobytes()).hexdigest()[:16] == "5c257f038de3f237"


def test_graded_videos_show_one_to_four_events_and_the_class_first() -> None:
    rng = np.random.default_rng(11)
    palette = dict(COLOURS)
    used = [name for name, _ in COLOURS[:4]]
    counts = []
    for c, first in enumerate(class_colours(4)):
        for _ in range(12):
            v = render_video(c, 4, 32, 24, rng, events="graded")
            times = {name: ts for name in used if (ts := _flash_times(v, palette[name]))}
            assert first in times  # the class colour always flashes, and first
            assert min((ts[0], name) for name, ts in times.items())[1] == first
            counts.append(len(times))
    assert set(counts) == {1, 2, 3, 4}
    # motion videos: graded too, the class's mover still first
    m = render_video(0, 4, 32, 24, np.random.default_rng(3), task="motion", events="graded")
    assert m.shape == (32, 24, 24, 3)


def test_graded_folders_are_recorded_and_not_mixed_with_all(tmp_path: Path) -> None:
    out = ensure_synthetic(tmp_path / "g", classes=2, videos_per_class=3, frames=8, size=16,
                           events="graded", workers=1)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["params"]["events"] == "graded"
    with pytest.raises(SynthError):
        ensure_synthetic(out, classes=2, videos_per_class=3, frames=8, size=16, workers=1)
    with pytest.raises(ValueError, match="--events must be one of all, graded"):
        ensure_synthetic(tmp_path / "h", events="some")
    assert not (tmp_path / "h").exists()
