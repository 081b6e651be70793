"""The genotype format: derive -> save -> load -> build, and clear errors for bad files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from derive.genotype import (
    FORMAT,
    VERSION,
    Genotype,
    GenotypeError,
    load_genotype,
    random_genotype,
    save_genotype,
)
from supernet import __version__
from supernet.cells import ArchParameters, FixedCell, NodeSpec
from supernet.space import OP_NAMES, POSITIONS

NODES = [
    NodeSpec("dot.spatiotemporal.softmax", 0),
    NodeSpec("map.temporal.sigmoid", 1),
    NodeSpec("dot.spatial.relu", 0),
]


def valid_doc() -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "nodes": [{"op": nd.op, "input": nd.input} for nd in NODES],
        "cell": {"inner_ratio": 0.5, "kv_pool": True, "position_encoding": "none",
                 "num_nodes": 3},
        "provenance": {"run": "runs/test", "epoch": 2},
    }


def test_a_file_with_the_old_position_key_loads_and_is_written_with_the_new_one(
        tmp_path: Path) -> None:
    """``cell.position`` was the positional encoding's key before the rename."""
    doc = valid_doc()
    doc["cell"] = {"inner_ratio": 0.5, "kv_pool": True, "position": "sincos", "num_nodes": 3}
    genotype = load_genotype(write_doc(tmp_path, doc))
    assert genotype.position == "sincos"
    assert genotype.to_dict()["cell"] == {"inner_ratio": 0.5, "kv_pool": True,
                                          "position_encoding": "sincos", "num_nodes": 3}
    doc["cell"]["position_encoding"] = "none"
    with pytest.raises(GenotypeError, match="both 'position' .* and 'position_encoding'"):
        load_genotype(write_doc(tmp_path, doc, "both.json"))


def write_doc(tmp_path: Path, doc, name: str = "cell.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("position,kv_pool", [("none", True), ("coords", False)])
def test_derive_save_load_build_round_trip(tmp_path, position, kv_pool):
    arch = ArchParameters(num_nodes=3)
    arch.set_one_hot(NODES)
    genotype = Genotype.from_arch(arch, inner_ratio=0.5, kv_pool=kv_pool, position=position,
                                  provenance={"run": "r1", "epoch": 7, "dataset": "synth",
                                              "seed": 3})
    assert genotype.nodes == NODES
    path = save_genotype(genotype, tmp_path / "sub" / "cell.json")
    assert [p.name for p in path.parent.iterdir()] == ["cell.json"]  # no temp file left

    loaded = load_genotype(path)
    assert loaded == genotype
    assert loaded.nodes == NODES and all(isinstance(nd, NodeSpec) for nd in loaded.nodes)
    assert loaded.provenance["epoch"] == 7 and loaded.provenance["dataset"] == "synth"
    assert loaded.provenance["package_version"] == __version__
    assert len(loaded.provenance["alpha_softmax"]) == 3
    assert len(loaded.provenance["alpha_softmax"][0]) == len(OP_NAMES)
    assert loaded.provenance["beta_softmax"][1] == pytest.approx([0.0, 1.0, 0.0])

    channels = 8
    torch.manual_seed(0)
    built = loaded.build(channels)
    reference = FixedCell(channels, NODES, inner_ratio=0.5, kv_pool=kv_pool, position=position)
    assert isinstance(built, FixedCell)
    built_sd, ref_sd = built.state_dict(), reference.state_dict()
    assert list(built_sd) == list(ref_sd)
    assert {k: v.shape for k, v in built_sd.items()} == {k: v.shape for k, v in ref_sd.items()}

    # Same weights -> same outputs (BN gamma made non-zero so the cell is not the identity).
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0, 0.3)
    built.load_state_dict(reference.state_dict())
    built.eval()
    reference.eval()
    x = torch.randn(2, channels, 4, 6, 6)
    with torch.no_grad():
        out = built(x)
        assert torch.equal(out, reference(x))
        assert not torch.allclose(out, x)


