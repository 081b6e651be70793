"""Clip samplers, the search split, multi-view testing, transforms and the clip cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from videos import write_pattern_video

from datamodules.cache import ClipCache
from datamodules.datasets import (
    VideoClipDataset,
    VideoRecord,
    split_in_two,
    stratified_order,
)
from datamodules.sampling import (
    clip_indices,
    clip_span,
    random_clip_start,
    uniform_clip_starts,
)
from datamodules.transforms import (
    EvalTransform,
    TrainTransform,
    center_crop,
    short_side_resize,
    three_crop,
    to_float,
)


def test_clip_indices_and_starts() -> None:
    assert clip_span(16, 4) == 61
    np.testing.assert_array_equal(clip_indices(3, 4, 2, 100), [3, 5, 7, 9])
    np.testing.assert_array_equal(clip_indices(0, 4, 3, 5), [0, 3, 4, 4])  # clamped
    assert uniform_clip_starts(10, 20, 3) == [0, 0, 0]  # short video
    assert uniform_clip_starts(100, 61, 1) == [20]  # the centre clip
    g = torch.Generator().manual_seed(0)
    starts = {random_clip_start(100, 61, g) for _ in range(200)}
    assert min(starts) >= 0 and max(starts) <= 39 and len(starts) > 20
    assert random_clip_start(30, 61) == 0


@pytest.mark.parametrize("n,classes", [(100, 4), (7, 1), (33, 3)])
def test_search_split_is_disjoint_covering_stratified_and_seeded(n: int, classes: int) -> None:
    labels = [i % classes for i in range(n)]
    a, b = split_in_two(labels, seed=3)
    assert not set(a) & set(b)
    assert sorted(a + b) == list(range(n))
    assert abs(len(a) - len(b)) <= classes
    for c in range(classes):
        ca = sum(labels[i] == c for i in a)
        cb = sum(labels[i] == c for i in b)
        assert abs(ca - cb) <= 1
    assert split_in_two(labels, seed=3) == (a, b)
    assert split_in_two(labels, seed=4) != (a, b)


@pytest.mark.parametrize("counts", [(225, 225, 225, 225), (10, 3, 1), (5,)])
def test_stratified_order_interleaves_the_classes_of_a_sorted_list(counts: tuple) -> None:
    labels = [c for c, n in enumerate(counts) for _ in range(n)]  # sorted by class
    order = stratified_order(labels, seed=0)
    assert sorted(order) == list(range(len(labels)))
    # every prefix holds each class in proportion to its size (within one item)
    for k in range(1, len(order) + 1):
        seen = [labels[i] for i in order[:k]]
        for c, n in enumerate(counts):
            assert abs(seen.count(c) - k * n / len(labels)) <= 1.0 + 1e-9, (k, c)
    assert stratified_order(labels, seed=0) == order
    if max(counts) > 3:
        assert stratified_order(labels, seed=1) != order  # shuffled within each class


@pytest.fixture(scope="module")
def three_videos(tmp_path_factory: pytest.TempPathFactory) -> list[VideoRecord]:
    d = tmp_path_factory.mktemp("views")
    return [VideoRecord(str(write_pattern_video(d / f"v{i}.mp4", 20 + 10 * i, width=80,
                                                height=48)), i) for i in range(3)]


def test_multi_view_dataset_yields_clips_times_crops_per_video(three_videos) -> None:
    ds = VideoClipDataset(three_videos, num_frames=4, sampling_rate=2, sampler="uniform",
                          clips_per_video=2, crops_per_clip=3,
                          transform=EvalTransform(48, num_crops=3, mean=(0, 0, 0),
                                                  std=(1, 1, 1)))
    assert len(ds) == 3 * 2 * 3
    loader = torch.utils.data.DataLoader(ds, batch_size=5, shuffle=False)
    batches = list(loader)
    vi = torch.cat([b["video_index"] for b in batches])
    labels = torch.cat([b["label"] for b in batches])
    assert vi.tolist() == [v for v in range(3) for _ in range(6)]
    assert labels.tolist() == vi.tolist()
    videos = torch.cat([b["video"] for b in batches])
    assert videos.shape == (18, 3, 4, 48, 48) and videos.dtype == torch.float32
    # temporal clips: video 0 has 20 frames, a clip spans 7 -> uniform starts 3 and 10
    # (the grey level of pattern frame i is 5 * i)
    starts = [round(float(videos[k, 0, 0].median()) * 255 / 5) for k in (0, 3)]
    assert starts == uniform_clip_starts(20, 7, 2) == [3, 10]
    # the three crops of one clip differ (left / centre / right of an 80-px-wide frame)
    assert not torch.equal(videos[0], videos[1]) and not torch.equal(videos[1], videos[2])


def test_transforms_shapes_and_values() -> None:
    clip = torch.randint(0, 256, (4, 40, 60, 3), dtype=torch.uint8)
    x = to_float(clip)
    assert x.shape == (3, 4, 40, 60) and 0 <= x.min() and x.max() <= 1
    assert short_side_resize(x, 20).shape == (3, 4, 20, 30)
    assert center_crop(x, 40).shape == (3, 4, 40, 40)
    crops = [three_crop(x, 40, i) for i in range(3)]
    torch.testing.assert_close(crops[0], x[..., :40, :40])
    torch.testing.assert_close(crops[2], x[..., :40, 20:])
    torch.manual_seed(0)
    y = TrainTransform(32, 36, 48)(clip.numpy())
    assert y.shape == (3, 4, 32, 32)
    z = EvalTransform(32, 40, num_crops=3)(clip, 2)
    assert z.shape == (3, 4, 32, 32)
    with pytest.raises(ValueError, match="crop"):
        center_crop(x, 41)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_clip_cache_returns_the_decoded_clip(three_videos, tmp_path, mode: str) -> None:
    cache = ClipCache(mode, tmp_path / "cache")
    ds = VideoClipDataset(three_videos, num_frames=4, sampler="uniform", cache=cache)
    first = [ds[i]["video"] for i in range(3)]
    assert cache.misses == 3 and cache.hits == 0
    again = [ds[i]["video"] for i in range(3)]
    assert cache.hits == 3
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)
    if mode == "disk":
        assert len(list((tmp_path / "cache").glob("*.npy"))) == 3
        fresh = VideoClipDataset(three_videos, num_frames=4, sampler="uniform",
                                 cache=ClipCache("disk", tmp_path / "cache"))
        torch.testing.assert_close(fresh[1]["video"], first[1])
        assert fresh.cache.hits == 1
