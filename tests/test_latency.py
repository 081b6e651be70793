"""The measured latency table of the space (supernet/latency.py) and ``attnas cost --space
--latency``: real timings on the CPU, the cache file read back and keyed by the settings."""

from __future__ import annotations

import json

import pytest
import torch

from supernet.app.cli import main as attnas
from supernet.costmodel import SpaceCost
from supernet.latency import space_latency
from supernet.space import OP_NAMES


@pytest.fixture(scope="module")
def shapes() -> list[tuple[int, int, int, int]]:
    return SpaceCost("proxy", clip=(8, 24, 24), position="sincos").shapes


def test_table_is_measured_cached_and_read_back(tmp_path, shapes) -> None:
    cache = tmp_path / "lat.json"
    first = space_latency(shapes, 0.5, 3, position="sincos", repeats=1, warmup=0, cache=cache,
                          blocks=("nonlocal",))
    assert not first.cached
    assert len(first.op_ms) == len(OP_NAMES) and all(v > 0 for v in first.op_ms)
    assert first.fixed_ms > 0 and first.block_ms["nonlocal"] > 0
    assert first.cell_ms(["dot.spatial.softmax"] * 3) == pytest.approx(
        first.fixed_ms + 3 * first.op_ms[OP_NAMES.index("dot.spatial.softmax")])

    # the second call reads the file: a value edited there comes back unchanged
    doc = json.loads(cache.read_text())
    doc["entries"][first.key]["op_ms"][0] = 123.0
    cache.write_text(json.dumps(doc))
    again = space_latency(shapes, 0.5, 3, position="sincos", repeats=1, warmup=0, cache=cache,
                          blocks=("nonlocal",))
    assert again.cached and again.key == first.key
    assert again.op_ms[0] == 123.0 and again.op_ms[1:] == first.op_ms[1:]

    # other settings are another key: measured, and both entries kept in the file
    narrow = space_latency(shapes, 0.25, 3, position="sincos", repeats=1, warmup=0,
                           cache=cache, blocks=("nonlocal",))
    assert not narrow.cached and narrow.key != first.key
    assert set(json.loads(cache.read_text())["entries"]) == {first.key, narrow.key}


def test_unreadable_cache_is_replaced(tmp_path, shapes, capsys) -> None:
    cache = tmp_path / "lat.json"
    cache.write_text("{not json")
    table = space_latency(shapes, 0.5, 3, repeats=1, warmup=0, cache=cache)
    assert not table.cached
    assert capsys.readouterr().err.count("replacing it") == 1  # said once, not again on write
    assert table.key in json.loads(cache.read_text())["entries"]


def test_bad_device_and_counts_are_refused(shapes) -> None:
    with pytest.raises(ValueError, match="repeats"):
        space_latency(shapes, repeats=0, cache="")
    with pytest.raises(ValueError, match="cpu or cuda"):
        space_latency(shapes, device="meta", cache="")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            space_latency(shapes, device="cuda", cache="")


def test_cli_prints_a_latency_column_and_says_where_it_came_from(tmp_path, capsys) -> None:
    cache = tmp_path / "lat.json"
    argv = ["cost", "--backbone", "proxy", "--frames", "8", "--space", "--latency",
            "--repeats", "1", "--warmup", "0", "--latency-cache", str(cache)]
    assert attnas(argv) == 0
    out = capsys.readouterr().out
    assert "latency (ms)" in out and "measured now" in out
    rows = [ln for ln in out.splitlines() if ln.strip().startswith(("map.", "dot."))]
    assert len(rows) == len(OP_NAMES)
    assert all(float(ln.split()[-1]) > 0 for ln in rows)  # MMACs, params, latency
    nl = next(ln for ln in out.splitlines() if ln.startswith("block nonlocal "))
    assert len(nl.split()) == 5  # name, MMACs, params and a latency
    assert attnas(argv) == 0
    assert "from the cache" in capsys.readouterr().out


def test_cli_without_cuda_refuses_the_cuda_device(capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    code = attnas(["cost", "--backbone", "proxy", "--space", "--latency", "--device", "cuda",
                   "--latency-cache", ""])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no CUDA device" in err[0]