def test_cell_kwargs_and_document_layout():
    genotype = Genotype(list(NODES), inner_ratio=0.25, kv_pool=False, position="sincos")
    assert genotype.cell_kwargs() == {"nodes": NODES, "inner_ratio": 0.25, "kv_pool": False,
                                      "position": "sincos"}
    doc = genotype.to_dict()
    assert doc["format"] == "attnas-genotype" and doc["version"] == 1
    assert doc["nodes"][1] == {"op": "map.temporal.sigmoid", "input": 1}
    assert doc["cell"] == {"inner_ratio": 0.25, "kv_pool": False,
                           "position_encoding": "sincos", "num_nodes": 3}
    assert Genotype.from_dict(json.loads(genotype.to_json())) == genotype
    assert FixedCell(16, **genotype.cell_kwargs()).inner == 4


def test_constructor_accepts_pairs_and_dicts_and_converts_tensors():
    genotype = Genotype([("dot.temporal.softmax", 0), {"op": "map.spatial.relu", "input": 0}],
                        provenance={"alpha": torch.tensor([[0.25, 0.75]]), "path": Path("a")})
    assert genotype.nodes == [NodeSpec("dot.temporal.softmax", 0), NodeSpec("map.spatial.relu", 0)]
    doc = genotype.to_dict()
    assert doc["provenance"] == {"alpha": [[0.25, 0.75]], "path": "a"}
    json.dumps(doc)


def test_from_arch_one_hot_gives_those_nodes():
    nodes = [NodeSpec("map.spatiotemporal.identity", 0), NodeSpec("dot.temporal.sigmoid", 0),
             NodeSpec("dot.spatial.softmax", 2), NodeSpec("map.spatial.softmax", 3)]
    arch = ArchParameters(num_nodes=4)
    arch.set_one_hot(nodes)
    genotype = Genotype.from_arch(arch, inner_ratio=0.5, kv_pool=True, position="coords")
    assert genotype.nodes == nodes
    assert genotype.position == "coords" and genotype.num_nodes == 4
    prov = genotype.provenance
    assert prov["alpha_columns"] == list(OP_NAMES)
    assert prov["alpha_softmax"][2][OP_NAMES.index("dot.spatial.softmax")] == pytest.approx(1.0)
    assert prov["beta_softmax"][3] == pytest.approx([0.0, 0.0, 0.0, 1.0])
    assert "created" in prov and prov["package_version"] == __version__
    # Caller's provenance is kept and wins.
    again = Genotype.from_arch(arch, provenance={"epoch": 3, "created": "then"})
    assert again.provenance["epoch"] == 3 and again.provenance["created"] == "then"


def test_summary_is_one_line_per_node():
    genotype = Genotype(list(NODES), provenance={"run": "r", "epoch": 4, "dataset": None})
    text = genotype.summary()
    assert "node 0: dot.spatiotemporal.softmax <- input" in text
    assert "node 1: map.temporal.sigmoid" in text and text.split("\n")[2].endswith("<- node 0")
    assert "node 2: dot.spatial.relu" in text
    assert "run r, epoch 4" in text and "dataset" not in text
    assert str(genotype) == text


# ----------------------------------------------------------------------------- random search


def test_random_genotype_deterministic_and_valid():
    assert random_genotype(5, seed=11) == random_genotype(5, seed=11)
    drawn = {tuple(random_genotype(4, seed=s).nodes) for s in range(20)}
    assert len(drawn) > 15
    for seed in range(50):
        genotype = random_genotype(6, seed=seed, position="coords")
        assert genotype.num_nodes == 6 and genotype.position == "coords"
        for k, nd in enumerate(genotype.nodes):
            assert nd.op in OP_NAMES and 0 <= nd.input <= k
        assert Genotype.from_dict(genotype.to_dict()) == genotype
    ops = {nd.op for s in range(60) for nd in random_genotype(8, seed=s).nodes}
    assert ops == set(OP_NAMES)  # every op is reachable
    genotype = random_genotype(3)
    seed = genotype.provenance["seed"]
    assert genotype.provenance["kind"] == "random"
    assert random_genotype(3, seed=seed).nodes == genotype.nodes
    random_genotype(2, seed=0).build(8)(torch.randn(1, 8, 2, 4, 4))
    with pytest.raises(GenotypeError, match="num_nodes"):
        random_genotype(0)


