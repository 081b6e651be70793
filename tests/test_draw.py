"""Pictures of a cell, of the architecture weights and of a selection, and the
architecture CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from derive.draw import (
    arch_csv_header,
    draw_cell,
    plot_alpha,
    read_arch_csv,
    write_arch_csv_row,
)
from derive.genotype import Genotype, random_genotype
from supernet.cells import ArchParameters, NodeSpec
from supernet.space import FACTORS, NUM_OPS, OP_NAMES, factor_marginals


def check_png(path: Path, min_bytes: int = 10_000) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > min_bytes
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert image.std() > 0.05  # not a blank canvas
    return image


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("num_nodes", [1, 5])
def test_draw_cell_writes_a_png(tmp_path, num_nodes):
    genotype = random_genotype(num_nodes, seed=3, position="coords")
    path = draw_cell(genotype, tmp_path / "cell.png")
    assert path == tmp_path / "cell.png"
    image = check_png(path)
    assert image.shape[1] > image.shape[0]  # a left-to-right flow
    assert no_temp_files(tmp_path)


def test_draw_cell_chain_of_eight_and_other_formats(tmp_path):
    chain = Genotype([NodeSpec("dot.spatiotemporal.softmax", k) for k in range(8)],
                     provenance={"run": "r", "epoch": 3})
    image = check_png(draw_cell(chain, tmp_path / "chain.png", title="a chain"))
    assert image.shape[1] <= 20 * 150 + 1 and image.shape[0] <= 14 * 150 + 1  # capped size
    svg = draw_cell(chain, tmp_path / "chain.svg")
    assert svg.read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match="cannot write a .docx picture"):
        draw_cell(chain, tmp_path / "chain.docx")
    assert no_temp_files(tmp_path)


def _three_epochs(path: Path, num_nodes: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    torch.manual_seed(0)
    arch = ArchParameters(num_nodes)
    written = []
    for epoch in range(3):
        with torch.no_grad():
            arch.alpha += torch.randn_like(arch.alpha)
            arch.beta += torch.randn_like(arch.beta)
        ops, ins = arch.op_weights().detach(), arch.input_weights().detach()
        write_arch_csv_row(path, epoch, ops, ins)
        written.append((ops.numpy(), ins.numpy()))
    return written


def test_arch_csv_format_and_round_trip(tmp_path):
    path = tmp_path / "arch.csv"
    written = _three_epochs(path)
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    assert header == arch_csv_header(3)
    assert header[0] == "epoch" and header[1] == f"alpha.0.{OP_NAMES[0]}"
    assert header[1 + 3 * NUM_OPS:1 + 3 * NUM_OPS + 6] == [
        "beta.0.0", "beta.1.0", "beta.1.1", "beta.2.0", "beta.2.1", "beta.2.2"]
    assert header[1 + 3 * NUM_OPS + 6:1 + 3 * NUM_OPS + 6 + 9] == [
        "family.0.map", "family.0.dot", "dimension.0.spatial", "dimension.0.temporal",
        "dimension.0.spatiotemporal", "activation.0.softmax", "activation.0.sigmoid",
        "activation.0.relu", "activation.0.identity"]
    assert len(header) == 1 + 3 * NUM_OPS + 6 + 3 * 9
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    records = read_arch_csv(path)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    for rec, (ops, ins) in zip(records, written):
        np.testing.assert_allclose(rec["alpha"], ops, atol=1e-6)
        np.testing.assert_allclose(rec["beta"], ins, atol=1e-6)
        np.testing.assert_allclose(rec["alpha"].sum(1), 1.0, atol=1e-4)
        for factor, values in FACTORS.items():
            assert rec["marginals"][factor].shape == (3, len(values))
            np.testing.assert_allclose(rec["marginals"][factor],
                                       factor_marginals(ops)[factor], atol=1e-5)
    assert no_temp_files(tmp_path)


def _marginal_columns(path: Path) -> dict[str, np.ndarray]:
    """``{"family": (E, K, 2), ...}`` straight from the CSV's marginal columns."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    K = 1 + max(int(c.split(".")[1]) for c in rows[0] if c.startswith("alpha."))
    return {f: np.array([[[float(r[f"{f}.{k}.{v}"]) for v in values] for k in range(K)]
                         for r in rows]) for f, values in FACTORS.items()}


