"""Selection rules and supernet training modes, on real supernets, Trainers and data."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamodules import VideoDataModule
from datamodules.synth import ensure_synthetic
from derive.select import SelectionData, select_cell
from supernet import create_backbone
from supernet.cells import SearchCell, recalibrate_batchnorm
from supernet.search import SearchModule
from supernet.space import NUM_OPS, OP_NAMES
from supernet.strategies.single_path import SinglePath

PROXY = {"widths": [8, 16, 32], "depths": [1, 1, 1], "stem_width": 8}


def _supernet(num_nodes: int = 1, seed: int = 0, classes: int = 3) -> torch.nn.Module:
    """A tiny proxy supernet whose cells are *not* identities (sink BN gamma = 3) and whose
    affinities and maps are far from zero (q, k and map convs scaled up), so the 24
    candidates are really different functions (near 0 softmax and sigmoid are the same
    map up to an affine change that BatchNorm removes)."""
    torch.manual_seed(seed)
    model = create_backbone("proxy", classes, block="search",
                            block_kwargs={"num_nodes": num_nodes}, **PROXY)
    with torch.no_grad():
        model.arch.alpha.zero_()
        model.arch.beta.zero_()
        for cell in model.modules():
            if isinstance(cell, SearchCell):
                cell.bn.weight.fill_(3.0)
                for edge in cell.edges:
                    edge.weights.q.weight.mul_(4.0)
                    edge.weights.k.weight.mul_(4.0)
                    for conv in edge.weights.maps.values():
                        conv.weight.mul_(4.0)
    return model.eval()


def _videos(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 16, 16, generator=g)


def _teacher_data(model: torch.nn.Module, pinned: list | None, scale: float = 30.0,
                  batches: int = 4, per: int = 8) -> SelectionData:
    """Labels that the supernet itself gives with ``pinned`` (or unrestricted): the task
    is solved exactly by that network and by no other."""
    calib = [_videos(per, 100 + i) for i in range(2)]
    val_videos = [_videos(per, 200 + i) for i in range(batches)]
    head = model.head if hasattr(model, "head") else None
    assert head is not None, "proxy backbones have a linear head"
    with torch.no_grad():
        head.weight.mul_(scale)
    if pinned is not None:
        model.arch.pin(pinned)
    recalibrate_batchnorm(model, calib)
    with torch.no_grad():
        labels = [model(v).argmax(-1) for v in val_videos]
    model.arch.clear_restrictions()
    return SelectionData(val=list(zip(val_videos, labels)), calib=calib)


def test_alone_picks_the_only_candidate_that_solves_the_task() -> None:
    model = _supernet()
    target = "dot.temporal.softmax"
    data = _teacher_data(model, [(target, 0)])
    sel = select_cell(model, "alone", data)
    op = sel.decisions[0]
    assert sel.nodes[0].op == target and op.choice == target
    assert op.significant is True and op.ci[0] > 0.0
    assert len(op.scores) == NUM_OPS
    assert sel.clips == 32 and not sel.flagged
    # the factor-level decisions: the winner's family / dimension / activation against the
    # best op with another value, each with its own paired margin
    assert set(op.factors) == {"family", "dimension", "activation"}
    fam = op.factors["family"]
    assert (fam["choice"], fam["runner_up"]) == ("dot", "map")
    assert fam["significant"] is True and fam["ci"][0] > 0.0
    assert op.factors["dimension"]["choice"] == "temporal"
    assert sel.to_dict()["decisions"][0]["factors"]["family"]["choice"] == "dot"
    assert "by factor: family dot over map" in sel.report()


def test_perturb_keeps_the_candidate_whose_removal_hurts_most() -> None:
    model = _supernet()
    target = "map.spatiotemporal.sigmoid"
    with torch.no_grad():  # the supernet leans on the target: 3/4 of the node's mixture
        model.arch.alpha[0, OP_NAMES.index(target)] = math.log(3 * (NUM_OPS - 1))
    data = _teacher_data(model, None, batches=8)
    sel = select_cell(model, "perturb", data)
    assert sel.nodes[0].op == target
    assert sel.decisions[0].significant is True
    # the restrictions used while scoring are gone afterwards
    assert model.arch.pinned_op(0) is None and bool(model.arch.op_mask.all())


def test_identical_candidates_are_flagged_as_a_coin_toss() -> None:
    model = _supernet()
    # q = k = 0 and zero map convs: every relu / identity candidate outputs exactly 0
    for cell in model.modules():
        if isinstance(cell, SearchCell):
            ew = cell.edges[0].weights
            with torch.no_grad():
                ew.q.weight.zero_()
                ew.k.weight.zero_()
                for conv in ew.maps.values():
                    conv.weight.zero_()
                    conv.bias.zero_()
    data = _teacher_data(model, [("dot.temporal.relu", 0)])
    sel = select_cell(model, "alone", data)
    op = sel.decisions[0]
    zero_ops = {n for n in OP_NAMES if n.endswith((".relu", ".identity"))}
    assert op.choice in zero_ops and op.runner_up in zero_ops
    assert op.margin == 0.0 and op.significant is False
    assert sel.flagged == [op]
    assert "not significant" in sel.report()


def test_inputs_are_decided_with_margins() -> None:
    model = _supernet(num_nodes=2)
    data = _teacher_data(model, [("dot.spatial.softmax", 0), ("map.temporal.relu", 0)])
    sel = select_cell(model, "alone", data)
    assert [d.what for d in sel.decisions] == ["op", "input", "op", "input"]
    assert sel.decisions[3].scores.keys() == {"input", "node 0"}
    assert sel.to_dict()["decisions"][3]["ci"] is not None


def test_argmax_flags_flat_alpha_and_follows_a_real_preference() -> None:
    model = _supernet(num_nodes=2)
    sel = select_cell(model, "argmax")
    assert len(sel.flagged) == 3  # uniform alpha and beta: every decision is a coin toss
    with torch.no_grad():
        model.arch.alpha[1, 5] = 3.0
    sel = select_cell(model, "argmax")
    assert sel.nodes[1].op == OP_NAMES[5] and sel.decisions[2].significant is True


def test_data_rules_need_validation_data() -> None:
    model = _supernet()
    with pytest.raises(ValueError, match="validation data"):
        select_cell(model, "perturb", None)
    with pytest.raises(ValueError, match="accepted: alone, argmax, perturb, perturb_factors"):
        select_cell(model, "best")


# ------------------------------------------------------------------ supernet training modes
@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "data", classes=2,
                            videos_per_class=12, frames=8, size=16, seed=3, workers=1)


def _fit(synth: Path, tmp: Path, steps: int, **model_kwargs) -> SearchModule:
    pl.seed_everything(0, verbose=False)
    dm = VideoDataModule(root=str(synth), num_frames=8, crop_size=16, batch_size=4,
                         num_workers=0, search=True, cache="memory")
    dm.setup("fit")
    module = SearchModule(num_classes=dm.num_classes, backbone_kwargs=PROXY, num_nodes=2,
                          optimizer="adamw", lr=0.01, weight_decay=0.0, **model_kwargs)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=steps, limit_val_batches=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp))
    trainer.fit(module, datamodule=dm)
    return module


def test_single_path_samples_every_candidate_uniformly() -> None:
    module = SearchModule(num_classes=2, backbone_kwargs=PROXY, num_nodes=3,
                          strategy="single_path")
    steps = 2400
    ops, ins = Counter(), Counter()
    for step in range(steps):
        op_mask, in_mask = SinglePath.sample_path(3, step)
        assert op_mask.sum(-1).tolist() == [1, 1, 1] and in_mask.sum(-1).tolist() == [1, 1, 1]
        for k in range(3):
            ops[k, int(op_mask[k].nonzero())] += 1
            ins[k, int(in_mask[k].nonzero())] += 1
    expected = steps / NUM_OPS  # 100 per op; 5 sigma of a binomial is about 49
    for k in range(3):
        counts = [ops[k, o] for o in range(NUM_OPS)]
        assert min(counts) > expected - 50 and max(counts) < expected + 50, counts
        for j in range(k + 1):
            assert abs(ins[k, j] - steps / (k + 1)) < 5 * math.sqrt(steps / (k + 1))
    assert SinglePath.sample_path(3, 7)[0].equal(SinglePath.sample_path(3, 7)[0])  # a resume
    assert module.supernet_strategy.name == "single_path"


def test_single_path_trains_only_the_sampled_path(synth: Path, tmp_path: Path) -> None:
    steps = 3
    torch.manual_seed(0)
    ref = SearchModule(num_classes=2, backbone_kwargs=PROXY, num_nodes=2,
                       strategy="single_path", optimizer="adamw", lr=0.01, weight_decay=0.0)
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    module = _fit(synth, tmp_path, steps, strategy="single_path")
    after = module.state_dict()
    assert module.global_step >= 2
    paths = [SinglePath.sample_path(2, s) for s in range(module.global_step)]
    dims = ("spatial", "temporal", "spatiotemporal")
    for _name, cell in module.model.inserted_blocks():
        for k, edge in enumerate(cell.edges):
            used = {OP_NAMES[int(op_mask[k].nonzero())] for op_mask, _ in paths}
            # step 0 cannot move cell internals (the sink BN gamma is 0): paths 1.. must
            # (a relu map may be all zero, hence no gradient: only other activations count)
            moved = {OP_NAMES[int(op_mask[k].nonzero())] for op_mask, _ in paths[1:]}
            moved = {op for op in moved if not op.endswith(".relu")}
            for d in dims:
                key = _state_key(module, edge.weights.maps[d].weight)
                changed = not after[key].equal(before[key])
                if not any(op.startswith(f"map.{d}.") for op in used):
                    assert not changed, f"{key}: trained although map.{d} was never sampled"
                if any(op.startswith(f"map.{d}.") for op in moved):
                    assert changed, f"{key}: map.{d} was sampled but did not train"
            qkey = _state_key(module, edge.weights.q.weight)
            if not any(op.startswith("dot.") for op in used):
                assert after[qkey].equal(before[qkey])
    assert module.arch.alpha.abs().max() == 0.0 and module.arch.pinned_op(0) is None


def _state_key(module: torch.nn.Module, param: torch.Tensor) -> str:
    for key, value in module.state_dict(keep_vars=True).items():
        if value is param:
            return key
    raise KeyError("parameter not in the state dict")


def test_uniform_never_changes_alpha_and_skips_the_arch_step(synth: Path,
                                                              tmp_path: Path) -> None:
    module = _fit(synth, tmp_path, 3, strategy="uniform")
    assert module.arch.alpha.abs().max() == 0.0 and module.arch.beta.abs().max() == 0.0
    assert not module.arch.alpha.requires_grad
    assert "train_a/loss" not in module.trainer.callback_metrics
    assert "train_w/loss" in module.trainer.callback_metrics


def test_darts_arch_step_computes_alpha_gradients_only() -> None:
    torch.manual_seed(0)
    module = SearchModule(num_classes=2, backbone_kwargs=PROXY, num_nodes=2, strategy="darts")
    for cell in module.model.modules():  # let gradients into the cells (gamma != 0)
        if isinstance(cell, SearchCell):
            cell.bn.weight.data.fill_(1.0)
    a_opt = torch.optim.Adam(module.model.arch_parameters(), lr=0.1)
    batch = {"video": _videos(4, 0), "label": torch.tensor([0, 1, 0, 1])}
    before = module.arch.alpha.detach().clone()
    assert module.supernet_strategy.arch_step(module, a_opt, batch, batch, 0) is not None
    assert all(p.grad is None for p in module.model.weight_parameters())
    assert module.arch.alpha.grad is not None and module.arch.alpha.grad.abs().max() > 0
    assert not module.arch.alpha.detach().equal(before)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="accepted: darts, single_path, uniform$"):
        SearchModule(num_classes=2, strategy="spos")


def test_eval_mode_supernet_gives_sane_logits(tmp_path: Path) -> None:
    """Regression: a supernet evaluated with its running BatchNorm averages gave a val loss
    of 6e21 (48x48 8-frame clips) and 2.8e19 (the shipped synthetic config, uniform mode):
    the running averages of a mixture are stale, and chained identity / relu affinities
    (cubic in their input) turn a stale scale into an explosion on single clips. Validation
    recomputes the statistics on the latest training batches first."""
    root = ensure_synthetic(tmp_path / "d48", classes=2, videos_per_class=10, frames=8,
                            size=48, seed=5, workers=1)
    module, trainer, dm = _fit_root(root, tmp_path)

    def stale() -> None:  # running statistics far from those of the current weights
        for m in module.model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_var.mul_(1e-4)

    stale()
    module.hparams.val_recalibrate = 0
    broken = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/loss"]
    stale()
    module.hparams.val_recalibrate = 4
    fixed = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/loss"]
    assert not broken < 10.0  # the failure this guards against is reproduced (NaN or huge) ...
    assert math.isfinite(fixed) and fixed < 2.0  # ... and gone (chance is ln 2 = 0.69)
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        logits = module.model.eval()(batch["video"])
    assert torch.isfinite(logits).all() and logits.abs().max() < 1e2


def _fit_root(root: Path, tmp: Path):
    pl.seed_everything(0, verbose=False)
    dm = VideoDataModule(root=str(root), num_frames=8, crop_size=48, batch_size=4,
                         num_workers=0, search=True, cache="memory")
    dm.setup("fit")
    module = SearchModule(num_classes=dm.num_classes, backbone_kwargs=PROXY, num_nodes=3,
                          position_encoding="none", optimizer="adamw", lr=0.002,
                          strategy="uniform")
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp))
    trainer.fit(module, datamodule=dm)
    return module, trainer, dm


def test_batch_statistics_scoring_leaves_running_statistics_alone() -> None:
    """``bn="batch"``: every validation batch is normalised by its own statistics (no
    calibration batches needed); the running statistics are untouched, the rule still
    finds the only candidate that solves the task, and the record says how it scored."""
    from derive.select import clip_losses

    model = _supernet()
    target = "dot.temporal.softmax"
    data = _teacher_data(model, None)
    model.arch.pin([(target, 0)])  # the teacher: the target alone, batch statistics
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            m.train()
        labels = [model(v).argmax(-1) for v, _ in data.val]
    model.arch.clear_restrictions()
    model.eval()
    videos = [v for v, _ in data.val]
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert torch.isfinite(clip_losses(model, list(zip(videos, labels)), batch_stats=True)).all()
    batch = SelectionData(val=list(zip(videos, labels)), calib=[], bn="batch")
    sel = select_cell(model, "alone", batch)
    assert sel.nodes[0].op == target and sel.decisions[0].significant is True
    assert sel.to_dict()["bn"] == "batch" and "BatchNorm batch" in sel.report()
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="accepted: recalibrate, batch"):
        select_cell(model, "alone", SelectionData(val=data.val, calib=[], bn="running"))
    with pytest.raises(ValueError, match="accepted: recalibrate, batch"):
        SearchModule(num_classes=2, select_bn="running")


def test_perturb_factors_decides_family_then_dimension_then_activation() -> None:
    """``perturb_factors``: on a supernet that leans on one op (3/4 of the node's mixture),
    removing that op's family, dimension and activation in turn hurts most, so it is
    found with three significant factor decisions and 9 scores instead of 24."""
    model = _supernet()
    target = "map.spatiotemporal.sigmoid"
    with torch.no_grad():
        model.arch.alpha[0, OP_NAMES.index(target)] = math.log(3 * (NUM_OPS - 1))
    data = _teacher_data(model, None, batches=8)
    seen: list[tuple[int, int]] = []
    sel = select_cell(model, "perturb_factors", data,
                      progress=lambda done, total, what: seen.append((done, total)))
    assert sel.nodes[0].op == target
    assert [d.what for d in sel.decisions] == ["family", "dimension", "activation", "input"]
    fam, dim, act = sel.decisions[:3]
    assert (fam.choice, dim.choice, act.choice) == ("map", "spatiotemporal", "sigmoid")
    assert fam.significant is True and fam.ci[0] > 0.0
    assert set(act.scores) == {"softmax", "sigmoid", "relu", "identity"}
    assert seen[-1] == (9, 9)  # 2 families + 3 dimensions + 4 activations, one node
    assert "family     map" in sel.report() or "family map" in sel.report()
    assert model.arch.pinned_op(0) is None and bool(model.arch.op_mask.all())


@pytest.mark.parametrize("backbone,block,kwargs,shape", [
    ("proxy", "search", {**PROXY, "block_kwargs": {"num_nodes": 2, "position": "sincos"}},
     (4, 3, 8, 16, 16)),
    ("s3d", "nonlocal", {}, (2, 3, 8, 32, 32)),
    ("i3d_r50", "a2", {"width_div": 8}, (2, 3, 8, 32, 32)),
])
def test_forward_splits_at_the_first_inserted_block(backbone: str, block: str, kwargs: dict,
                                                    shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = create_backbone(backbone, 3, block, **kwargs).eval()
    x = torch.randn(shape)
    first_stage, first_index = model.split_point()
    assert f"{first_stage}.{first_index}" == model.inserted_blocks()[0][0]
    with torch.no_grad():
        assert torch.equal(model.forward_suffix(model.forward_prefix(x)), model(x))
    assert create_backbone("proxy", 3, "none", positions="none", **PROXY).split_point() is None
    assert create_backbone("slowfast_r50", 3, "nonlocal", width_div=8).split_point() is None


def test_perturb_scores_from_cached_block_inputs_exactly_as_from_clips(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Selection computes the part of the forward before the first cell once (it does not
    depend on the candidates) and gives the same losses, decisions and margins."""
    import derive.scoring as scoring

    def run() -> tuple[list, SelectionData]:
        model = _supernet(num_nodes=2)
        data = _teacher_data(model, None, batches=3)
        data = SelectionData(val=data.val, calib=[], bn="batch")
        sel = select_cell(model, "perturb", data)
        return [(d.node, d.what, d.choice, d.runner_up, d.margin, d.ci) for d in
                sel.decisions], data

    cached, data = run()
    assert data.prefix is not None and len(data.prefix) == 3
    assert data.prefix[0].shape[1] == PROXY["widths"][1]  # res3's output feeds the cell
    monkeypatch.setattr(scoring, "PREFIX_CACHE_BYTES", 0)  # too big to cache: clips again
    plain, data = run()
    assert data.prefix is None
    assert cached == plain
