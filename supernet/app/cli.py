"""The ``attnas`` command: one console script, one subcommand per stage.

Each subcommand is a module of this package (``attnas bench`` and ``attnas table``: of
``benchmarks``) that exposes ``main(argv) -> int``; this file only dispatches, naming the
modules by string so that ``attnas --help`` imports none of them.
"""

from __future__ import annotations

import importlib
import os
import sys

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("supernet.app.data_cli",
             "datasets: `data synth --out DIR`, `data check ROOT -c CFG`"),
    "search": ("supernet.app.search_cli",
               "differentiable search (LightningCLI): `search fit -c CFG`"),
    "derive": ("supernet.app.derive_cli", "search checkpoint -> genotype JSON + picture"),
    "retrain": ("supernet.app.retrain_cli", "train/evaluate a video classifier (LightningCLI)"),
    "cost": ("supernet.app.cost_cli",
             "params, MACs/FLOPs and CPU latency of a backbone + block"),
    "export": ("supernet.app.export", "retrained network -> TorchScript / ONNX file, checked"),
    "predict": ("supernet.app.predict",
                "class probabilities of video files (retrained network)"),
    "demo": ("supernet.app.demo", "the quick start: synthetic data -> search -> derive"),
    "bench": ("benchmarks.run", "the benchmark suite (accuracy, cost, search cost)"),
    "table": ("benchmarks.table.cli",
              "the ground-truth table: build, query, leaderboard, score-supernet, report"),
}


#: ``$ATTNAS_DISPATCH`` (kernels chosen by measurement, :mod:`supernet.dispatch`) is checked
#: before a subcommand runs, by this module's ``check_env`` (named by string, like the
#: subcommands, so that ``attnas --help`` imports no torch)
DISPATCH_ENV, DISPATCH_MODULE = "ATTNAS_DISPATCH", "supernet.dispatch"


def _usage() -> str:
    lines = ["usage: attnas <command> [args...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`attnas <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``attnas`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"attnas: unknown command {name!r}; expected one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    if os.environ.get(DISPATCH_ENV):
        try:
            importlib.import_module(DISPATCH_MODULE).check_env()
        except ValueError as err:  # an unknown implementation: one line, exit 2
            print(f"attnas: {err}", file=sys.stderr)
            return 2
    module = importlib.import_module(COMMANDS[name][0])
    code = module.main(rest)
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
