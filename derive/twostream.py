"""The end of a two-stream stage: selection, the architecture file and its picture.

:class:`TwoStreamWriter` runs at the end of ``fit`` of a
:class:`supernet.twostream.search.TwoStreamSearch` (rank 0): it decides the stage's
variables with the module's selection rule (:func:`derive.select.select_choices`), counts
the params and MACs of the resulting network at the training clip, and writes
``<run>/twostream_<stage>.json`` and ``.png`` (and ``model.out`` if given), atomically.
:func:`draw_twostream` draws an architecture: the two streams as rows of stages (frames,
channels, temporal kernel), the fusions between them and the attention blocks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from supernet.twostream.space import VARIABLES, TwoStreamArch

from .callbacks import _all_cores, _printer, run_dir
from .scoring import selection_data
from .select import ChoiceSelection, check_rule, select_choices

__all__ = ["TwoStreamWriter", "select_stage", "arch_cost", "draw_twostream"]


def select_stage(module: pl.LightningModule, datamodule: Any = None, progress: Any = None
                 ) -> ChoiceSelection:
    """Run a two-stream stage's selection rule (``hparams.select``) on its supernet."""
    hp = module.hparams
    rule = check_rule(hp.select)
    data = None
    if rule != "argmax":
        if datamodule is None:
            raise ValueError(f"selection rule {rule!r} needs validation data: no datamodule")
        seed = os.environ.get("PL_GLOBAL_SEED")
        data = selection_data(datamodule, int(hp.select_val_batches),
                              int(hp.select_calib_batches),
                              seed=int(seed) if seed and seed.lstrip("-").isdigit() else 0,
                              finetune=None, bn=str(hp.select_bn))
        dev = next(module.parameters()).device
        data.val = [(v.to(dev), y.to(dev)) for v, y in data.val]
        data.calib = [v.to(dev) for v in data.calib]
        if module.clip is None and data.val:
            module.clip = tuple(int(v) for v in data.val[0][0].shape[2:])
    return select_choices(module.model, rule, data, progress=progress)


def arch_cost(arch: TwoStreamArch, num_classes: int, clip: tuple[int, int, int],
              in_channels: int = 3) -> dict[str, Any]:
    """Params and MACs per clip (``(T, H, W)``) of the network ``arch`` describes (at its
    ``network`` size)."""
    from supernet.counting import count_flops, count_params
    from supernet.twostream.build import twostream

    net = twostream(num_classes, arch, in_channels=in_channels).eval()
    macs = count_flops(net, (1, in_channels, *clip))["macs"]
    return {"clip": list(clip), "params": count_params(net), "macs": int(macs)}


class TwoStreamWriter(pl.Callback):
    """Writes the stage's architecture file at the end of ``fit`` (see the module
    docstring). ``draw``: also the picture."""

    def __init__(self, draw: bool = True) -> None:
        self.draw = draw

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not hasattr(pl_module, "choices") or trainer.current_epoch == 0:
            return
        if not trainer.is_global_zero:
            return
        hp = pl_module.hparams
        t0 = time.perf_counter()
        with _all_cores():
            sel = select_stage(pl_module, trainer.datamodule, progress=_printer())
        select_s = time.perf_counter() - t0
        train_s = float(getattr(pl_module, "train_seconds", 0.0))
        prev = pl_module.previous
        values = dict(prev.values) if prev is not None else {}
        values.update(sel.values)
        decided = [*(prev.decided if prev is not None else ()), *sel.values]
        provenance = dict(prev.provenance) if prev is not None else {}
        seed = os.environ.get("PL_GLOBAL_SEED")
        record = {"supernet": hp.supernet, "seed": int(seed) if seed else None,
                  "epochs": trainer.current_epoch,
                  # supernet training (all epochs, across resumes) + selection
                  "search_seconds": round(train_s + select_s, 1),
                  "train_seconds": round(train_s, 1), "select_seconds": round(select_s, 1),
                  "selection": sel.to_dict(), "run": str(run_dir(trainer))}
        cell = pl_module.cell_doc or (prev.cell if prev is not None else None)
        values = {**pl_module.choices.values, **values}  # what this stage's network had
        record["base_attention"] = hp.get("base_attention", "none")
        arch = TwoStreamArch.create(values, hp.stage, decided,
                                    cell if values.get("attention") == "cell" else None,
                                    provenance,
                                    {"width_div": int(hp.width_div),
                                     "depths": [int(d) for d in hp.depths],
                                     "stem_pool": bool(hp.get("stem_pool", True))})
        if pl_module.clip is not None:
            record["cost"] = arch_cost(arch, pl_module.model.net.head.out_features,
                                       pl_module.clip, hp.in_channels)
        arch.provenance[hp.stage] = record
        out = run_dir(trainer)
        targets = [out / f"twostream_{hp.stage}.json"]
        if hp.out:
            targets.append(Path(hp.out))
        for path in targets:
            arch.save(path)
            if self.draw:
                draw_twostream(arch, path.with_suffix(".png"))
        print(f"[twostream] stage {hp.stage}: {arch.describe()}", flush=True)
        print(sel.report(), flush=True)
        if "cost" in record:
            c = record["cost"]
            print(f"[twostream] {c['params']:,} params, {c['macs'] / 1e6:.1f} MMACs per clip "
                  f"{'x'.join(map(str, c['clip']))}", flush=True)
        print(f"[twostream] wrote {', '.join(map(str, targets))}", flush=True)


