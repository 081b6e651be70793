"""VideoDataModule: sources, batches, search mode, multi-view test, errors, DDP shards."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from videos import write_pattern_video

from datamodules import VideoDataModule
from datamodules.synth import class_names, ensure_synthetic

PARAMS = {"classes": 4, "videos_per_class": 8, "frames": 8, "size": 16, "seed": 0}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("dm") / "synth", **PARAMS, workers=1)


def _dm(root: Path | str, **kw) -> VideoDataModule:
    args = dict(root=str(root), num_frames=8, crop_size=16, batch_size=4, num_workers=0)
    args.update(kw)
    return VideoDataModule(**args)


def test_lists_layout_batches_and_classes(synth: Path, tmp_path: Path) -> None:
    dm = _dm(synth)
    assert dm.classes == class_names(4) and dm.num_classes == 4  # before setup
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"video", "label", "video_index"}
    assert batch["video"].shape == (4, 3, 8, 16, 16) and batch["video"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["video_index"].dtype == torch.int64
    val = list(dm.val_dataloader())
    assert sum(len(b["label"]) for b in val) == 4 * 1  # 15 % of 8 per class = 1
    saved = json.loads(dm.save_classes(tmp_path / "run" / "classes.json").read_text())
    assert saved["classes"] == class_names(4) and saved["class_to_idx"][class_names(4)[2]] == 2


def test_synthetic_root_is_generated_in_prepare_data(tmp_path: Path) -> None:
    root = tmp_path / "gen"
    dm = _dm(root, synthetic=True, synthetic_params={**PARAMS, "videos_per_class": 4})
    assert dm.num_classes == 4 and not root.exists()  # known before generation
    dm.prepare_data()
    dm.setup("fit")
    assert (root / "meta.json").is_file() and len(dm.datasets["train"]) == 4 * 3


def test_search_mode_gives_two_disjoint_loaders(synth: Path) -> None:
    dm = _dm(synth, search=True, batch_size=2)
    dm.setup("fit")
    loaders = dm.train_dataloader()
    assert set(loaders) == {"weights", "arch"}
    w = {r.path for r in dm.datasets["weights"].records}
    a = {r.path for r in dm.datasets["arch"].records}
    assert not w & a and w | a == {r.path for r in dm.datasets["train"].records}
    assert len(w) == len(a) == 12
    b = next(iter(loaders["arch"]))
    assert b["video"].shape == (2, 3, 8, 16, 16)
    # seeded: the same split again, another seed another split
    dm2 = _dm(synth, search=True)
    dm2.setup("fit")
    assert {r.path for r in dm2.datasets["weights"].records} == w
    dm3 = _dm(synth, search=True, seed=1)
    dm3.setup("fit")
    assert {r.path for r in dm3.datasets["weights"].records} != w


def test_test_loader_yields_every_view_with_its_video_index(synth: Path) -> None:
    dm = _dm(synth, test_clips=2, test_crops=3, crop_size=12, eval_batch_size=5)
    with pytest.warns(UserWarning, match="use crop_size=16"):  # the synthetic size is 16
        dm.setup("test")
    n = len(dm.datasets["test"].records)
    vi = torch.cat([b["video_index"] for b in dm.test_dataloader()])
    assert vi.tolist() == [v for v in range(n) for _ in range(6)]


def test_first_validation_batch_holds_every_class_of_a_list_sorted_by_class(
        synth: Path, tmp_path: Path) -> None:
    # a validation list sorted by class (as the synthetic benchmark writes it): the first
    # batches -- what limit_val_batches and a selection rule read -- must not be one class
    lines = sorted((f"{synth / ln.split()[0]} {ln.split()[1]}"
                    for ln in (synth / "train.txt").read_text().splitlines()),
                   key=lambda ln: ln.split()[1])
    val = tmp_path / "val_sorted.txt"
    val.write_text("\n".join(lines) + "\n")
    dm = _dm(synth, val_list=str(val), eval_batch_size=4)
    dm.setup("fit")
    first = next(iter(dm.val_dataloader()))
    assert sorted(first["label"].tolist()) == [0, 1, 2, 3]
    labels = torch.cat([b["label"] for b in dm.val_dataloader()])
    assert sorted(labels.tolist()) == sorted(dm.classes.index(ln.split()[1])
                                             for ln in lines)  # every video once


def test_list_files_with_int_labels_prefix_and_csv(tmp_path: Path) -> None:
    vids = tmp_path / "videos"
    vids.mkdir()
    for i in range(6):
        write_pattern_video(vids / f"{i}.avi", 10, "mpeg4-avi", width=32, height=32)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.csv").write_text("path,label\n" + "".join(f"{i}.avi,{i % 3}\n"
                                                              for i in range(4)))
    (lists / "val.csv").write_text("4.avi 2\n# comment\n\n5.avi 0\n")
    dm = _dm(tmp_path, train_list=str(lists / "train.csv"), val_list=str(lists / "val.csv"),
             path_prefix=str(vids), num_frames=4, crop_size=32, batch_size=2)
    assert dm.classes == ["0", "1", "2"]
    dm.setup("fit")
    # (read in a seeded class-interleaved order, not the list's)
    assert sorted((Path(r.path).name, r.label) for r in dm.datasets["val"].records) == \
        [("4.avi", 2), ("5.avi", 0)]
    assert next(iter(dm.train_dataloader()))["video"].shape == (2, 3, 4, 32, 32)


def test_folder_per_class_split(tmp_path: Path) -> None:
    for c in ("jump", "run"):
        (tmp_path / c).mkdir()
        for i in range(10):
            write_pattern_video(tmp_path / c / f"{i}.mp4", 6, width=16, height=16)
    (tmp_path / "run" / "readme.txt").write_text("not a video")
    dm = _dm(tmp_path, num_frames=4, crop_size=16, val_fraction=0.2, test_fraction=0.1)
    assert dm.classes == ["jump", "run"]
    dm.setup(None)
    sizes = {k: len(dm.datasets[k].records) for k in ("train", "val", "test")}
    assert sizes == {"train": 14, "val": 4, "test": 2}
    paths = [set(r.path for r in dm.datasets[k].records) for k in ("train", "val", "test")]
    assert not (paths[0] & paths[1]) and not (paths[0] & paths[2]) and not (paths[1] & paths[2])


def test_clear_errors_at_setup(tmp_path: Path, synth: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _dm(tmp_path / "nowhere").setup("fit")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        _dm(synth, train_list=str(tmp_path / "missing.txt")).setup("fit")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.txt").write_text("a.mp4 cat\nb.mp4 dog\n")
    (bad / "val.txt").write_text("c.mp4 cat\nd.mp4 horse\n")
    with pytest.raises(ValueError, match=r"val.txt:2: unknown label 'horse'"):
        _dm(bad).setup("fit")
    (bad / "val.txt").write_text("c.mp4 cat dog extra\n")
    with pytest.raises(ValueError, match="val.txt:1"):
        _dm(bad).setup("fit")
    with pytest.raises(ValueError, match="test_crops"):
        _dm(synth, test_crops=2)


def test_broken_video_in_list_is_skipped_and_counted(synth: Path, tmp_path: Path) -> None:
    lines = (synth / "train.txt").read_text().splitlines()[:7]
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    lines.append(f"{tmp_path / 'broken.mp4'} {class_names(4)[0]}")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    dm = _dm(synth, train_list=str(tmp_path / "train.txt"), path_prefix=str(synth),
             batch_size=8, drop_last=False,
             max_fail_fraction=0.2)
    with warnings.catch_warnings(record=True) as caught:  # found by the probe at setup
        warnings.simplefilter("always")
        dm.setup("fit")
    assert any("1 of 8 videos in the train set cannot be opened" in str(w.message)
               and "broken.mp4" in str(w.message) for w in caught)
    (batch,) = list(dm.train_dataloader())
    assert batch["video"].shape[0] == 8
    assert dm.failed_count() == 1 and dm.failed_paths() == [str(tmp_path / "broken.mp4")]
    # without the probe, the file is found (and skipped) when it is read
    dm = _dm(synth, train_list=str(tmp_path / "train.txt"), path_prefix=str(synth),
             batch_size=8, drop_last=False, max_fail_fraction=0.2, probe=False)
    dm.setup("fit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (batch,) = list(dm.train_dataloader())
    assert batch["video"].shape[0] == 8 and dm.failed_count() == 1
    assert any("broken.mp4" in str(w.message) for w in caught)


def test_a_split_over_its_broken_fraction_fails_at_setup(synth: Path, tmp_path: Path) -> None:
    from datamodules import TooManyBrokenVideosError

    lines = [f"{synth / ln.split()[0]} {ln.split()[1]}"
             for ln in (synth / "train.txt").read_text().splitlines()[:8]]
    for i in range(2):
        (tmp_path / f"bad{i}.mp4").write_bytes(b"not a video")
        lines.append(f"{tmp_path / f'bad{i}.mp4'} {class_names(4)[0]}")
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    dm = _dm(synth, val_list=str(tmp_path / "val.txt"))
    with pytest.raises(TooManyBrokenVideosError, match=r"2 of 10 videos in the val set cannot "
                                                       r"be opened .*bad0.mp4"):
        dm.setup("fit")


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return self.w * batch["video"].mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_broken_video_monitor_logs_the_count_per_epoch(synth: Path, tmp_path: Path) -> None:
    from datamodules import BrokenVideoMonitor

    lines = (synth / "train.txt").read_text().splitlines()[:7]
    (tmp_path / "bad.mp4").write_text("not a video")
    lines.append(f"{tmp_path / 'bad.mp4'} {class_names(4)[1]}")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    dm = _dm(synth, train_list=str(tmp_path / "train.txt"), path_prefix=str(synth),
             batch_size=4, max_fail_fraction=0.2)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         callbacks=[BrokenVideoMonitor()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(_Tiny(), datamodule=dm)
    assert float(trainer.callback_metrics["data/broken_videos"]) == 1.0


# ---------------------------------------------------------------------------- DDP
class _Recorder(pl.LightningModule):
    """Records which training videos each rank sees in search mode."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[str, list[str]] = {"weights": [], "arch": []}

    def training_step(self, batch, batch_idx):
        dm = self.trainer.datamodule
        for key in ("weights", "arch"):
            recs = dm.datasets[key].records
            self.seen[key] += [recs[i].path for i in batch[key]["video_index"].tolist()]
        return self.w * batch["weights"]["video"].mean()

    def on_train_epoch_end(self) -> None:
        rank = self.trainer.global_rank
        Path(self.out, f"rank{rank}.json").write_text(json.dumps(
            {"world": self.trainer.world_size, **self.seen}))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _ddp_worker(rank: int, port: int, root: str, out: str) -> None:
    """One rank of a 2-process gloo run, launched by the test (Lightning sees LOCAL_RANK
    and joins it instead of launching processes itself)."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                      RANK=str(rank), LOCAL_RANK=str(rank), NODE_RANK="0")
    dm = _dm(root, search=True, batch_size=2)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(_Recorder(out), datamodule=dm)
    torch.distributed.destroy_process_group()


def test_search_mode_under_two_process_ddp_gives_disjoint_shards(synth: Path,
                                                                 tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(port, str(synth), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    for key in ("weights", "arch"):
        a, b = set(ranks[0][key]), set(ranks[1][key])
        assert len(ranks[0][key]) == len(ranks[1][key]) == 6  # 12 videos per half / 2 ranks
        assert len(a) == 6 and not a & b  # each rank its own shard, no overlap
    halves = [set(ranks[0][k]) | set(ranks[1][k]) for k in ("weights", "arch")]
    assert not halves[0] & halves[1]  # the two halves stay disjoint across ranks
