"""The training-strategy and selection-rule registries (one class per file, looked up by
name), the defaults in SearchModule's signature, and old checkpoints: a search checkpoint
saved before the measured defaults moved into the signature (its hparams lack the newer
keys) still loads as what it was trained as, and re-selects."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from repo import REPO

from datamodules import VideoDataModule
from datamodules.synth import ensure_synthetic
from derive.callbacks import reselect
from derive.checkpoint import genotype_from_checkpoint, select_from_checkpoint
from derive.rules import SelectionRule, get_rule, register_rule, rule_names
from derive.rules import base as rules_base
from derive.select import SELECTION_RULES, SelectionData, select_cell
from supernet import configs, strategies
from supernet.cells import NodeSpec
from supernet.hparams import RENAMED_OPTIONS
from supernet.ops import EdgeWeights
from supernet.search import (
    HPARAMS_VERSION,
    LEGACY_DEFAULTS,
    SUPERNET_MODES,
    SearchModule,
    migrate_hparams,
)
from supernet.strategies import Strategy, get_strategy, register_strategy, strategy_names
from supernet.strategies import base as strategies_base

pytestmark = pytest.mark.usefixtures("one_thread")

PROXY = {"widths": [8, 16, 32], "depths": [1, 1, 1], "stem_width": 8}


# ------------------------------------------------------------------------- registries
def test_every_strategy_and_rule_is_a_file_named_after_it() -> None:
    assert strategy_names() == SUPERNET_MODES == ("darts", "single_path", "uniform")
    assert rule_names() == SELECTION_RULES == ("alone", "argmax", "perturb", "perturb_factors")
    for name in strategy_names():
        assert (REPO / "supernet" / "strategies" / f"{name}.py").is_file()
        assert get_strategy(name).name == name
    for name in rule_names():
        assert (REPO / "derive" / "rules" / f"{name}.py").is_file()
        assert get_rule(name).name == name and get_rule(name).score_label


@pytest.mark.parametrize(("lookup", "known"), [
    (get_strategy, "accepted: darts, single_path, uniform"),
    (get_rule, "accepted: alone, argmax, perturb, perturb_factors"),
])
def test_an_unknown_name_is_one_line_listing_the_known_ones(lookup, known: str) -> None:
    with pytest.raises(ValueError) as err:
        lookup("spos")
    assert "'spos'" in str(err.value) and str(err.value).endswith(known)
    assert "\n" not in str(err.value)


def test_a_registered_strategy_is_a_supernet_mode() -> None:
    """What a new file in supernet/strategies/ does: register a class; SearchModule then
    takes its name and calls its hooks (here: alpha learned, no architecture step)."""

    @register_strategy("frozen_mixture_test")
    class Frozen(Strategy):
        trains_arch = True

    try:
        module = SearchModule(num_classes=2, backbone_kwargs=PROXY, num_nodes=2,
                              strategy="frozen_mixture_test")
        assert isinstance(module.supernet_strategy, Frozen) and module.arch.alpha.requires_grad
        checkpoint: dict = {}
        module.supernet_strategy.record(module, checkpoint)
        assert checkpoint["attnas_supernet"] == "frozen_mixture_test"
    finally:
        del strategies_base._REGISTRY["frozen_mixture_test"]
    with pytest.raises(ValueError, match="unknown supernet mode"):
        SearchModule(num_classes=2, strategy="frozen_mixture_test")


def test_a_registered_rule_is_dispatched_by_select_cell() -> None:
    """What a new file in derive/rules/ does: register a class; select_cell runs it."""

    @register_rule("first_test")
    class First(SelectionRule):
        score_label = "none"
        needs_data = False

        def select(self, model, arch, data, allowed_ops, tick):
            nodes = [NodeSpec("dot.temporal.softmax", 0) for _ in range(arch.num_nodes)]
            return nodes, []

    try:
        model = SearchModule(num_classes=2, backbone_kwargs=PROXY, num_nodes=2).model
        sel = select_cell(model, "first_test")
        assert [n.op for n in sel.nodes] == ["dot.temporal.softmax"] * 2
        assert sel.to_dict()["score"] == "none" and sel.clips == 0
    finally:
        del rules_base._REGISTRY["first_test"]


def test_the_documented_rule_file_works_as_written() -> None:
    """docs/search.md's example file, run as derive/rules/alone_ops.py would be."""
    text = (REPO / "docs" / "search.md").read_text()
    code = text.split("derive/rules/alone_ops.py`:\n\n```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 12
    try:
        exec(compile(code.replace("from .base import", "from derive.rules.base import"),
                     "alone_ops.py", "exec"), {"__name__": "derive.rules.alone_ops"})
        model = SearchModule(num_classes=2, backbone_kwargs=PROXY, num_nodes=2).model.eval()
        g = torch.Generator().manual_seed(0)
        val = [(torch.randn(4, 3, 8, 16, 16, generator=g), torch.tensor([0, 1, 0, 1]))]
        sel = select_cell(model, "alone_ops", SelectionData(val=val, calib=[], bn="batch"))
        ops, inputs = sel.decisions[0], sel.decisions[3]
        assert ops.what == "op" and all(v <= 0 for v in ops.scores.values())  # minus a loss
        assert inputs.what == "input" and set(inputs.scores) == {"input", "node 0"}
        assert sel.to_dict()["score"].startswith("minus validation loss when alone")
    finally:
        rules_base._REGISTRY.pop("alone_ops", None)


def test_the_packages_import_every_module_they_hold() -> None:
    """Adding a file is all it takes: every module of the two packages is registered."""
    for folder, names in ((Path(strategies.__file__).parent, strategy_names()),
                          (Path(rules_base.__file__).parent, rule_names())):
        assert set(names) == {p.stem for p in folder.glob("*.py")
                              if p.stem not in ("__init__", "base")}


# ------------------------------------------------------------------ defaults, one place
def test_the_signature_carries_the_measured_defaults_and_configs_only_what_differs() -> None:
    defaults = {k: p.default for k, p in inspect.signature(SearchModule.__init__).parameters
                .items() if p.default is not inspect.Parameter.empty}
    assert {k: defaults[k] for k in ("strategy", "select", "position_encoding", "optimizer",
                                     "lr", "lr_min", "select_bn")} == {
        "strategy": "uniform", "select": "perturb", "position_encoding": "sincos",
        "optimizer": "adamw", "lr": 0.002, "lr_min": 2e-5, "select_bn": "batch"}
    # every setting has a legacy meaning (the old names of renamed ones are aliases)
    assert set(LEGACY_DEFAULTS) == set(defaults) - set(RENAMED_OPTIONS)
    for name in ("synthetic", "kinetics400_proxy", "ucf101_proxy"):
        doc = yaml.safe_load(configs.path(f"search/{name}.yaml").read_text())
        assert "model" not in doc, name  # data and trainer only
    long = yaml.safe_load(configs.path("search/synthetic_long.yaml").read_text())["model"]
    assert all(defaults[k] != v for k, v in long.items())  # only what differs


# --------------------------------------------------------------------- old checkpoints
#: keys a round-1 checkpoint lacks, or whose old default it took without saving it
_NEWER = ("strategy", "select", "position_encoding", "select_bn", "optimizer", "lr", "lr_min",
          "val_recalibrate", "candidate_norm", "in_channels", "memory_format", "cost_target",
          "cost_weight", "cost_min_width", "select_finetune_steps")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A real tiny checkpoint of a search trained with round 1's settings (darts, argmax,
    no positions, SGD, no validation recalibration), the same with its hparams in the old
    shape (the newer keys deleted, no version), and the synthetic data."""
    tmp = tmp_path_factory.mktemp("old")
    root = ensure_synthetic(tmp / "data", classes=2, videos_per_class=12, frames=8, size=16,
                            seed=3, workers=1)
    pl.seed_everything(0, verbose=False)
    dm = VideoDataModule(root=str(root), num_frames=8, crop_size=16, batch_size=4,
                         num_workers=0, search=True, cache="memory")
    legacy = {k: LEGACY_DEFAULTS[k] for k in _NEWER}
    module = SearchModule(num_classes=2, backbone_kwargs=PROXY, num_nodes=2, arch_lr=0.05,
                          **legacy)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp))
    trainer.fit(module, datamodule=dm)
    new = tmp / "run" / "checkpoints" / "last.ckpt"
    new.parent.mkdir(parents=True)
    trainer.save_checkpoint(new)
    ckpt = torch.load(new, map_location="cpu", weights_only=False)
    assert ckpt["attnas_hparams_version"] == HPARAMS_VERSION
    for key in _NEWER:
        del ckpt["hyper_parameters"][key]
    del ckpt["attnas_hparams_version"]
    old = tmp / "old" / "checkpoints" / "last.ckpt"
    old.parent.mkdir(parents=True)
    torch.save(ckpt, old)
    return new, old, root


def _positions(module: SearchModule) -> set[str]:
    return {m.position for m in module.model.modules() if isinstance(m, EdgeWeights)}


def test_an_old_checkpoint_loads_as_what_it_was_trained_as(
        checkpoints: tuple[Path, Path, Path]) -> None:
    new, old, _ = checkpoints
    ref = SearchModule.load_from_checkpoint(new, map_location="cpu").eval()
    module = SearchModule.load_from_checkpoint(old, map_location="cpu").eval()
    for key in _NEWER:
        assert module.hparams[key] == ref.hparams[key] == LEGACY_DEFAULTS[key], key
    assert module.supernet_strategy.name == "darts" and module.arch.alpha.requires_grad
    assert _positions(module) == {"none"}  # rebuilt: the signature's sincos is not it
    assert module._recent.maxlen == 1  # val_recalibrate 0
    assert torch.equal(module.arch.alpha, ref.arch.alpha) and module.arch.alpha.abs().max() > 0
    video = torch.randn(2, 3, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(module(video), ref(video))
    # the same file read without the module: the genotype of its alpha, no positions
    genotype, _ = genotype_from_checkpoint(old)
    assert genotype.position == "none"
    assert genotype.to_dict()["nodes"] == genotype_from_checkpoint(new)[0].to_dict()["nodes"]
    # a current checkpoint keeps what it says; a missing key there is the signature's
    assert migrate_hparams({"position_encoding": "coords"}, HPARAMS_VERSION) == {
        "position_encoding": "coords"}
    assert migrate_hparams({}, None)["strategy"] == "darts"
    # options saved under their old names are renamed, whatever the version
    assert migrate_hparams({"position": "coords", "supernet": "darts", "remedy": "entropy",
                            "remedy_weight": 0.5}, HPARAMS_VERSION) == {
        "position_encoding": "coords", "strategy": "darts", "anti_collapse": "entropy",
        "anti_collapse_weight": 0.5}


def test_a_checkpoint_saved_under_the_old_option_names_loads(
        checkpoints: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A checkpoint written before ``position``, ``supernet`` and ``remedy`` were renamed
    (version 2, the old keys in its hyper-parameters) loads with the new names."""
    new, _, _ = checkpoints
    ckpt = torch.load(new, map_location="cpu", weights_only=False)
    hp = ckpt["hyper_parameters"]
    for old, renamed in RENAMED_OPTIONS.items():
        hp[old] = hp.pop(renamed)
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    torch.save(ckpt, path)
    ref = SearchModule.load_from_checkpoint(new, map_location="cpu").eval()
    module = SearchModule.load_from_checkpoint(path, map_location="cpu").eval()
    assert not set(RENAMED_OPTIONS) & set(module.hparams)
    for key in RENAMED_OPTIONS.values():
        assert module.hparams[key] == ref.hparams[key], key
    assert module.supernet_strategy.name == "darts" and _positions(module) == {"none"}
    video = torch.randn(2, 3, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(module(video), ref(video))
    genotype, _ = genotype_from_checkpoint(path)
    assert genotype.position == "none"
    assert genotype.provenance["remedy"] == "none"


def test_the_old_option_names_still_build_a_module() -> None:
    """Python callers may pass the old names for one release; both names at once with
    different values is an error."""
    old = SearchModule(num_classes=2, backbone_kwargs=PROXY, num_nodes=1, position="coords",
                       supernet="darts", remedy="entropy", remedy_weight=0.5)
    assert {k: old.hparams[k] for k in RENAMED_OPTIONS.values()} == {
        "position_encoding": "coords", "strategy": "darts", "anti_collapse": "entropy",
        "anti_collapse_weight": 0.5}
    assert not set(RENAMED_OPTIONS) & set(old.hparams)
    with pytest.raises(ValueError, match="strategy is given under its old name too"):
        SearchModule(num_classes=2, backbone_kwargs=PROXY, num_nodes=1, supernet="darts",
                     strategy="single_path")


def test_an_old_checkpoint_reselects(checkpoints: tuple[Path, Path, Path]) -> None:
    """attnas derive's path: the run's own rule (argmax, migrated) and a data-driven rule
    with options given by the caller (per-batch BatchNorm, which the old run did not use)."""
    new, old, root = checkpoints
    own = select_from_checkpoint(old)
    assert own.provenance["select"] == "argmax" and own.provenance["supernet"] == "darts"
    assert own.position == "none"
    assert [n.op for n in own.nodes] == [n.op for n in genotype_from_checkpoint(old)[0].nodes]
    perturb = select_from_checkpoint(old, "perturb", options={"select_val_batches": 1,
                                                              "select_bn": "batch"})
    sel = perturb.provenance["selection"]
    assert sel["rule"] == "perturb" and sel["bn"] == "batch" and sel["clips"] > 0
    assert str(perturb.provenance["dataset"]) == str(root)
    # the benchmarks' path is the same function, with its own data
    again = reselect(old, "perturb", options={"select_val_batches": 1, "select_bn": "batch"},
                     datamodule=lambda _: _datamodule(root), seed=0)
    assert [n.op for n in again.nodes] == [n.op for n in perturb.nodes]
    with pytest.raises(ValueError, match="select_val_batches must be an integer >= 1"):
        reselect(old, "perturb", options={"select_val_batches": 0})
    with pytest.raises(ValueError, match="unknown selection option"):
        reselect(old, "perturb", options={"lr": 1.0})


def _datamodule(root: Path) -> VideoDataModule:
    dm = VideoDataModule(root=str(root), num_frames=8, crop_size=16, batch_size=4,
                         num_workers=0, search=True)
    dm.setup("fit")
    return dm