def draw_twostream(arch: TwoStreamArch, path: str | Path, title: str | None = None) -> Path:
    """Draw ``arch``: slow stream on top, fast below, one box per stage (frames as a
    fraction of the clip, channel ratio, temporal kernel), an arrow per fusion (labelled
    with the operator), a star on each attention block; decided variables in bold.
    Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from supernet.backbones.slowfast import FUSION_SITES

    v = arch.values
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    names = ["stem", "res2", "res3", "res4", "res5"]
    xs = [i * 1.9 for i in range(5)]
    rows = {"slow": 2.2, "fast": 0.4}
    for pathway, y in rows.items():
        for i, (x, name) in enumerate(zip(xs, names)):
            if pathway == "slow":
                kt = 1 if i < 3 else v["slow_kt"]
                text = f"{name}\nT/{v['alpha']}, C\nkt {kt}"
            else:
                kt = 5 if i == 0 else v["fast_kt"]
                text = f"{name}\nT, C/{v['beta_inv']}\nkt {kt}"
            ax.add_patch(plt.Rectangle((x, y), 1.3, 0.9, fc="#dce9f7" if pathway == "slow"
                                       else "#fbe3c9", ec="black", lw=1))
            ax.text(x + 0.65, y + 0.45, text, ha="center", va="center", fontsize=8)
            if i < 4:
                ax.annotate("", (x + 1.9, y + 0.45), (x + 1.3, y + 0.45),
                            arrowprops={"arrowstyle": "->", "lw": 1})
        ax.text(-0.3, y + 0.45, pathway, ha="right", va="center", fontsize=10,
                fontweight="bold")
    for site in FUSION_SITES[v["fusion_at"]]:
        x = xs[site] + 1.45
        ax.annotate("", (x, rows["slow"]), (x, rows["fast"] + 0.9),
                    arrowprops={"arrowstyle": "->", "color": "#b03a2e", "lw": 1.6})
        ax.text(x + 0.05, 1.75, v["fusion"], fontsize=7, color="#b03a2e", rotation=90,
                va="center")
    if v["attention"] != "none":
        for pathway in ("slow", "fast"):
            if v["attention_at"] not in (pathway, "both"):
                continue
            for i in (2, 3):
                ax.plot(xs[i] + 1.15, rows[pathway] + 0.78, marker="*", ms=13,
                        color="#7d3c98")
    decided = ", ".join(f"{n}={v[n]}" for n in (x.name for x in VARIABLES)
                        if n in arch.decided) or "nothing (SlowFast's point)"
    cost = ""
    for stage in reversed(list(arch.provenance)):
        c = arch.provenance[stage].get("cost") if isinstance(arch.provenance[stage], dict) \
            else None
        if c:
            cost = f"   {c['params']:,} params, {c['macs'] / 1e6:.1f} MMACs"
            break
    ax.set_title(title or f"two-stream, stage {arch.stage or '-'}: attention "
                 f"{v['attention']} ({v['attention_at']}){cost}", fontsize=10)
    ax.text(0, -0.35, f"decided: {decided}", fontsize=8, transform=ax.transData)
    ax.set_xlim(-1.2, xs[-1] + 1.6)
    ax.set_ylim(-0.6, 3.4)
    ax.axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path
