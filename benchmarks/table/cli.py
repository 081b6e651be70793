"""``attnas table``: build, query and report the ground-truth table of the cell space.

* ``attnas table build --task T`` trains every cell the table lacks (resumable: rerun it
  after a kill; ``--executor ray --address HOST`` for a cluster);
* ``attnas table query CELL --task T [--json]``: mean +- std, n and percentile of a cell
  (a baseline name, an architecture string ``op~input+...`` or a genotype ``.json``);
* ``attnas table report``: per task, the distribution picture and the top-10, in
  ``benchmarks/results/table/README.md``.

Bad input: one line on stderr, exit 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from datamodules.synth import check_params
from supernet.genotype import GenotypeError, load_genotype

from .build import EXECUTORS, build_table, plan_cells
from .cells import TableCell, parse_cell, sample_cells
from .leaderboard import SEARCHES_DIR, leaderboard_markdown, record_search
from .oneshot import score_supernet
from .protocol import Protocol
from .report import write_report
from .store import TABLE_DIR, Table, TableError, protocol_of_record, task_of_record
from .study import STUDY_CELLS
from .tasks import DATA_ROOT, TASKS, TableTask, get_task

__all__ = ["main"]

CELL_SETS = ("plan", "one-node", "sample", "study")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        print(f"attnas table: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="attnas table", description="The ground-truth table of the cell space "
                "(attnas-bench): every cell trained with one protocol, queried by string.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser,
                           metavar="{build,query,score-supernet,leaderboard,add-search,report}")
    b = sub.add_parser("build", help="train the cells a task's table lacks (resumable)")
    b.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}")
    b.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                   help="training seeds of every cell (default 0 1 2)")
    b.add_argument("--cells", nargs="+", default=None, metavar="CELL",
                   help="only these cells (baseline names, architecture strings, genotype "
                        ".json files); default: the plan (baselines, one-node cells, "
                        "--sample three-node cells, the project's genotypes)")
    b.add_argument("--set", choices=CELL_SETS, default="plan", dest="cell_set",
                   help="which cells when --cells is not given: plan (everything, default), "
                        "one-node (the baselines and the 24 one-node cells), sample (the "
                        "--sample three-node cells only), study (the protocol study's cells)")
    b.add_argument("--sample", type=int, default=100, metavar="N",
                   help="uniformly drawn three-node cells in the plan (default 100)")
    b.add_argument("--no-project", action="store_true",
                   help="leave the project's searched and random genotypes out of the plan")
    b.add_argument("--longer", type=float, default=None, metavar="F",
                   help="train F times as many steps as the protocol of record (a protocol "
                        "study; needs its own --root)")
    b.add_argument("--steps", type=int, default=None, metavar="N",
                   help="a protocol of N steps (tests and studies; needs its own --root)")
    b.add_argument("--prefix-steps", type=int, default=None, metavar="N",
                   help="a protocol whose fixed prefix is trained N steps (0: drawn at "
                        "random; tests and studies; needs its own --root)")
    b.add_argument("--videos-per-class", type=int, default=None, metavar="N",
                   help="a smaller variant of the task (smoke tests; needs its own --root)")
    b.add_argument("--frames", type=int, default=None, metavar="T",
                   help="a variant of the task with T frames (needs its own --root)")
    b.add_argument("--size", type=int, default=None, metavar="S",
                   help="a variant of the task with S x S frames (needs its own --root)")
    b.add_argument("--workers", type=int, default=2, metavar="W", help="runs at a time (2)")
    b.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local worker processes (default) or Ray tasks")
    b.add_argument("--address", default=None,
                   help="a Ray cluster (auto, ray://host:10001); implies --executor ray")
    _roots(b)
    q = sub.add_parser("query", help="what the table knows of one cell")
    q.add_argument("cell", help="a baseline name, an architecture string or a genotype .json")
    q.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}")
    q.add_argument("--json", action="store_true", help="print JSON")
    _roots(q)
    o = sub.add_parser("score-supernet", help="rank correlation of a supernet's one-shot "
                       "estimates with the table")
    o.add_argument("checkpoint", help="a search checkpoint (.ckpt) trained on the task")
    o.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}")
    o.add_argument("--val-batches", type=int, default=8, metavar="N",
                   help="validation batches each cell is scored on (default 8)")
    o.add_argument("--calib-batches", type=int, default=4, metavar="N",
                   help="training batches that recalibrate BatchNorm per cell (default 4)")
    o.add_argument("--batch-size", type=int, default=32, metavar="B", help="clips per batch")
    o.add_argument("--bn", default="recalibrate", help="recalibrate | batch")
    o.add_argument("--json", action="store_true", help="print JSON (every cell)")
    _roots(o)
    lb = sub.add_parser("leaderboard", help="search methods scored on the table, with random "
                        "search at equal cost and the optimal cell")
    lb.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}")
    lb.add_argument("--search-wall", type=float, default=None, metavar="S",
                    help="seconds of one search, for random search at equal cost (default: "
                         "the median of the project's recorded searches)")
    lb.add_argument("--repeats", type=int, default=1000, metavar="N",
                    help="random-search repeats (default 1000)")
    _roots(lb)
    a = sub.add_parser("add-search", help="file a search's genotype for the leaderboard")
    a.add_argument("genotype", help="the search's genotype.json")
    a.add_argument("--task", required=True, help=f"the task it searched on: {', '.join(TASKS)}")
    a.add_argument("--method", required=True, help="the method's name (a plain word)")
    a.add_argument("--seed", type=int, required=True, help="the search seed")
    a.add_argument("--wall-s", type=float, default=None, help="the search's wall time (s)")
    a.add_argument("--searches", type=Path, default=None,
                   help="folder of filed searches (default benchmarks/results/table/searches)")
    r = sub.add_parser("report", help="pictures and top-10 of every tabled task")
    r.add_argument("--tasks", nargs="+", default=None, metavar="T",
                   help="tasks to report (default: every task with a table)")
    _roots(r)
    return p


def _roots(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=TABLE_DIR,
                   help="folder of the table files (default benchmarks/results/table)")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT,
                   help="folder of the tasks' videos (default data/table)")


def _progress(label: str, transient: bool = False) -> Progress:
    """A bar with done / total, elapsed time and ETA."""
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), transient=transient)


def _cell(spec: str) -> TableCell:
    if spec.endswith(".json"):
        return parse_cell(load_genotype(spec))
    return parse_cell(spec)


def _protocol(args: argparse.Namespace) -> Protocol:
    record = protocol_of_record(args.root)
    if args.longer is None and args.steps is None and args.prefix_steps is None:
        return record
    if Path(args.root).resolve() == TABLE_DIR.resolve():
        raise ValueError("--longer / --steps / --prefix-steps make another protocol: give it "
                         "its own --root (a table never mixes protocols)")
    base = protocol_of_record(TABLE_DIR)
    if args.longer is not None:
        if args.longer <= 0:
            raise ValueError(f"--longer must be > 0, got {args.longer}")
        base = base.longer(args.longer)
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        base = replace(base, steps=args.steps, warmup_steps=min(base.warmup_steps,
                                                                 args.steps // 10))
    if args.prefix_steps is not None:
        if args.prefix_steps < 0:
            raise ValueError(f"--prefix-steps must be >= 0, got {args.prefix_steps}")
        base = replace(base, prefix_steps=args.prefix_steps)
    if (Path(args.root) / "protocol.json").is_file() and record != base:
        raise ValueError(f"{args.root}/protocol.json holds protocol {record.fingerprint()}, "
                         f"not {base.fingerprint()}; use another --root")
    return base


def _variant(args: argparse.Namespace) -> TableTask:
    task = task_of_record(args.task, args.root)
    changes = {k: getattr(args, k) for k in ("videos_per_class", "frames", "size")
               if getattr(args, k) is not None}
    if not changes:
        return task
    if Path(args.root).resolve() == TABLE_DIR.resolve():
        raise ValueError("--videos-per-class / --frames / --size make another variant of "
                         "the task: give it its own --root")
    return replace(task, **changes)


def _build(args: argparse.Namespace) -> int:
    if args.address:
        args.executor = "ray"
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if not args.seeds or min(args.seeds) < 0:
        raise ValueError(f"--seeds must be integers >= 0, got {args.seeds}")
    if args.cells:
        cells = [_cell(c) for c in args.cells]
    elif args.cell_set == "study":
        cells = [parse_cell(c) for c in STUDY_CELLS]
    elif args.cell_set == "one-node":
        cells = plan_cells(0, project=False)
    elif args.cell_set == "sample":
        cells = sample_cells(args.sample, 3)
    else:
        cells = plan_cells(args.sample, project=not args.no_project)
    protocol = _protocol(args)
    variant = _variant(args)
    check_params(**variant.generator_params())  # parameters in range, before anything is written
    bar = _progress(f"[bold]{args.task}[/]")
    job = bar.add_task(args.task, total=None)
    failed = []

    def on_start(todo: int, stored: int) -> None:
        bar.update(job, total=todo)
        bar.console.print(f"table {args.task}: {len(cells)} cells x {len(args.seeds)} seeds; "
                          f"{stored} of {stored + todo} runs stored, {todo} to run "
                          f"(protocol {protocol.fingerprint()}, {args.workers} at a time)")

    def on_result(row: dict) -> None:
        bar.advance(job)
        if "error" in row:
            failed.append(row)
            bar.console.print(f"[red]failed[/] {row['key']} seed {row['seed']}: {row['error']}")
        else:
            bar.console.print(f"{row['key']:<60} seed {row['seed']}  test "
                              f"{100 * row['test_acc']:5.1f}  val {100 * row['val_acc']:5.1f}"
                              f"  {row['wall_s']:.0f} s")

    with bar:
        table = build_table(variant, cells, args.seeds, protocol, args.root, args.data_root,
                            args.workers, args.executor, args.address, on_start, on_result)
    print(f"table {args.task}: {len(table.rows)} runs of {len(table.stats())} cells in "
          f"{table.path}" + (f"; {len(failed)} runs failed (rerun to retry)" if failed else ""))
    return 1 if failed else 0


def _query(args: argparse.Namespace) -> int:
    get_task(args.task)
    cell = _cell(args.cell)
    table = Table.load(args.task, args.root)
    s = table.query(cell)
    if args.json:
        print(json.dumps({"task": args.task, "protocol": table.protocol.fingerprint(),
                          **s.to_dict()}, indent=2))
        return 0
    ref = len(table.three_node_means())
    print(f"{s.key} on {args.task}: test {s.test_mean:.1f} +- {s.test_std:.1f} % "
          f"(val {s.val_mean:.1f} +- {s.val_std:.1f}), n = {s.n}; percentile "
          f"{s.percentile:.1f} of {ref} three-node cells; {s.params:,} params, "
          f"{s.macs / 1e6:.1f} MMACs")
    return 0


def _score_supernet(args: argparse.Namespace) -> int:
    get_task(args.task)
    for name in ("val_batches", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.calib_batches < 0:
        raise ValueError("--calib-batches must be >= 0")
    with _progress("one-shot estimates", transient=True) as bar:
        job = bar.add_task("cells", total=None)
        res = score_supernet(args.checkpoint, args.task, args.root, args.data_root,
                             args.val_batches, args.calib_batches, args.batch_size, args.bn,
                             lambda done, total: bar.update(job, completed=done, total=total))
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
        return 0
    best = max(range(len(res.cells)), key=lambda i: -res.estimates[i].loss)
    print(f"{args.task}: one-shot estimates of {len(res.cells)} tabled "
          f"{res.settings['num_nodes']}-node cells vs the table: Kendall tau {res.tau:.2f}, "
          f"Spearman rho {res.rho:.2f} (tau of one-shot accuracy {res.tau_acc:.2f}); the "
          f"supernet's favourite {res.cells[best]} is at {res.table_means[best]:.1f} % in "
          f"the table")
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    get_task(args.task)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.search_wall is not None and args.search_wall <= 0:
        raise ValueError(f"--search-wall must be > 0, got {args.search_wall}")
    table = Table.load(args.task, args.root)
    print(leaderboard_markdown(table, args.search_wall, args.repeats), end="")
    return 0


def _add_search(args: argparse.Namespace) -> int:
    get_task(args.task)
    path = record_search(args.genotype, args.task, args.method, args.seed, args.wall_s,
                         args.searches or SEARCHES_DIR)
    print(f"filed {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    tasks = args.tasks or [t for t in TASKS if (Path(args.root) / f"{t}.csv").is_file()]
    for t in tasks:
        get_task(t)
    if not tasks:
        raise ValueError(f"no table in {args.root}; build one with `attnas table build`")
    path = write_report(tasks, args.root)
    print(f"wrote {path}")
    return 0


def main(argv: list[str]) -> int:
    """Run ``attnas table <argv>``; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.command is None:
        print("attnas table: expected a subcommand: build, query, score-supernet, "
              "leaderboard or report", file=sys.stderr)
        return 2
    try:
        commands = {"build": _build, "query": _query, "score-supernet": _score_supernet,
                    "leaderboard": _leaderboard, "add-search": _add_search,
                    "report": _report}
        return commands[args.command](args)
    except (ValueError, TableError, GenotypeError, OSError) as err:
        print(f"attnas table {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