def test_arch_csv_marginal_columns_sum_to_one_and_match_alpha(tmp_path):
    path = tmp_path / "arch.csv"
    written = _three_epochs(path)
    stored = _marginal_columns(path)
    for factor, values in FACTORS.items():
        assert stored[factor].shape == (3, 3, len(values))
        np.testing.assert_allclose(stored[factor].sum(-1), 1.0, atol=1e-5)
        for e, (ops, _) in enumerate(written):
            np.testing.assert_allclose(stored[factor][e], factor_marginals(ops)[factor],
                                       atol=1e-5)
    # A peaked node: all weight on one op gives one-hot marginals.
    peaked = np.zeros((1, NUM_OPS))
    peaked[0, OP_NAMES.index("dot.temporal.sigmoid")] = 1.0
    write_arch_csv_row(tmp_path / "p.csv", 0, peaked, np.eye(1))
    one = _marginal_columns(tmp_path / "p.csv")
    assert one["family"][0, 0].tolist() == [0.0, 1.0]
    assert one["dimension"][0, 0].tolist() == [0.0, 1.0, 0.0]
    assert one["activation"][0, 0].tolist() == [0.0, 1.0, 0.0, 0.0]


def _old_format(path: Path, num_nodes: int = 2, epochs: int = 3) -> list[np.ndarray]:
    """An architecture CSV as written before the marginal columns existed."""
    rng = np.random.default_rng(1)
    header = arch_csv_header(num_nodes, marginals=False)
    assert not any(c.startswith(("family.", "activation.")) for c in header)
    alphas, lines = [], [",".join(header)]
    for epoch in range(epochs):
        a = rng.dirichlet(np.ones(NUM_OPS), size=num_nodes)
        b = np.tril(np.ones((num_nodes, num_nodes)))
        b /= b.sum(1, keepdims=True)
        alphas.append(a)
        lines.append(",".join([str(epoch)] + [f"{v:.6g}" for v in a.reshape(-1)]
                              + [f"{b[k, j]:.6g}" for k in range(num_nodes)
                                 for j in range(k + 1)]))
    path.write_text("\n".join(lines) + "\n")
    return alphas


def test_read_old_format_arch_csv_recomputes_marginals(tmp_path):
    path = tmp_path / "old.csv"
    alphas = _old_format(path)
    records = read_arch_csv(path)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    for rec, a in zip(records, alphas):
        np.testing.assert_allclose(rec["alpha"], a, atol=1e-5)
        for factor in FACTORS:
            np.testing.assert_allclose(rec["marginals"][factor].sum(1), 1.0, atol=1e-5)
            np.testing.assert_allclose(rec["marginals"][factor], factor_marginals(a)[factor],
                                       atol=1e-5)
    check_png(plot_alpha(path, tmp_path / "old.png"))


def test_stored_marginals_are_ignored_on_read(tmp_path):
    path = tmp_path / "arch.csv"
    _three_epochs(path, num_nodes=1)
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    col = rows[0].index("family.0.map")
    rows[1][col] = "0.999"  # a hand-edited (wrong) derived value
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    rec = read_arch_csv(path)[0]
    np.testing.assert_allclose(rec["marginals"]["family"].sum(1), 1.0, atol=1e-5)
    assert rec["marginals"]["family"][0, 0] != pytest.approx(0.999)
    bad = tmp_path / "bad.csv"
    bad.write_text(path.read_text().replace("family.0.map", "family.0.mop", 1))
    with pytest.raises(ValueError, match="unknown family 'mop' in column 'family.0.mop'"):
        read_arch_csv(bad)


