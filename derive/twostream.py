"""The end of a two-stream stage: selection, the architecture file and its picture.

:class:`TwoStreamWriter` runs at the end of ``fit`` of a
:class:`supernet.twostream.search.TwoStreamSearch` (rank 0): it decides the stage's
variables with the module's selection rule (:func:`select_choices`, the cell
search's rules of :mod:`derive.select` applied to the stage's variables), counts
the params and MACs of the resulting network at the training clip, and writes
``<run>/twostream_<stage>.json`` and ``.png`` (and ``model.out`` if given), atomically.
:func:`draw_twostream` draws an architecture: the two streams as rows of stages (frames,
channels, temporal kernel), the fusions between them and the attention blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from datamodules.atomic import atomic_path
from supernet.backbones.slowfast import FUSION_SITES
from supernet.rng import run_seed
from supernet.twostream.budget import twostream_cost
from supernet.twostream.space import VARIABLES, TwoStreamArch, inactive, variable

from .callbacks import _all_cores, _printer, run_dir
from .rules import Decision, check_rule, get_rule
from .rules.argmax import ARGMAX_FLAT
from .scoring import SelectionData, check_bn_mode, measure, paired, restored, selection_data
from .select import score_label, selection_record

__all__ = ["TwoStreamWriter", "ChoiceSelection", "select_choices", "select_stage",
           "draw_twostream"]


class ChoiceSelection(NamedTuple):
    """The result of a rule on a two-stream stage (:func:`select_choices`): the value of
    every variable the stage searched and the decisions that led to them."""

    rule: str
    values: dict[str, Any]
    decisions: list[Decision]
    seconds: float
    clips: int
    bn: str = ""
    #: with a cost budget: its target, the values each variable could not take
    #: (``excluded``) and the MACs of the stage's network with the chosen values (``macs``)
    budget: dict[str, Any] | None = None

    @property
    def flagged(self) -> list[Decision]:
        """Decisions that are not clearly better than their runner-up."""
        return [d for d in self.decisions if d.significant is False]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (a stage's ``provenance["selection"]``)."""
        out = {**selection_record(self), "values": dict(self.values)}
        if self.budget is not None:
            out["budget"] = self.budget
        return out

    def report(self) -> str:
        """Lines for the terminal: each variable's decision and its margin."""
        unit = get_rule(self.rule).unit
        lines = [f"selection: {self.rule} ({score_label(self.rule)}"
                 + (f", {self.clips} validation clips" if self.clips else "")
                 + f", {self.seconds:.0f} s)"]
        for d in self.decisions:
            if d.runner_up is None:
                lines.append(f"  {d.what:<13} {d.choice:<9} (no choice: one value allowed, "
                             f"or no effect given the others)")
                continue
            ci = "" if d.ci is None else f" [95% CI {d.ci[0]:+.4f}, {d.ci[1]:+.4f}]"
            flag = "   <- not significant (coin toss)" if d.significant is False else ""
            lines.append(f"  {d.what:<13} {d.choice:<9} over {d.runner_up:<9} margin "
                         f"{d.margin:+.4f} {unit}{ci}{flag}")
        n = sum(d.runner_up is not None for d in self.decisions)
        lines.append(f"  {len(self.flagged)} of {n} decisions not significant"
                     if self.flagged else f"  all {n} decisions significant")
        b = self.budget
        if b is not None:
            lines.append(f"  budget {b['target']} = {b['target_macs'] / 1e6:.3f} MMACs "
                         f"(SlowFast's point {b['anchor_macs'] / 1e6:.3f}): this stage's "
                         f"network {b['macs'] / 1e6:.3f} MMACs "
                         f"({b['macs'] / b['target_macs']:.0%} of the target)")
            for name, vals in b.get("excluded", {}).items():
                lines.append(f"  {name}: {', '.join(map(str, vals))} excluded by the budget")
        return "\n".join(lines)


