"""PyAV decoding on real files: clips equal a full decode, seeking, short and broken files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from videos import (
    CODECS,
    frame_index,
    pattern_frame,
    truncate,
    write_audio_only,
    write_pattern_video,
)

from datamodules.datasets import (
    BrokenVideoWarning,
    TooManyBrokenVideosError,
    VideoClipDataset,
    VideoRecord,
)
from datamodules.decode import DecodeError, VideoReader, decode_all, probe, read_frames
from datamodules.sampling import clip_indices, uniform_clip_starts

N = 40  # frames of the pattern videos (keyframe every 8)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("codecs")
    return {k: str(write_pattern_video(d / f"v{CODECS[k][2]}", N, k)) for k in CODECS}


@pytest.mark.parametrize("kind", list(CODECS))
def test_header_and_full_decode(videos: dict[str, str], kind: str) -> None:
    info = probe(videos[kind])
    assert (info.num_frames, info.width, info.height) == (N, 64, 48)
    assert info.fps == pytest.approx(25.0)
    full = decode_all(videos[kind])
    assert full.shape == (N, 48, 64, 3) and full.dtype == np.uint8
    # the decoder returns frame i at position i (read back from the picture itself)
    assert [frame_index(f, N) for f in full] == list(range(N))
    assert np.abs(full[7].astype(int) - pattern_frame(7)).mean() < 3  # codec tolerance


@pytest.mark.parametrize("kind", list(CODECS))
def test_rgb_conversion_on_one_thread_equals_pyavs_default(videos: dict[str, str],
                                                          kind: str) -> None:
    """frame_to_rgb (one swscale thread, the fast path) gives PyAV's own RGB bit for bit."""
    import av

    from datamodules.decode import frame_to_rgb

    with av.open(videos[kind]) as c:
        for frame in c.decode(video=0):
            ours, theirs = frame_to_rgb(frame), frame.to_ndarray(format="rgb24")
            assert ours.shape == (48, 64, 3) and np.array_equal(ours, theirs)


