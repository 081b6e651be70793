"""attnas-bench: the table built, resumed, queried and refused through the real CLI on a
tiny variant of the tasks (real H.264 videos, real training, seconds per run)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.table.cells import cell_key, one_node_cells, parse_cell, sample_cells
from benchmarks.table.cli import main
from benchmarks.table.leaderboard import method_rows, random_search
from benchmarks.table.protocol import (
    Protocol,
    RunRecord,
    _fixed_prefix,
    _forward,
    _prefix_forward,
    _train,
    build_model,
    clips_to_tensor,
    prefix_features,
    split_point,
    train_cell,
)
from benchmarks.table.report import _across_tasks, best_one_node, discrimination_lines
from benchmarks.table.store import Table, TableError, read_setup
from benchmarks.table.study import main as study_main
from benchmarks.table.study import paired_difference, seed_effects, still_learning
from benchmarks.table.tasks import TASKS, load_task_data, task_folder
from supernet.app.cli import main as attnas
from supernet.genotype import load_genotype, random_genotype

TINY = ["--videos-per-class", "6", "--frames", "8", "--size", "16", "--steps", "3",
        "--prefix-steps", "2"]
CELLS = ["none", "nonlocal_sincos", "dot.temporal.softmax~0+map.spatial.sigmoid~1",
         "map.temporal.relu~0+dot.spatial.softmax~0"]
PROXY = '{"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}'


def _build(root: Path, data: Path, task: str, *extra: str) -> list[str]:
    return ["build", "--task", task, "--root", str(root), "--data-root", str(data), *TINY,
            *extra]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("table")
    root, data = base / "table", base / "data"
    for task in ("colour", "blink"):
        assert main(_build(root, data, task, "--cells", *CELLS, "--seeds", "0", "1")) == 0
    return root, data


def _rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_build_stores_every_run_of_two_tasks(built: tuple[Path, Path]) -> None:
    root, _ = built
    for task in ("colour", "blink"):
        rows = _rows(root / f"{task}.csv")
        assert sorted((r["key"], int(r["seed"])) for r in rows) == sorted(
            (parse_cell(c).key, s) for c in CELLS for s in (0, 1))
        assert len({r["protocol"] for r in rows}) == 1
        assert all(0.0 <= float(r["test_acc"]) <= 1.0 and int(r["params"]) > 0 for r in rows)
    setup = json.loads((root / "protocol.json").read_text())
    assert setup["protocol"]["steps"] == 3
    assert set(setup["tasks"]) == {"colour", "blink"}


def test_resumed_build_runs_only_what_is_missing(built: tuple[Path, Path],
                                                 capsys: pytest.CaptureFixture) -> None:
    root, data = built
    before = _rows(root / "colour.csv")
    assert main(_build(root, data, "colour", "--cells", *CELLS, "--seeds", "0", "1")) == 0
    assert "0 to run" in capsys.readouterr().out
    assert _rows(root / "colour.csv") == before
    assert main(_build(root, data, "colour", "--cells", "none", "--seeds", "0", "1", "2")) == 0
    out = capsys.readouterr().out
    assert "2 of 3 runs stored, 1 to run" in out
    after = _rows(root / "colour.csv")
    assert len(after) == len(before) + 1
    assert [r for r in after if r in before] == before  # stored runs untouched


def test_query_returns_what_build_stored(built: tuple[Path, Path],
                                         capsys: pytest.CaptureFixture) -> None:
    root, _ = built
    cell = CELLS[2]
    assert main(["query", cell, "--task", "blink", "--root", str(root), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    rows = [r for r in _rows(root / "blink.csv") if r["key"] == cell]
    accs = [100 * float(r["test_acc"]) for r in rows]
    assert got["n"] == 2 and got["seeds"] == [0, 1]
    assert got["test_mean"] == pytest.approx(sum(accs) / 2)
    assert got["nodes"] == 2
    table = Table.load("blink", root)
    assert table.query(cell).test_mean == pytest.approx(got["test_mean"])
    assert main(["query", "nonlocal_sincos", "--task", "blink", "--root", str(root)]) == 0
    assert "nonlocal_sincos on blink: test" in capsys.readouterr().out


def test_a_cell_not_in_the_table_is_refused(built: tuple[Path, Path],
                                            capsys: pytest.CaptureFixture) -> None:
    root, _ = built
    assert main(["query", "map.temporal.relu~0", "--task", "colour", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not in the 'colour' table" in err and "--cells" in err


def test_the_fingerprint_follows_the_protocol() -> None:
    p = Protocol()
    assert p.fingerprint() == Protocol().fingerprint()
    assert replace(p, lr=p.lr * 2).fingerprint() != p.fingerprint()
    assert p.longer(2).fingerprint() != p.fingerprint()
    assert replace(p, eval_batch=7).fingerprint() == p.fingerprint()  # no effect on numbers
    assert TASKS["colour"].fingerprint() != TASKS["blink"].fingerprint()


def test_a_c2d_protocol_mixes_frames_only_in_its_cells() -> None:
    v2 = Protocol(steps=800, warmup_steps=80, stem_kernel=(3, 3, 3),
                  block_temporal_kernel=None, prefix_steps=0)
    assert v2.fingerprint() == "1a716ae7dfb5"  # tables built before the field still load
    # and a protocol file written before the fields existed reads as what it was
    assert read_setup(Path("benchmarks/results/table_study/v2"))[0] == v2
    c2d = replace(v2, stem_kernel=(1, 3, 3), block_temporal_kernel=1)
    assert c2d.fingerprint() != v2.fingerprint()
    assert c2d.prefix_fingerprint() != v2.prefix_fingerprint()
    # the convolutions see 2 frames (the temporal max-pool), the default proxy 10
    assert build_model(parse_cell("none"), 4, c2d).receptive_field()[0] == 2
    assert build_model(parse_cell("none"), 4, v2).receptive_field()[0] > 2
    # so a frame's features do not depend on the other frames
    model = build_model(parse_cell("none"), 4, c2d).eval()
    x = torch.randn(1, 3, 8, 24, 24)
    y = x.clone()
    y[:, :, 6:] = torch.randn(1, 3, 2, 24, 24)
    with torch.no_grad():
        a, b = model.features_before(x, "res4"), model.features_before(y, "res4")
    assert torch.equal(a[:, :, :3], b[:, :, :3]) and not torch.equal(a[:, :, 3], b[:, :, 3])


def test_a_stale_table_is_refused_not_mixed(built: tuple[Path, Path],
                                            capsys: pytest.CaptureFixture) -> None:
    root, data = built
    before = (root / "colour.csv").read_text()
    argv = _build(root, data, "colour", "--cells", "none")
    argv[argv.index("--steps") + 1] = "4"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "another --root" in err or "never mixes" in err
    assert (root / "colour.csv").read_text() == before
    with pytest.raises(TableError, match="never mixes protocols"):
        Table.load("colour", root, replace(Table.load("colour", root).protocol, steps=4))


@pytest.mark.parametrize("argv, message", [
    (["build", "--task", "nope"], "unknown task 'nope'"),
    (["build", "--task", "colour", "--cells", "dot.sideways.softmax~0"], "outside the space"),
    (["build", "--task", "colour", "--cells", "dot.spatial.softmax"], "is not 'op~input'"),
    (["query", "none", "--task", "nope"], "unknown task 'nope'"),
    (["build", "--task", "colour", "--steps", "0"], "--steps must be >= 1"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, argv: list[str],
                                                  message: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "t"
    assert main([*argv, "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
    assert not root.exists()


def test_an_unreachable_ray_address_writes_nothing(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    worker = pytest.importorskip("ray.util.client.worker")
    monkeypatch.setattr(worker, "INITIAL_TIMEOUT_SEC", 1)  # a closed port: fail in seconds
    root, data = tmp_path / "t", tmp_path / "d"
    argv = _build(root, data, "colour", "--cells", "none", "--address", "ray://127.0.0.1:1")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot start or reach Ray" in err and "\n" not in err
    assert not root.exists() and not data.exists()


def test_cell_keys_round_trip() -> None:
    g = random_genotype(3, seed=4, position="sincos")
    assert parse_cell(cell_key(g)).genotype.nodes == g.nodes
    other = random_genotype(3, seed=4, position="none", inner_ratio=0.25)
    key = cell_key(other)
    assert key.endswith(";position=none;inner_ratio=0.25")
    assert parse_cell(key).genotype.inner_ratio == 0.25
    assert len({c.key for c in one_node_cells()}) == 24
    sample = sample_cells(30, 3, seed=1)
    assert [c.key for c in sample] == [c.key for c in sample_cells(30, 3, seed=1)]
    assert len({c.key for c in sample}) == 30


def test_one_run_is_deterministic_for_its_seed(built: tuple[Path, Path]) -> None:
    _, data = built
    task = Table.load("colour", built[0]).variant
    d = load_task_data(task, data)
    p = replace(Protocol(), steps=4, warmup_steps=1, prefix_steps=2, calib_clips=16)
    a, b = (train_cell(parse_cell("nonlocal_sincos"), d, p, seed=3) for _ in range(2))
    assert a._replace(wall_s=0) == b._replace(wall_s=0)


def test_percentile_counts_the_three_node_cells() -> None:
    t = Table("colour", Protocol())
    ref = [10.0, 20.0, 30.0, 40.0]
    assert t.percentile(25.0, ref) == 50.0
    assert t.percentile(30.0, ref) == 62.5
    assert t.percentile(5.0, ref) == 0.0


@pytest.fixture(scope="module")
def supernet_ckpt(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("search")
    root, data = built
    folder = task_folder(Table.load("colour", root).variant, data)
    assert attnas(["search", "fit", f"--data.root={folder}", "--data.num_frames=8",
                   "--data.crop_size=16", "--data.batch_size=4", "--data.num_workers=0",
                   "--data.search=true", f"--model.backbone_kwargs={PROXY}",
                   "--model.num_nodes=2", "--model.position=sincos", "--trainer.max_epochs=1",
                   "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                   "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={out}",
                   f"--trainer.logger.init_args.save_dir={out}"]) == 0
    return sorted(out.glob("search/version_*/checkpoints/last.ckpt"))[-1]


def test_score_supernet_ranks_the_tabled_cells(built: tuple[Path, Path], supernet_ckpt: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    root, data = built
    argv = ["score-supernet", str(supernet_ckpt), "--task", "colour", "--root", str(root),
            "--data-root", str(data), "--val-batches", "1", "--calib-batches", "1",
            "--batch-size", "4"]
    assert main([*argv, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    two_node = sorted(parse_cell(c).key for c in CELLS if parse_cell(c).num_nodes == 2)
    assert sorted(c["key"] for c in got["cells"]) == two_node
    assert got["n"] == 2
    table = Table.load("colour", root)
    for c in got["cells"]:
        assert c["table_test"] == pytest.approx(table.query(c["key"]).test_mean)
    losses = [c["oneshot_loss"] for c in got["cells"]]
    assert all(v > 0 for v in losses) and losses[0] != losses[1]
    assert main(argv) == 0
    assert "Kendall tau" in capsys.readouterr().out


def test_score_supernet_refuses_what_it_cannot_score(built: tuple[Path, Path],
                                                     supernet_ckpt: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    root, data = built
    base = ["--root", str(root), "--data-root", str(data)]
    assert main(["score-supernet", str(supernet_ckpt), "--task", "motion", *base]) == 2
    assert "no table for task 'motion'" in capsys.readouterr().err
    notckpt = tmp_path / "x.ckpt"
    notckpt.write_text("hello")
    assert main(["score-supernet", str(notckpt), "--task", "colour", *base]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a readable PyTorch checkpoint" in err


def test_random_search_at_equal_cost_is_a_deterministic_lookup(built: tuple[Path, Path]
                                                               ) -> None:
    table = Table.load("colour", built[0])
    rows = [dict(r) for r in table.rows]
    for i, key in enumerate(["dot.spatial.softmax~0+map.temporal.relu~0+dot.temporal.relu~1",
                             "map.spatial.softmax~0+dot.spatial.relu~1+map.temporal.relu~2",
                             "dot.temporal.softmax~0+dot.temporal.softmax~1+map.spatial.relu~0"]):
        for seed in (0, 1):  # a made-up table of three cells: the best by val is the best
            rows.append({**rows[0], "key": key, "nodes": 3, "seed": seed,
                         "val_acc": 0.3 + 0.2 * i, "test_acc": 0.3 + 0.2 * i})
    made = Table("colour", table.protocol, rows, variant=table.variant)
    a, b = random_search(made, 3, repeats=50, seed=1), random_search(made, 3, 50, seed=1)
    assert a == b and a.test_mean == pytest.approx(70.0) and a.test_std == 0.0
    assert a.percentile_mean == pytest.approx(100 * 2.5 / 3)
    c = random_search(made, 1, repeats=300, seed=2)
    assert 30.0 < c.test_mean < 70.0 and c.test_std > 0
    with pytest.raises(ValueError, match="needs at least"):
        random_search(made, 4)


def test_leaderboard_through_the_cli(built: tuple[Path, Path],
                                     capsys: pytest.CaptureFixture) -> None:
    root, _ = built
    assert main(["leaderboard", "--task", "colour", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "| method | test % | percentile | regret | search wall |" in out
    assert "| optimal: `" in out and "uniform_perturb_sincos_5ep (round 2)" in out
    assert main(["leaderboard", "--task", "colour", "--root", str(root), "--repeats", "0"]) == 2


def test_a_filed_search_joins_the_leaderboard(built: tuple[Path, Path], supernet_ckpt: Path,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    root, _ = built
    genotype = supernet_ckpt.parents[1] / "genotype.json"
    folder = tmp_path / "searches"
    argv = ["add-search", str(genotype), "--task", "colour", "--method", "tiny_search",
            "--seed", "0", "--wall-s", "12.5", "--searches", str(folder)]
    assert main(argv) == 0
    filed = folder / "colour" / "tiny_search__s0.json"
    assert load_genotype(filed).provenance["wall_s"] == 12.5
    rows = {r.method: r for r in method_rows(Table.load("colour", root), searches=folder)}
    assert rows["tiny_search"].wall_s == 12.5
    assert rows["tiny_search"].cells == [parse_cell(load_genotype(genotype)).key]
    assert main([*argv[:5], "bad name", *argv[6:]]) == 2
    assert "plain name" in capsys.readouterr().err


def test_report_draws_every_task(built: tuple[Path, Path]) -> None:
    root, _ = built
    assert main(["report", "--root", str(root)]) == 0
    text = (root / "README.md").read_text()
    assert "## Task `colour`" in text and "## Task `blink`" in text
    assert (root / "colour.png").stat().st_size > 10_000


def test_the_fixed_prefix_is_computed_once_and_shared_by_every_run(
        built: tuple[Path, Path]) -> None:
    root, data = built
    d = load_task_data(Table.load("colour", root).variant, data)
    p = replace(Protocol(), steps=3, warmup_steps=1, calib_clips=16, prefix_steps=0)
    feats = prefix_features(d, p)
    files = sorted(Path(d.folder).glob(f"prefix_{p.prefix_fingerprint()}_*.npy"))
    stamps = [f.stat().st_mtime_ns for f in files]
    assert len(files) == 3 and feats["train"].dtype == np.float16
    assert feats["test"].shape[0] == len(d.y_test)
    # what is stored is the prefix network's output on the clips
    with torch.no_grad():
        want = _fixed_prefix(p, d.x_train).features_before(
            clips_to_tensor(d.x_val, np.arange(4), p.frame_step), p.train_from)
    assert torch.allclose(torch.from_numpy(feats["val"][:4].astype(np.float32)), want,
                          atol=2e-2, rtol=1e-2)
    prefix_features(d, p)  # a second use reads the files
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert replace(p, prefix_seed=1).prefix_fingerprint() != p.prefix_fingerprint()
    assert replace(p, steps=9).prefix_fingerprint() == p.prefix_fingerprint()
    # training the whole network (no prefix) is still a protocol
    whole = replace(p, train_from="stem")
    assert not whole.frozen and whole.fingerprint() != p.fingerprint()
    record = train_cell(parse_cell("none"), d, whole, seed=0)
    assert 0.0 <= record.test_acc <= 1.0
    with pytest.raises(ValueError, match="no stage 'res9'"):
        train_cell(parse_cell("none"), d, replace(p, train_from="res9"), seed=0)


def test_a_trained_prefix_is_trained_once_from_its_seed_and_stamps_its_recipe(
        built: tuple[Path, Path]) -> None:
    root, data = built
    d = load_task_data(Table.load("colour", root).variant, data)
    drawn = replace(Protocol(), steps=3, warmup_steps=1, calib_clips=16, prefix_steps=0)
    trained = replace(drawn, prefix_steps=4)
    # the recipe that trains the prefix is part of its fingerprint; the cells' steps are not
    assert trained.prefix_fingerprint() != drawn.prefix_fingerprint()
    assert replace(trained, lr=1e-3).prefix_fingerprint() != trained.prefix_fingerprint()
    assert replace(drawn, lr=1e-3).prefix_fingerprint() == drawn.prefix_fingerprint()
    assert replace(trained, steps=9).prefix_fingerprint() == trained.prefix_fingerprint()
    # a longer recipe for the cells trains them on the same prefix
    assert trained.longer(3).prefix_fingerprint() == trained.prefix_fingerprint()
    assert trained.longer(3).fingerprint() != trained.fingerprint()
    clips = clips_to_tensor(d.x_val, np.arange(4), drawn.frame_step)
    with torch.no_grad():
        a = _fixed_prefix(trained, d.x_train, d.y_train).features_before(clips, "res3")
        b = _fixed_prefix(trained, d.x_train, d.y_train).features_before(clips, "res3")
        c = _fixed_prefix(drawn, d.x_train).features_before(clips, "res3")
    assert torch.equal(a, b)  # deterministic from prefix_seed
    assert not torch.allclose(a, c)  # training moved the weights away from the draw
    with pytest.raises(ValueError, match="needs the labels"):
        _fixed_prefix(trained, d.x_train)
    feats = prefix_features(d, trained)
    assert torch.allclose(torch.from_numpy(feats["val"][:4].astype(np.float32)), a,
                          atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("key", ["none", "nonlocal", "dot.temporal.softmax~0"])
def test_training_from_the_cells_freezes_what_comes_before_the_first_cell(key: str) -> None:
    p = replace(Protocol(), steps=4, warmup_steps=1, batch_size=4, train_from="cells")
    assert split_point(p) == ("res3", 0) and p.frozen
    torch.manual_seed(0)
    model = build_model(parse_cell(key), 4, p)
    clips = torch.randn(6, 3, 16, 24, 24)
    labels = np.arange(6) % 4
    model.eval()
    with torch.no_grad():  # the two halves are the whole network, with or without a cell
        feats = _prefix_forward(model, clips, p)
        assert feats.shape == (6, p.widths[1], 8, 6, 6)
        assert torch.allclose(_forward(model, feats, p), model(clips), atol=1e-5)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    _train(model, lambda index: feats[np.sort(index)], labels, p, seed=0)
    after = model.state_dict()
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert not any(n.startswith(("stem.", "stages.res2.", "stages.res3.blocks.")) for n in moved)
    assert any(n.startswith("stages.res4.") for n in moved)
    if key != "none":
        assert any(n.startswith("stages.res3.inserted.") for n in moved)


def _fake_table(task: str, accs: dict[str, list[float]]) -> Table:
    table = Table(task, Protocol())
    for key, values in accs.items():
        for seed, acc in enumerate(values):
            table.add(RunRecord(key, seed, acc, acc, 1000, 1000, 1.0, 0, 0.1),
                      parse_cell(key).num_nodes)
    return table


def test_the_report_says_whether_tasks_discriminate_and_differ() -> None:
    colour = _fake_table("colour", {"none": [0.40, 0.42], "dot.temporal.softmax~0": [0.9, 0.92],
                                    "map.spatial.sigmoid~0": [0.5, 0.5]})
    blink = _fake_table("blink", {"none": [0.80, 0.80], "map.spatial.sigmoid~0": [0.99, 0.99],
                                  "dot.temporal.softmax~0": [0.85, 0.85]})
    text = "\n".join(discrimination_lines(colour))
    assert "50.0 points below the best cell" in text and "target ≥ 20: met" in text
    assert "is ≤ 97 %" in text
    text = "\n".join(discrimination_lines(blink))
    assert "not met" in text and "is not ≤ 97 %" in text
    assert best_one_node(blink).key == "map.spatial.sigmoid~0"
    across = "\n".join(_across_tasks([colour, blink]))
    assert "differ in family or dimension" in across and "2 of 24" in across
    assert "a winner may still change" in across  # fewer than the 24 one-node cells tabled
    same = _fake_table("motion", {"dot.temporal.relu~0": [0.7, 0.7]})
    assert "share a family and dimension" in "\n".join(_across_tasks([colour, same]))


def test_seed_luck_shared_by_every_cell_cancels_in_paired_comparisons() -> None:
    luck = {0: 4.0, 1: -1.0, 2: -3.0}
    acc = {"a": {s: 80 + luck[s] for s in luck}, "b": {s: 70 + luck[s] for s in luck},
           "c": {0: 50.0, 1: 52.0, 2: 48.0}}
    effects = seed_effects(acc)
    assert effects[0] > effects[1] > effects[2] and abs(sum(effects.values())) < 1e-9
    mean, se, n = paired_difference(acc["a"], acc["b"])
    assert (mean, se, n) == (10.0, 0.0, 3)  # the luck cancels exactly
    mean, se, n = paired_difference(acc["a"], {0: 1.0})
    assert n == 1 and math.isnan(se)


def test_the_study_of_a_table_is_written_where_asked(built: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    root, _ = built
    out = tmp_path / "study.md"
    assert study_main(["colour", "--root", str(root), "--write", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Seed spread on `colour`" in text and "`nonlocal_sincos`" in text
    assert "### Paired by seed" in text and "seed 0 " in text and "seed 1 " in text
    assert "### Did the runs finish learning?" in text and "at chance" in text
    assert study_main(["colour", "--root", str(tmp_path / "nothing")]) == 2


def test_each_run_stores_its_training_loss_curve_beside_the_table(
        built: tuple[Path, Path]) -> None:
    root, _ = built
    table = Table.load("colour", root)
    curves = table.curves()
    assert set(curves) == table.done()
    for row in table.rows:
        curve = curves[(row["key"], int(row["seed"]))]
        assert len(curve) == 3  # 3 steps: one point a step after the first, and the end
        assert curve[-1] == pytest.approx(float(row["final_loss"]), abs=1e-4)
    # a line cut short by a kill is skipped, the rest still read
    with table.curves_path.open("a") as fh:
        fh.write('{"key": "none", "seed": 9, "loss_cu')
    assert table.curves() == curves


def test_a_run_whose_loss_still_falls_at_the_end_is_still_learning() -> None:
    plateau_then_drop = [1.38] * 12 + [1.2, 1.0, 0.8, 0.6]
    assert still_learning(plateau_then_drop)
    assert not still_learning([1.3, 0.9, 0.6, 0.5] + [0.45] * 12)
    assert not still_learning([1.38] * 16)  # stuck is not learning
    assert not still_learning([0.7])