def select_choices(model: nn.Module, rule: str, data: SelectionData | None = None,
                   progress: Callable[[int, int, str], None] | None = None,
                   budget: Any = None) -> ChoiceSelection:
    """Decide the variables a two-stream stage searches, one at a time in the space's
    order, each pinned before the next is scored (as :func:`select_cell` does nodes).

    ``argmax`` takes the largest weight; ``alone`` pins each allowed value and keeps the
    lowest validation loss; ``perturb`` (and ``perturb_factors``: a variable is already a
    factor) removes each value from the mixture and keeps the one whose removal hurts most
    -- except for a variable the supernet cannot mix (``frame_ratio``), which is scored
    ``alone``. Margins and their 95 % intervals as in :func:`select_cell`.

    Args:
        model: the two-stream supernet (:class:`supernet.twostream.ElasticTwoStream`),
            with its :class:`~supernet.twostream.StageChoices` as ``model.choices``.
        rule: one of :data:`SELECTION_RULES`.
        data: validation / calibration batches (every rule but ``argmax``).
        progress: optional ``callable(done, total, what)`` after each score.
        budget: a :class:`~supernet.twostream.budget.TwoStreamBudget`: each variable only takes
            values with which the network can still meet it (the others are listed as
            excluded; a variable left with one value is not scored).

    Returns:
        a :class:`ChoiceSelection`; the model's restrictions, BatchNorm statistics and
        mode are restored.
    """
    chosen_rule = get_rule(rule)
    choices = getattr(model, "choices", None)
    if choices is None or not hasattr(choices, "free"):
        raise ValueError("select_choices needs a two-stream supernet (model.choices)")
    t0 = time.perf_counter()
    names = list(choices.free)
    decisions: list[Decision] = []
    values: dict[str, Any] = {}
    excluded: dict[str, list[Any]] = {}
    if budget is not None:
        budget.check(choices.values, {n: choices.candidates(n) for n in names})

    def admissible(name: str) -> list[Any]:
        cands = list(choices.candidates(name))
        if budget is None:
            return cands
        undecided = {n: choices.candidates(n) for n in names if n not in values}
        ok = budget.admissible(name, cands, {**choices.values, **values}, undecided)
        if len(ok) < len(cands):
            excluded[name] = [c for c in cands if c not in ok]
        return ok

    def finish(clips: int = 0, bn: str = "") -> ChoiceSelection:
        record = None
        if budget is not None:
            record = {**budget.record(), "excluded": excluded,
                      "macs": budget.macs({**choices.values, **values})}
        return ChoiceSelection(rule, values, decisions, time.perf_counter() - t0, clips, bn,
                               record)

    if not chosen_rule.needs_data:  # argmax: the largest weight of each variable
        for k, name in enumerate(names):
            ok = admissible(name)
            w = choices.weights(name).detach().cpu()
            cands = [str(v) for v in choices.candidates(name)]
            order = [i for i in torch.argsort(w, descending=True).tolist()
                     if choices.candidates(name)[i] in ok]
            best, runner = order[0], (order[1] if len(order) > 1 else None)
            decisions.append(Decision(
                k, name, cands[best], None if runner is None else cands[runner],
                0.0 if runner is None else float(w[best] - w[runner]), None,
                None if runner is None else bool(w[best] >= ARGMAX_FLAT / len(cands)),
                {cands[i]: float(w[i]) for i in order}))
            values[name] = choices.candidates(name)[best]
        return finish()
    if data is None or not data.val:
        raise ValueError(f"selection rule {rule!r} scores on validation data, and none was "
                         f"given (the datamodule has no validation set)")
    check_bn_mode(data.bn)
    total = sum(len(choices.candidates(n)) for n in names)
    done = 0
    with restored(model, choices.restrictions, choices.set_restrictions):
        choices.clear_restrictions()
        for k, name in enumerate(names):
            cands = admissible(name)
            if len(cands) == 1 or inactive(name, {**choices.values, **values}):
                # one value allowed by the budget, or no effect (e.g. the pathway of "none")
                keep = choices.values[name] if choices.values[name] in cands else cands[0]
                decisions.append(Decision(k, name, str(keep), None, 0.0, None, None, {}))
                values[name] = keep
                choices.restrict(name, [keep])
                continue
            alone = not chosen_rule.removes or not variable(name).mixable
            choices.restrict(name, cands)
            base = None if alone else measure(model, data)
            losses: dict[int, Tensor] = {}
            for i, v in enumerate(cands):
                choices.restrict(name, [v] if alone else [x for x in cands if x != v])
                losses[i] = measure(model, data)
                done += 1
                if progress is not None:
                    progress(done, total, f"{name}={v}")
            choices.restrict(name, cands)
            scores = {i: (-float(losses[i].mean()) if alone
                          else float((losses[i] - base).mean())) for i in losses}
            order = sorted(scores, key=lambda i: (-scores[i], i))
            best, runner = order[0], order[1]
            diff = (losses[runner] - losses[best]) if alone else (losses[best] - losses[runner])
            margin, ci, significant = paired(diff)
            decisions.append(Decision(k, name, str(cands[best]), str(cands[runner]), margin,
                                      ci, significant,
                                      {str(cands[i]): scores[i] for i in order}))
            values[name] = cands[best]
            choices.restrict(name, [cands[best]])
            if data.finetune is not None and data.finetune_steps > 0 and k < len(names) - 1:
                data.finetune(data.finetune_steps)
    return finish(sum(int(y.numel()) for _, y in data.val), data.bn)


