"""Search checkpoints, read: the genotype a checkpoint's architecture weights give, and a
re-selection of its cell with any rule: :func:`select_from_checkpoint` finds the data in
the checkpoint and calls :func:`derive.callbacks.reselect`, the one re-selection path
(``attnas derive`` and the benchmarks' re-select jobs). A checkpoint saved before the
measured defaults moved into :class:`~supernet.search.SearchModule` is read with the
settings it was trained with (:func:`supernet.search.migrate_hparams`)."""

from __future__ import annotations

from pathlib import Path

import torch

from datamodules import VideoDataModule
from supernet.cells import ArchParameters
from supernet.paths import need_file
from supernet.search import SearchModule, migrate_hparams

from .callbacks import reselect
from .genotype import Genotype
from .rules import check_rule, get_rule

__all__ = ["genotype_from_checkpoint", "select_from_checkpoint"]


def _fail(msg: str) -> ValueError:
    return ValueError(msg)


def genotype_from_checkpoint(path: str | Path) -> tuple[Genotype, Path | None]:
    """Genotype of a search checkpoint and the run's ``arch.csv`` (or None if not found)."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("checkpoints/last.ckpt")) or sorted(p.glob("**/last.ckpt"))
        hint = f", e.g. {found[0]}" if found else ""
        raise FileNotFoundError(f"{p} is a directory; derive needs a checkpoint file{hint}")
    need_file(p, "checkpoint")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise _fail(f"{p} is not a readable PyTorch checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise _fail(f"{p} is not a Lightning checkpoint (no state_dict)")
    sd = ckpt["state_dict"]
    if ckpt.get("attnas_stage"):  # a two-stream stage: its result is the stage's JSON
        stage = ckpt["attnas_stage"]
        raise _fail(f"{p} is a checkpoint of the two-stream stage {stage!r}; its result is "
                    f"twostream_{stage}.json in the run folder (re-select with `attnas search "
                    f"twostream --stage {stage} --force --ckpt_path CKPT`, same max_epochs)")
    if "model.arch.alpha" not in sd or "model.arch.beta" not in sd:
        kind = ckpt.get("attnas_kind", "foreign")
        raise _fail(f"{p} is a {kind} checkpoint without architecture parameters; "
                    f"derive needs a search checkpoint (runs/search/version_N/checkpoints/*.ckpt)")
    hp = migrate_hparams(ckpt.get("hyper_parameters") or {}, ckpt.get("attnas_hparams_version"))
    alpha, beta = sd["model.arch.alpha"], sd["model.arch.beta"]
    arch = ArchParameters(num_nodes=alpha.shape[0])
    arch.load_state_dict({"alpha": alpha, "beta": beta,
                          "temperature": sd.get("model.arch.temperature", torch.tensor(1.0))})
    run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    dm = ckpt.get("datamodule_hyper_parameters", {}) or {}
    provenance = {
        "run": str(run),
        "checkpoint": str(p),
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "dataset": dm.get("root") or dm.get("train_list"),
        "seed": hp.get("seed"),
        "backbone": hp["backbone"],
        "arch_order": hp["arch_order"],
        "remedy": hp["anti_collapse"],
    }
    seed_file = run / "config.yaml"
    if provenance["seed"] is None and seed_file.is_file():
        for line in seed_file.read_text().splitlines():
            if line.startswith("seed_everything:"):
                value = line.split(":", 1)[1].strip()
                provenance["seed"] = int(value) if value.lstrip("-").isdigit() else None
    genotype = Genotype.from_arch(
        arch, inner_ratio=hp["inner_ratio"], kv_pool=hp["kv_pool"],
        position=hp["position_encoding"],
        provenance=provenance,
    )
    csv = run / "arch.csv"
    return genotype, (csv if csv.is_file() else None)


def select_from_checkpoint(path: str | Path, rule: str | None = None,
                           data_overrides: dict | None = None, options: dict | None = None
                           ) -> Genotype:
    """:func:`reselect` with the data of the search: a rule that needs data reads the
    validation data named in the checkpoint's data settings, updated by
    ``data_overrides``; ``rule`` defaults to the run's own ``select`` and ``options`` are
    :func:`reselect`'s.

    Raises:
        ValueError / FileNotFoundError: bad checkpoint, rule or data (one-line messages).
    """
    base, _ = genotype_from_checkpoint(path)  # validates the checkpoint, finds the run
    if rule is not None:
        check_rule(rule)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    data = {k: v for k, v in dict(ckpt.get("datamodule_hyper_parameters") or {}).items()
            if not k.startswith("_")}
    data.update(data_overrides or {})

    def validation_data(module: SearchModule) -> VideoDataModule | None:
        if module.clip is None and data.get("num_frames") and data.get("crop_size"):
            crop = int(data["crop_size"])  # the clip the search trained on (for its cost)
            module.clip = (int(data["num_frames"]), crop, crop)
        if module.hparams.cost_target is not None:
            module.cost_budget()  # a budget below the cheapest cell: refused before selecting
        if not get_rule(module.hparams.select).needs_data:
            return None
        if not data:
            raise ValueError(f"{path} records no data settings; give --data.root DIR")
        data.update({"search": True, "synthetic": False})
        try:
            dm = VideoDataModule(**data)
        except TypeError as e:
            raise ValueError(f"bad data settings: {e}") from None
        dm.setup("fit")
        return dm

    seed = base.provenance.get("seed")
    return reselect(path, rule, None, options, validation_data,
                    seed=int(seed) if isinstance(seed, int) else 0,
                    run=base.provenance.get("run"), dataset=base.provenance.get("dataset"))