@pytest.mark.parametrize("kind", list(CODECS))
def test_clip_equals_full_decode_at_start_middle_end(videos: dict[str, str], kind: str
                                                     ) -> None:
    full = decode_all(videos[kind])
    with VideoReader(videos[kind]) as r:
        span = 7 * 2 + 1  # 8 frames at sampling rate 2
        for start in (0, 9, (N - span) // 2, 17, N - span):  # start, off-keyframe, end
            idx = clip_indices(start, 8, 2, N)
            clip = r.get_frames(idx)
            assert clip.shape == (8, 48, 64, 3)
            np.testing.assert_array_equal(clip, full[idx])
        # arbitrary order and repeats, same reader (seeks backwards)
        idx = [N - 1, 3, 3, 20]
        np.testing.assert_array_equal(r.get_frames(idx), full[idx])


def test_uniform_clips_cover_the_video(videos: dict[str, str]) -> None:
    starts = uniform_clip_starts(N, 15, 3)
    assert starts == [4, 12, 21] and starts[-1] + 15 <= N
    full = decode_all(videos["h264-mp4"])
    for s in starts:
        idx = clip_indices(s, 8, 2, N)
        np.testing.assert_array_equal(read_frames(videos["h264-mp4"], idx), full[idx])


@pytest.mark.parametrize("kind", ["h264-mp4", "vp9-webm"])
def test_shorter_than_clip_repeats_last_frame(tmp_path, kind: str) -> None:
    path = write_pattern_video(tmp_path / f"short{CODECS[kind][2]}", 5, kind)
    ds = VideoClipDataset([VideoRecord(str(path), 0)], num_frames=8, sampling_rate=2,
                          sampler="random")
    x = ds[0]["video"]
    assert x.shape == (3, 8, 48, 64)
    frames = (x.permute(1, 2, 3, 0) * 255).round().to(torch.uint8).numpy()
    got = [frame_index(f, 5) for f in frames]
    assert got == [0, 2, 4, 4, 4, 4, 4, 4]  # clamped: the last frame repeats (no loop)


# ------------------------------------------------------------------------ broken files
def _broken(tmp_path) -> dict[str, str]:
    out = {}
    out["zero-byte"] = tmp_path / "zero.mp4"
    out["zero-byte"].write_bytes(b"")
    out["not-a-video"] = tmp_path / "notes.mp4"
    out["not-a-video"].write_text("this is not a video\n" * 50)
    out["random-bytes"] = tmp_path / "noise.avi"
    out["random-bytes"].write_bytes(np.random.default_rng(0).bytes(20000))
    out["truncated-mp4"] = truncate(write_pattern_video(tmp_path / "cut.mp4", N), 0.5)
    out["truncated-avi"] = truncate(write_pattern_video(tmp_path / "cut.avi", N, "mpeg4-avi"),
                                    0.5)
    out["no-video-stream"] = write_audio_only(tmp_path / "audio.mp4")
    out["missing"] = tmp_path / "missing.mp4"
    return {k: str(v) for k, v in out.items()}


def test_each_broken_kind_raises_decode_error_naming_the_file(tmp_path) -> None:
    for kind, path in _broken(tmp_path).items():
        with pytest.raises(DecodeError, match=path.split("/")[-1]):
            read_frames(path, [0, 1])
        assert kind  # (for the failure message)


@pytest.mark.parametrize("kind", ["h264-mp4", "vp9-webm", "h264-mkv"])
def test_truncated_tail_fails_only_past_the_cut(tmp_path, kind: str) -> None:
    # moov/cues first (faststart) so the header survives the cut; frames past it are gone
    path = write_pattern_video(tmp_path / f"t{CODECS[kind][2]}", N, kind, faststart=True)
    truncate(path, 0.5)
    assert read_frames(path, [0, 1, 2]).shape == (3, 48, 64, 3)
    with pytest.raises(DecodeError, match="truncated|no frame decodable"):
        read_frames(path, [N - 1])


def test_dataset_skips_broken_files_keeps_batch_full_and_counts(tmp_path) -> None:
    good = [write_pattern_video(tmp_path / f"g{i}.mp4", 12) for i in range(8)]
    bad = _broken(tmp_path)
    recs = [VideoRecord(str(p), i % 2) for i, p in enumerate(good)]
    recs += [VideoRecord(p, 0) for p in bad.values()]
    ds = VideoClipDataset(recs, num_frames=4, sampler="uniform", max_fail_fraction=0.5,
                          name="train")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
    assert len(items) == len(recs)  # every index gives a clip (a replacement if broken)
    assert all(it["video"].shape == (3, 4, 48, 64) for it in items)
    assert all(int(it["video_index"]) < len(good) for it in items[len(good):])
    assert ds.failed_count() == len(bad)
    assert sorted(ds.failed_paths()) == sorted(bad.values())
    msgs = [str(w.message) for w in caught if issubclass(w.category, BrokenVideoWarning)]
    for path in bad.values():
        assert any(path in m for m in msgs), path
    # a known-bad file is not retried (no new warning)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        ds[len(good)]
    assert not [w for w in again if issubclass(w.category, BrokenVideoWarning)]


def test_too_many_broken_files_is_one_clear_error(tmp_path) -> None:
    good = write_pattern_video(tmp_path / "g.mp4", 12)
    bad = _broken(tmp_path)
    recs = [VideoRecord(str(good), 0)] + [VideoRecord(p, 0) for p in bad.values()]
    ds = VideoClipDataset(recs, num_frames=4, max_fail_fraction=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TooManyBrokenVideosError, match="max_fail_fraction=0.2") as e:
            for i in range(len(ds)):
                ds[i]
    assert bad["zero-byte"] in str(e.value) or bad["not-a-video"] in str(e.value)


def test_failure_count_is_shared_with_dataloader_workers(tmp_path) -> None:
    good = [write_pattern_video(tmp_path / f"g{i}.mp4", 12) for i in range(6)]
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    recs = [VideoRecord(str(p), 0) for p in good] + [VideoRecord(str(zero), 0)]
    ds = VideoClipDataset(recs, num_frames=4, sampler="uniform", max_fail_fraction=0.5)
    loader = torch.utils.data.DataLoader(ds, batch_size=7, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (batch,) = list(loader)
    assert batch["video"].shape == (7, 3, 4, 48, 64)  # full batch despite the bad file
    assert ds.failed_count() == 1 and ds.failed_paths() == [str(zero)]