def select_stage(module: pl.LightningModule, datamodule: Any = None, progress: Any = None
                 ) -> ChoiceSelection:
    """Run a two-stream stage's selection rule (``hparams.select``) on its supernet."""
    hp = module.hparams
    rule = check_rule(hp.select)
    data = None
    if get_rule(rule).needs_data:
        if datamodule is None:
            raise ValueError(f"selection rule {rule!r} needs validation data: no datamodule")
        data = selection_data(datamodule, int(hp.select_val_batches),
                              int(hp.select_calib_batches), seed=run_seed(),
                              finetune=None, bn=str(hp.select_bn))
        dev = next(module.parameters()).device
        data.val = [(v.to(dev), y.to(dev)) for v, y in data.val]
        data.calib = [v.to(dev) for v in data.calib]
        if module.clip is None and data.val:
            module.clip = tuple(int(v) for v in data.val[0][0].shape[2:])
    budget = module.cost_budget() if hp.get("cost_target") is not None else None
    return select_choices(module.model, rule, data, progress=progress, budget=budget)


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
        record = {"supernet": hp.supernet, "seed": run_seed(None),
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
            record["cost"] = twostream_cost(arch, pl_module.model.net.head.out_features,
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

    v = arch.values
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    names = ["stem", "res2", "res3", "res4", "res5"]
    xs = [i * 1.9 for i in range(5)]
    rows = {"slow": 2.2, "fast": 0.4}
    for pathway, y in rows.items():
        for i, (x, name) in enumerate(zip(xs, names)):
            if pathway == "slow":
                kt = 1 if i < 3 else v["slow_kt"]
                text = f"{name}\nT/{v['frame_ratio']}, C\nkt {kt}"
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
            b = (arch.provenance[stage].get("selection") or {}).get("budget")
            if b and b.get("target_macs"):
                cost += f" ({c['macs'] / b['target_macs']:.0%} of budget {b['target']})"
            break
    ax.set_title(title or f"two-stream, stage {arch.stage or '-'}: attention "
                 f"{v['attention']} ({v['attention_at']}){cost}", fontsize=10)
    ax.text(0, -0.35, f"decided: {decided}", fontsize=8, transform=ax.transData)
    ax.set_xlim(-1.2, xs[-1] + 1.6)
    ax.set_ylim(-0.6, 3.4)
    ax.axis("off")
    path = Path(path)
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