def test_appending_to_old_format_csv_upgrades_it_atomically(tmp_path):
    path = tmp_path / "old.csv"
    alphas = _old_format(path, num_nodes=2, epochs=3)
    # Resume from epoch 1: epoch 2 of the old file is dropped, epoch 2 written anew.
    new = np.full((2, NUM_OPS), 1 / NUM_OPS)
    write_arch_csv_row(path, 2, new, np.tril(np.ones((2, 2))) / np.array([[1], [2]]))
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == arch_csv_header(2)
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert all(len(r) == len(rows[0]) for r in rows[1:])
    records = read_arch_csv(path)
    for rec, a in zip(records[:2], alphas[:2]):
        np.testing.assert_allclose(rec["alpha"], a, atol=1e-5)
    np.testing.assert_allclose(records[2]["alpha"], 1 / NUM_OPS, atol=1e-6)
    stored = _marginal_columns(path)
    for factor in FACTORS:
        np.testing.assert_allclose(stored[factor].sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(stored[factor][0], factor_marginals(alphas[0])[factor],
                                   atol=1e-5)
    assert no_temp_files(tmp_path)
    # An old file of another K still refuses (and is left untouched).
    other = tmp_path / "other.csv"
    _old_format(other, num_nodes=3, epochs=1)
    before = other.read_text()
    with pytest.raises(ValueError, match="different columns"):
        write_arch_csv_row(other, 1, new, np.eye(2))
    assert other.read_text() == before


def test_arch_csv_resume_rewrites_later_epochs_and_rejects_other_shapes(tmp_path):
    path = tmp_path / "arch.csv"
    _three_epochs(path)
    # A search resumed from the end of epoch 0 writes epoch 1 again: epochs >= 1 are dropped.
    write_arch_csv_row(path, 1, np.full((3, NUM_OPS), 1 / NUM_OPS), np.tril(np.ones((3, 3))) / 3)
    records = read_arch_csv(path)
    assert [r["epoch"] for r in records] == [0, 1]
    np.testing.assert_allclose(records[1]["alpha"], 1 / NUM_OPS, atol=1e-6)
    with pytest.raises(ValueError, match="different columns"):
        write_arch_csv_row(path, 2, np.full((2, NUM_OPS), 1 / NUM_OPS), np.eye(2))
    with pytest.raises(ValueError, match=r"op_weights must be \(K, 24\)"):
        write_arch_csv_row(tmp_path / "b.csv", 0, np.ones((3, 5)), np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        write_arch_csv_row(tmp_path / "b.csv", 0, np.full((1, NUM_OPS), np.nan), np.eye(1))
    with pytest.raises(ValueError, match="epoch"):
        write_arch_csv_row(tmp_path / "b.csv", -1, np.ones((1, NUM_OPS)), np.eye(1))
    assert not (tmp_path / "b.csv").exists()


def test_plot_alpha_from_csv(tmp_path):
    csv_path = tmp_path / "arch.csv"
    _three_epochs(csv_path, num_nodes=3)
    image = check_png(plot_alpha(csv_path, tmp_path / "alpha.png"))
    assert image.shape[0] > 800  # 24 op rows need room
    plot_alpha(str(csv_path), tmp_path / "alpha_str.png")
    assert no_temp_files(tmp_path)


def test_plot_alpha_from_dicts(tmp_path):
    rng = np.random.default_rng(0)
    history = []
    for epoch in range(4):
        logits = rng.normal(size=(5, NUM_OPS))
        alpha = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        beta = np.tril(np.ones((5, 5)))
        history.append({"epoch": epoch, "alpha": alpha, "beta": beta / beta.sum(1, keepdims=True)})
    check_png(plot_alpha(history, tmp_path / "alpha.png"))
    # Flat dicts keyed like the CSV columns work as well (only one epoch here).
    flat = {"epoch": 0, **{f"alpha.0.{op}": 1 / NUM_OPS for op in OP_NAMES}, "beta.0.0": 1.0}
    check_png(plot_alpha([flat], tmp_path / "one.png"))


def test_plot_alpha_bad_history(tmp_path):
    with pytest.raises(ValueError, match="no epochs"):
        plot_alpha([], tmp_path / "a.png")
    with pytest.raises(ValueError, match="no such architecture CSV"):
        plot_alpha(tmp_path / "missing.csv", tmp_path / "a.png")
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,alpha.0.dot.spatial.softmx\n0,1.0\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 2: unknown operation 'dot.spatial.so"):
        plot_alpha(bad, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_selection_picture_of_a_real_selection(tmp_path):
    """``plot_selection`` draws every decision of a real perturb selection (and of argmax);
    a record without decisions is refused, nothing written."""
    import torch

    from derive.draw import plot_selection
    from derive.select import SelectionData, select_cell
    from supernet.factory import create_backbone

    torch.manual_seed(0)
    model = create_backbone("proxy", 2, block="search",
                            block_kwargs={"num_nodes": 2, "inner_ratio": 0.5},
                            widths=[8, 16, 32], depths=[1, 1, 1], stem_width=8)
    video = torch.randn(4, 3, 4, 16, 16)
    data = SelectionData(val=[(video, torch.tensor([0, 1, 0, 1]))], calib=[video])
    for rule in ("perturb", "argmax"):
        record = select_cell(model, rule, data).to_dict()
        path = check_png(plot_selection(record, tmp_path / f"{rule}.png", title=rule))
        assert path.ndim == 3
    with pytest.raises(ValueError, match="without decisions"):
        plot_selection({"rule": "perturb", "decisions": []}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists() and no_temp_files(tmp_path)