# ----------------------------------------------------------------------------- bad input


def _mutate(path: str, value=None, delete: bool = False):
    def apply(doc: dict) -> dict:
        doc = copy.deepcopy(doc)
        keys = path.split("/")
        target = doc
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = int(keys[-1]) if isinstance(target, list) else keys[-1]
        if delete:
            del target[last]
        else:
            target[last] = value
        return doc
    return apply


BAD_DOCS = {
    "unknown op": (_mutate("nodes/1/op", "map.temporal.sigmod"),
                   "cell.json: nodes[1].op = 'map.temporal.sigmod' is not an operation of the "
                   "search space; did you mean 'map.temporal.sigmoid'?"),
    "op with slashes": (_mutate("nodes/0/op", "dot/spatiotemporal/softmax"),
                        "did you mean 'dot.spatiotemporal.softmax'?"),
    "foreign op": (_mutate("nodes/0/op", "nonlocal"),
                   "nodes[0].op = 'nonlocal' is not an operation of the search space ("
                   "expected 'family.dimension.activation'"),
    "op not a string": (_mutate("nodes/0/op", 3), "nodes[0].op = 3 must be a string"),
    "input out of range": (_mutate("nodes/1/input", 5),
                           "cell.json: nodes[1].input = 5 is out of range "
                           "(node 1 may read 0..1)"),
    "negative input": (_mutate("nodes/0/input", -1),
                       "nodes[0].input = -1 is out of range (node 0 may read 0..0)"),
    "input not int": (_mutate("nodes/2/input", "0"), "nodes[2].input = '0' must be an integer"),
    "input bool": (_mutate("nodes/2/input", True), "nodes[2].input = True must be an integer"),
    "missing input": (_mutate("nodes/2/input", delete=True),
                      "cell.json: missing field 'nodes[2].input'"),
    "unknown node field": (_mutate("nodes/0/in", 0), "unknown field 'nodes[0].in'"),
    "node not object": (_mutate("nodes/0", "dot.spatial.softmax"),
                        "nodes[0] must be an object"),
    "empty nodes": (_mutate("nodes", []), "nodes is empty"),
    "nodes not list": (_mutate("nodes", {}), "nodes must be an array, got object"),
    "missing nodes": (_mutate("nodes", delete=True), "cell.json: missing field 'nodes'"),
    "wrong version": (_mutate("version", 2),
                      "cell.json: unsupported genotype version 2 (written by a newer attnas?); "
                      "this attnas reads version 1"),
    "old version": (_mutate("version", 0), "unsupported genotype version 0;"),
    "version string": (_mutate("version", "1"), "version = '1' must be an integer"),
    "missing version": (_mutate("version", delete=True), "cell.json: missing field 'version'"),
    "wrong format": (_mutate("format", "darts-genotype"),
                     "cell.json: not an attnas genotype (format = 'darts-genotype', "
                     "expected 'attnas-genotype')"),
    "missing format": (_mutate("format", delete=True), "not an attnas genotype (no \"format\""),
    "missing cell": (_mutate("cell", delete=True), "cell.json: missing field 'cell'"),
    "cell not object": (_mutate("cell", [0.5]), "cell must be an object, got array"),
    "missing cell field": (_mutate("cell/kv_pool", delete=True),
                           "cell.json: missing field 'cell.kv_pool'"),
    "unknown cell field": (_mutate("cell/kv_pol", True), "unknown field 'cell.kv_pol'"),
    "kv_pool not bool": (_mutate("cell/kv_pool", "yes"),
                         "cell.kv_pool = 'yes' must be true or false, got string"),
    "inner_ratio string": (_mutate("cell/inner_ratio", "0.5"),
                           "cell.inner_ratio = '0.5' must be a number"),
    "inner_ratio range": (_mutate("cell/inner_ratio", 0), "cell.inner_ratio = 0 is out of range"),
    "unknown position": (_mutate("cell/position_encoding", "learned"),
                         "cell.position_encoding = 'learned' is not a position encoding (accepted: "
                         + ", ".join(POSITIONS)),
    "num_nodes disagrees": (_mutate("cell/num_nodes", 4),
                            "cell.json: cell.num_nodes = 4 disagrees with the node list (3 nodes)"),
    "num_nodes float": (_mutate("cell/num_nodes", 3.0), "cell.num_nodes = 3.0 must be an integer"),
    "unknown top field": (_mutate("genes", []), "unknown field 'genes'"),
    "provenance not object": (_mutate("provenance", "r1"),
                              "provenance must be an object, got string"),
}


