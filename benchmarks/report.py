"""The benchmark's report: the tables, the plot and ``accuracy.md``.

Owns the summary of the accuracy ledger (:func:`summarise`), the markdown tables (accuracy,
search cost, step time, reproducibility), the top-1 vs MACs plot and :func:`write_markdown`
(the formatting helpers it shares with the progress lines are in :mod:`benchmarks.common`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.arguments import QUICK_PROXY, QUICK_TRAINER
from benchmarks.common import cpu_name, save_figure_atomic
from benchmarks.common import finite_float as _float
from benchmarks.common import fmt_seconds as _fmt_s
from benchmarks.common import node_source as _source
from benchmarks.groups import budget_lines, group_table_lines, target_lines
from benchmarks.pareto import cost_lines, pareto_plot
from benchmarks.plan import Plan
from benchmarks.runner import Ledger, Runner
from datamodules.atomic import atomic_write_text

__all__ = ["summarise", "accuracy_table", "plot", "search_lines", "step_lines",
           "repro_lines", "write_markdown"]


# ------------------------------------------------------------------------------ reports
def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def summarise(plan: Plan, acc: Ledger) -> list[dict[str, Any]]:
    """One entry per table row (rows, then the summary rows), top-1 in percent."""
    table: list[dict[str, Any]] = []
    for row in plan.rows:
        recs = [acc.get(row.key, s) for s in plan.train_seeds]
        ok = [r for r in recs if r and r.get("status") == "ok" and _float(r.get("video_top1"))
              is not None]
        vals = [100 * float(r["video_top1"]) for r in ok]
        any_rec = next((r for r in recs if r), {}) or {}
        entry = {"key": row.key, "label": row.label, "kind": row.kind, "group": row.group,
                 "epochs": row.epochs, "block": row.block,
                 "params": _float(any_rec.get("params")), "macs": _float(any_rec.get("macs")),
                 "values": vals, "n": len(vals),
                 "failed": sum(1 for r in recs if r and r.get("status") == "failed"),
                 "missing": sum(1 for r in recs if not r), "summary": False,
                 "wall": statistics.fmean([float(r["wall_s"]) for r in ok]) if ok else None}
        if vals:
            entry["mean"], entry["std"] = _stats(vals)
        table.append(entry)

    def summary(label: str, kind: str, members: list[dict[str, Any]], group: str = ""
                ) -> None:
        done = [e for e in members if e["n"]]
        if len(done) < 1:
            return
        means = [e["mean"] for e in done]
        mean, std = _stats(means)
        table.append({"key": f"{kind}-mean{group}", "label": label, "kind": kind,
                      "group": group, "summary": True, "n": len(done),
                      "values": means, "mean": mean, "std": std,
                      "params": statistics.fmean([e["params"] for e in done if e["params"]]
                                                 or [math.nan]),
                      "macs": statistics.fmean([e["macs"] for e in done if e["macs"]]
                                               or [math.nan]),
                      "failed": 0, "missing": 0, "wall": None})

    for group in plan.groups:
        members = [e for e in table if e["kind"] == "searched" and e["group"] == group
                   and not e["summary"]]
        if len(members) > 1:
            name = "searched cells (mean)" if group == plan.default_group else \
                f"searched cells, {group} (mean)"
            summary(name, "searched", members, group)
    summary("random cells (mean)", "random",
            [e for e in table if e["kind"] == "random" and not e["summary"]])
    return table


def _delta(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b or "mean" not in a or "mean" not in b:
        return "—"
    d = a["mean"] - b["mean"]
    if a["n"] > 1 and b["n"] > 1:
        se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
        return f"{d:+.1f} ± {se:.1f}"
    return f"{d:+.1f}"


def _num(value: float | None, scale: float, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value / scale:,.{digits}f}"


def accuracy_table(table: list[dict[str, Any]]) -> list[str]:
    """The markdown accuracy table."""
    by_key = {e["key"]: e for e in table}
    none, nl = by_key.get("none"), by_key.get("nonlocal")
    lines = ["| block | params | MMACs | video top-1 (%) | n | Δ vs none | Δ vs nonlocal "
             "| time / run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in table:
        label = f"**{e['label']}**" if e["summary"] else e["label"]
        if "mean" in e:
            acc = f"{e['mean']:.1f} ± {e['std']:.1f}" if e["n"] > 1 else f"{e['mean']:.1f}"
        else:
            acc = "failed" if e["failed"] else "not run"
        if e["failed"] and "mean" in e:
            acc += f" ({e['failed']} failed)"
        lines.append(f"| {label} | {_num(e['params'], 1, 0)} | {_num(e['macs'], 1e6, 1)} | "
                     f"{acc} | {e['n']} | {_delta(e, none) if e is not none else '—'} | "
                     f"{_delta(e, nl) if e is not nl else '—'} | "
                     f"{_fmt_s(e['wall']) if e['wall'] else '—'} |")
    return lines


def plot(table: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Scatter of video top-1 vs MACs with std error bars; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"baseline": "#1f77b4", "searched": "#d62728", "random": "#7f7f7f",
               "random_cost": "#bbbbbb"}
    pts = [e for e in table if "mean" in e and e["macs"] and math.isfinite(e["macs"])]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for kind, colour in colours.items():
        mine = [e for e in pts if e["kind"] == kind and not e["summary"]]
        if mine:
            ax.errorbar([e["macs"] / 1e6 for e in mine], [e["mean"] for e in mine],
                        yerr=[e["std"] for e in mine], fmt="o", color=colour, capsize=3,
                        label={"baseline": "baselines", "searched": "searched cells",
                               "random": "random cells",
                               "random_cost": "random cells fitted to a budget"}[kind])
            for i, e in enumerate(sorted(mine, key=lambda e: e["macs"])):
                ax.annotate(e["label"].replace(" (seed ", " s").rstrip(")"),
                            (e["macs"] / 1e6, e["mean"]), textcoords="offset points",
                            xytext=(5, 4 if i % 2 == 0 else -10), fontsize=7, color=colour)
    ax.margins(x=0.12)
    for e in pts:
        if e["summary"]:
            ax.axhline(e["mean"], ls="--", lw=1, color=colours.get(e["kind"], "k"), alpha=0.6)
            ax.annotate(e["label"], (ax.get_xlim()[1], e["mean"]), textcoords="offset points",
                        xytext=(-4, 3), ha="right", fontsize=7,
                        color=colours.get(e["kind"], "k"))
    ax.set_xlabel("MACs per clip (M), proxy backbone")
    ax.set_ylabel("video top-1 on the test split (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save_figure_atomic(fig, path, 130)


def _machine() -> str:
    cpu = cpu_name()
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores available{gpu}, {platform.system()}"


def _versions() -> str:
    import pytorch_lightning
    import torch

    return (f"python {platform.python_version()}, torch {torch.__version__}, "
            f"pytorch_lightning {pytorch_lightning.__version__}")


def search_lines(plan: Plan, srch: Ledger) -> list[str]:
    """Search-cost table: wall time and peak RSS of each search."""
    lines = ["| search | status | cell (op ← input) | supernet val acc | search wall | "
             "process wall | peak RSS (MiB) | worker peak RSS (MiB) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for job in plan.searches:
        r = srch.get(job.key)
        if not r:
            lines.append(f"| {job.label} | not run | | | | | | |")
            continue
        nodes = json.loads(r["nodes"]) if r.get("nodes") else []
        cell = "; ".join(f"{op} ← {_source(i)}" for op, i in nodes)
        cell = cell or (r.get("error") or "")
        val = _float(r.get("val_acc"))
        lines.append(f"| {job.label} | {r['status']} | {cell} | "
                     f"{'—' if val is None else f'{100 * val:.1f} %'} | "
                     f"{_fmt_s(_float(r.get('wall_s')))} | {_fmt_s(_float(r.get('total_s')))} | "
                     f"{_num(_float(r.get('peak_rss_mib')) or None, 1, 0)} | "
                     f"{_num(_float(r.get('worker_peak_rss_mib')) or None, 1, 0)} |")
    return lines


def step_lines(step: Ledger) -> list[str]:
    """Supernet vs derived-network step time."""
    r = step.get("steptime")
    if not r:
        return ["Not run."]
    if r.get("status") != "ok":
        return [f"Failed: {r.get('error')}"]
    it, ws = float(r["supernet_iteration_s"]), float(r["supernet_weight_step_s"])
    der, none = float(r["derived_step_s"]), float(r["none_step_s"])
    return [
        f"Batch {r['shape']} (N×C×T×H×W), median of {r['steps']} steps after one warm-up, "
        f"{r['threads']} thread(s) on CPU; derived cell: `{r['genotype']}`.",
        "",
        "| network | one training step (s) | vs derived |",
        "|---|---:|---:|",
        f"| supernet, `darts` iteration (arch step + weight step) | {it:.3f} | {it / der:.2f}× |",
        f"| supernet, weight step only (= a `uniform` iteration) | {ws:.3f} | {ws / der:.2f}× |",
        *([f"| supernet, `single_path` step (one sampled path) | "
           f"{float(r['supernet_single_path_s']):.3f} | "
           f"{float(r['supernet_single_path_s']) / der:.2f}× |"]
          if _float(r.get("supernet_single_path_s")) else []),
        f"| derived network (searched cell) | {der:.3f} | 1.00× |",
        f"| no attention (`none`) | {none:.3f} | {none / der:.2f}× |",
    ]


def repro_lines(plan: Plan, srch: Ledger) -> list[str]:
    """Op frequency per node across search seeds, and the same-seed check."""
    lines: list[str] = []
    for group in plan.groups:
        jobs = [j for j in plan.searches if j.group == group and j.repeat == 0]
        cells = [json.loads(srch.get(j.key)["nodes"]) for j in jobs
                 if srch.done(j.key) and srch.get(j.key).get("nodes")]
        if not cells:
            continue
        lines += [f"Search group `{group}`: {len(cells)} of {len(jobs)} search seeds finished.",
                  "", "| node | op chosen (seeds) | input chosen (seeds) |", "|---|---|---|"]
        for k in range(max(len(c) for c in cells)):
            ops = Counter(c[k][0] for c in cells if len(c) > k)
            ins = Counter(_source(c[k][1]) for c in cells if len(c) > k)
            lines.append(f"| {k} | " + ", ".join(f"{op} ×{n}" for op, n in ops.most_common())
                         + " | " + ", ".join(f"{i} ×{n}" for i, n in ins.most_common()) + " |")
        fam = Counter(op.split(".")[0] + "." + op.split(".")[1] for c in cells for op, _ in c)
        lines += ["", "Family.dimension over all nodes: "
                  + ", ".join(f"{k} ×{n}" for k, n in fam.most_common()) + ".", ""]
    reps = [j for j in plan.searches if j.repeat > 0]
    if not reps:
        lines.append("Same-seed check: not run at this scale (`--repeat-search 1` adds it; "
                     "the `--quick` run and `tests/test_bench.py` check it at toy scale).")
    for j in reps:
        a, b = srch.get(plan.searches[0].key), srch.get(j.key)
        if not (a and b and a.get("status") == "ok" and b.get("status") == "ok"):
            lines.append(f"Same-seed check ({j.label}): not available (a search failed).")
            continue
        same = json.loads(a["nodes"]) == json.loads(b["nodes"])
        diff = "?"
        if a.get("alpha_softmax") and b.get("alpha_softmax"):
            x, y = json.loads(a["alpha_softmax"]), json.loads(b["alpha_softmax"])
            diff = f"{max(abs(p - q) for ra, rb in zip(x, y) for p, q in zip(ra, rb)):.2g}"
        lines.append(f"Same-seed check: search seed {j.seed} run twice → "
                     f"{'**identical genotype**' if same else '**different genotypes**'} "
                     f"(max |Δ softmax(α)| = {diff}).")
    return lines or ["No finished search."]


def write_markdown(plan: Plan, runner: Runner, table: list[dict[str, Any]],
                   png: Path | None) -> Path:
    """Write ``accuracy.md``: every table, the settings, machine, versions and command."""
    acc, srch = runner.acc, runner.srch
    stamps = sorted(r["finished"] for r in [*acc.rows.values(), *srch.rows.values()]
                    if r.get("finished"))
    meta = {}
    meta_file = Path(plan.retrain_data["root"]) / "meta.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError:
            meta = {}
    counts = meta.get("counts", {})
    s, r = plan.search_trainer, plan.retrain_trainer
    search_seeds = [j.seed for j in plan.searches if j.group == plan.default_group
                    and not j.repeat]
    n_random = sum(1 for x in plan.rows if x.kind == "random")
    title = "Accuracy benchmark" + (" (--quick: toy scale, not a result)" if plan.quick else "")
    lines = [
        f"# {title}",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M')}; runs finished "
        f"{stamps[0] if stamps else '—'} … {stamps[-1] if stamps else '—'}.",
        "",
        f"- Command: `{plan.command}`",
        f"- Machine: {_machine()}; {plan.threads} torch thread(s) per run, "
        f"{plan.args.jobs} run(s) at a time.",
        f"- Versions: {_versions()}.",
        (f"- Data: synthetic benchmark `{plan.retrain_data['root']}` "
         f"({plan.synth['classes']} classes × {plan.synth['videos_per_class']} videos, "
         f"{plan.clip[0]} frames × {plan.clip[1]}² px, seed {plan.synth['seed']}; train / val / "
         f"test = {counts.get('train', '?')} / {counts.get('val', '?')} / "
         f"{counts.get('test', '?')}); each clip is the whole video." if plan.synth else
         f"- Data: `{plan.retrain_data['root']}` ({plan.num_classes} classes; train / val / "
         f"test = {counts.get('train', '?')} / {counts.get('val', '?')} / "
         f"{counts.get('test', '?')}); clips of {plan.clip[0]} frames × {plan.clip[1]}² px "
         f"as the configs read them."),
        f"- Search: `{Path(plan.args.search_config).name}` defaults, {s.get('max_epochs')} "
        f"epoch(s), search seeds {search_seeds}; study groups: {', '.join(plan.groups)}.",
        f"- Retrain: `{Path(plan.args.retrain_config).name}` defaults, the same budget for every "
        f"row ({r.get('max_epochs')} epoch(s), batch {plan.retrain_data.get('batch_size')}), "
        f"training seeds {plan.train_seeds}; test = final weights, "
        f"{plan.retrain_data.get('test_clips', 1)} clip(s) × "
        f"{plan.retrain_data.get('test_crops', 1)} crop(s) per video, scores averaged per "
        f"video.",
        f"- Random cells: `derive.random_genotype` seeds 0..{n_random - 1}, uniform over the "
        "24 ops and the inputs, same cell settings as the search.",
        f"- Settings fingerprint: `{plan.settings}`.",
    ]
    if plan.quick:
        lines.append(f"- --quick: proxy {json.dumps(QUICK_PROXY)}, trainer "
                     f"{json.dumps(QUICK_TRAINER)}.")
    if plan.args.limit_batches:
        lines.append(f"- --limit-batches {plan.args.limit_batches}: a smoke test, not a result.")
    lines += [f"- Note: {n}" for n in plan.notes]
    lines += ["", "## Accuracy (video-level top-1 on the test split)", "",
              *accuracy_table(table), "",
              "Mean ± std over training seeds (summary rows: over cells). Δ in points: "
              "difference of means ± its standard error (√(s₁²/n₁ + s₂²/n₂)). MACs: one clip "
              f"1×3×{plan.clip[0]}×{plan.clip[1]}×{plan.clip[1]}, attention counted "
              "(`supernet.cost.model_cost`).", ""]
    if png is not None:
        lines += [f"![top-1 vs MACs]({png.name})", ""]
    lines += ["## Targets", "", *target_lines(plan, table, srch), ""]
    lines += ["## Search groups", "", *group_table_lines(plan, table, srch)]
    cost = cost_lines(plan, table)
    if cost:
        pareto = pareto_plot(table, plan.out / "pareto.png",
                             "top-1 vs added cost: searched cells under budgets, baselines, "
                             "random cells")
        lines += ["## Cost-aware search", "", *cost]
        if pareto is not None:
            lines += [f"![top-1 vs added MACs and params]({pareto.name})", ""]
    budget = budget_lines(table, int(plan.retrain_trainer.get("max_epochs") or 1))
    if budget:
        lines += ["## Retrain budget", "", *budget]
    lines += ["## Search cost", "", *search_lines(plan, srch), "",
              "Cell: each node's op ← its input (`in` = the projected cell input, `nK` = "
              "node K). Search wall = `trainer.fit`; process wall includes start-up and data "
              "set-up. Peak RSS: the search process's high-water mark (its largest DataLoader "
              "worker separately).",
              "", "### Supernet step vs derived-network step", "", *step_lines(runner.step), ""]
    lines += ["## Reproducibility", "", *repro_lines(plan, srch), ""]
    cells = [j for j in plan.searches if j.repeat == 0 and srch.done(j.key)]
    if cells:
        lines += ["## Searched cells", ""]
        for j in cells:
            rel = runner._rel(j.genotype)
            lines += [f"- {j.label}: [`{rel}`]({rel}) ![{j.label}]"
                      f"({runner._rel(j.genotype.with_suffix('.png'))})"]
        lines.append("")
    failed = [x for x in acc.rows.values() if x.get("status") == "failed"]
    failed += [x for x in srch.rows.values() if x.get("status") == "failed"]
    if failed:
        lines += ["## Failed runs", "", "| run | seed | error | log |", "|---|---|---|---|"]
        for x in failed:
            lines.append(f"| {x.get('row') or x.get('search')} | {x.get('seed', '')} | "
                         f"{(x.get('error') or '').replace('|', '/')} | {x.get('log', '')} |")
        lines.append("")
    return atomic_write_text(plan.out / "accuracy.md", "\n".join(lines))
