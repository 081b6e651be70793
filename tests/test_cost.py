"""Cost counting: I3D-R50 MACs, attention counted on CPU and meta, the ``attnas cost`` CLI."""

from __future__ import annotations

import json

import pytest
import torch

from supernet import create_backbone, create_block
from supernet.app.cost_cli import main, parse_positions
from supernet.cost import count_flops, model_cost

pytestmark = pytest.mark.usefixtures("one_thread")


def test_i3d_r50_macs_match_the_reference() -> None:
    res = model_cost("i3d_r50", "none", "none", frames=8, size=224, latency=False)
    assert res["params"] == 28_043_472
    assert abs(res["macs"] / 28.41e9 - 1) < 0.01
    assert res["flops"] == 2 * res["macs"]
    nl = model_cost("i3d_r50", "nonlocal", None, frames=8, size=224, latency=False)
    assert nl["params"] == 35_401_936 and nl["block_params"] == 7_358_464
    assert abs(nl["macs"] / 36.54e9 - 1) < 0.01
    small = model_cost("i3d_r50", "none", "none", frames=8, size=112, latency=False)
    assert abs(small["macs"] / 7.35e9 - 1) < 0.01


def test_attention_is_counted_on_cpu_and_meta() -> None:
    """CPU runs the flash SDPA kernel (unknown to FlopCounterMode), meta the math path:
    both must give the analytic count: 4 1x1x1 convs + 2 matmuls of L x Lk x d."""
    c, t, h, w = 32, 4, 8, 6
    d, length, lk = c // 2, t * h * w, t * (h // 2) * (w // 2)
    # theta on L positions, phi and g on Lk, W_z on L; then theta.phi^T and A.g
    expected = (2 * length * c * d + 2 * lk * c * d) + 2 * length * lk * d
    block = create_block("nonlocal", c)
    with torch.device("meta"):
        meta_block = create_block("nonlocal", c)
    assert count_flops(block, (1, c, t, h, w))["macs"] == expected
    assert count_flops(meta_block, (1, c, t, h, w))["macs"] == expected
    # and inside a backbone, the counts agree between devices
    model = create_backbone("proxy", 5, block="nonlocal")
    with torch.device("meta"):
        meta_model = create_backbone("proxy", 5, block="nonlocal")
    shape = (1, 3, 8, 32, 32)
    assert count_flops(model, shape)["macs"] == count_flops(meta_model, shape)["macs"]


def test_search_cell_cost_falls_back_to_cpu() -> None:
    res = model_cost("proxy", "search", frames=4, size=32, num_classes=5, latency=False)
    none = model_cost("proxy", "none", frames=4, size=32, num_classes=5, latency=False)
    assert res["macs"] > none["macs"] and res["block_params"] > 0


def test_cli_json_parses(capsys) -> None:
    code = main(["--backbone", "proxy", "--block", "nonlocal", "--frames", "4", "--size", "32",
                 "--num-classes", "5", "--repeats", "1", "--warmup", "0", "--json",
                 "--positions", "res3=1", "res4=0,1"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert {"params", "macs", "flops", "latency_ms"} <= set(res)
    assert res["positions"] == {"res3": [1], "res4": [0, 1]}
    assert res["flops"] == 2 * res["macs"] and res["latency_ms"] > 0


def test_cli_human_output_through_attnas(capsys) -> None:
    from supernet.app.cli import main as attnas

    assert attnas(["cost", "--backbone", "i3d_r50", "--block", "nonlocal", "--no-latency"]) == 0
    out = capsys.readouterr().out
    assert "35,401,936" in out and "36.54 G" in out


@pytest.mark.parametrize("argv, match", [
    (["--block", "nl"], "unknown block 'nl'; accepted: none, nonlocal, nonlocal_dot, a2"),
    (["--block", "nonlocal", "--positions", "res3=1,4"], "res3 has 4 blocks"),
    (["--positions", "res3=a"], "indices of res3 must be integers"),
    (["--backbone", "r3d"], "accepted: i3d_r50, proxy"),
    (["--frames", "0"], "frames must be a positive integer"),
    (["--frames", "eight"], "invalid int value"),
    (["--block-kwargs", "{bad"], "not valid JSON"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, match, capsys) -> None:
    assert main([*argv, "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("attnas cost: error:")
    assert match in err


def test_parse_positions() -> None:
    assert parse_positions(None) is None
    assert parse_positions(["10blocks"]) == "10blocks"
    assert parse_positions(["res3=1,3", "res4="]) == {"res3": [1, 3], "res4": []}