@pytest.mark.parametrize("name", list(BAD_DOCS))
def test_malformed_documents_are_rejected_with_a_specific_message(tmp_path, name):
    mutate, expected = BAD_DOCS[name]
    path = write_doc(tmp_path, mutate(valid_doc()))
    with pytest.raises(GenotypeError) as info:
        load_genotype(path)
    message = str(info.value)
    assert expected in message, message
    assert message.startswith(str(path)), message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_the_valid_document_loads(tmp_path):
    genotype = load_genotype(write_doc(tmp_path, valid_doc()))
    assert genotype.nodes == NODES and genotype.provenance == {"run": "runs/test", "epoch": 2}
    doc = valid_doc()
    del doc["provenance"]  # provenance is optional
    assert Genotype.from_dict(doc).provenance == {}


@pytest.mark.parametrize("content,expected", [
    ('{\n  "format": "attnas-genotype",\n  "version": 1,\n}\n',
     "invalid JSON at line 4, column 1"),
    ("", "empty file"),
    ("[1, 2]", "not an attnas genotype (expected a JSON object"),
    ('{"name": "my-package", "version": "1.0.0"}',
     "not an attnas genotype (no \"format\" field"),
    ('{"format": "attnas-genotype", "version": 1, "x": NaN}', "NaN is not valid JSON"),
])
def test_bad_json_files(tmp_path, content, expected):
    path = write_doc(tmp_path, content)
    with pytest.raises(GenotypeError, match=None) as info:
        load_genotype(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_missing_file_directory_and_binary(tmp_path):
    with pytest.raises(GenotypeError, match="nope.json: no such genotype file"):
        load_genotype(tmp_path / "nope.json")
    with pytest.raises(GenotypeError, match="is a directory"):
        load_genotype(tmp_path)
    binary = tmp_path / "model.ckpt"
    binary.write_bytes(b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19.")
    with pytest.raises(GenotypeError, match="model.ckpt: not a text file"):
        load_genotype(binary)


def test_constructor_validates_too():
    with pytest.raises(GenotypeError, match=r"nodes\[1\].input = 2 is out of range"):
        Genotype([("dot.spatial.softmax", 0), ("dot.spatial.softmax", 2)])
    with pytest.raises(GenotypeError, match="position = 'abs'"):
        Genotype(list(NODES), position="abs")
    with pytest.raises(GenotypeError, match="cannot be stored"):
        Genotype(list(NODES), provenance={"x": object()}).to_dict()
    with pytest.raises(GenotypeError, match="not a finite number"):
        Genotype(list(NODES), provenance={"loss": float("nan")}).to_json()


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "cell.json"
    save_genotype(random_genotype(2, seed=0), path)
    second = random_genotype(4, seed=1)
    save_genotype(second, path)
    assert load_genotype(path) == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.json"]
    assert json.loads(path.read_text())["cell"]["num_nodes"] == 4


def test_supernet_builds_a_genotype_file_without_importing_derive(tmp_path) -> None:
    """No import circle: the genotype format lives in supernet; derive re-exports it."""
    import subprocess
    import sys

    from derive.genotype import random_genotype as derive_random
    from supernet.genotype import random_genotype

    assert derive_random is random_genotype
    path = save_genotype(random_genotype(2, 0), tmp_path / "cell.json")
    code = ("import sys; from supernet.factory import create_backbone; "
            "import supernet.retrain, supernet.search; "
            f"create_backbone('proxy', 2, block={str(path)!r}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'derive'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
