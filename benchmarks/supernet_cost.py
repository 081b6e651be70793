"""Forward+backward time and peak memory of the supernet cell vs its references.

Rows: (a) the fast mixed cell (activations mixed on the affinity, shared projections),
(b) the explicit reference (each edge the weighted sum of 24 separately computed ops),
(c) a FixedCell of three ``dot.spatiotemporal.softmax`` nodes (non-local-like, SDPA).
Each row runs in its own subprocess so its peak RSS is its own: peak memory is the
process's high-water RSS minus its RSS just before the first forward (model and input
already built), i.e. what the forward+backward itself needed.

    python -m benchmarks.supernet_cost [--repeats 5] [--shapes proxy,res4] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

from datamodules.atomic import atomic_write_text
from supernet.cells import ArchParameters, FixedCell, SearchCell

SHAPES = {"proxy": (2, 64, 8, 28, 28), "res4": (2, 1024, 4, 14, 14)}
ROWS = {
    "a": "fast mixed cell (supernet)",
    "b": "explicit 24-op reference",
    "c": "FixedCell dot.spatiotemporal.softmax x3",
}


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _peak_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_row(row: str, shape: tuple[int, ...], repeats: int, threads: int) -> dict:
    """Measure one row in this process (called in a fresh subprocess)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c = shape[1]
    if row in ("a", "b"):
        arch = ArchParameters(3)
        cell = SearchCell(c, arch)
        for e in cell.edges:
            e.explicit = row == "b"
        params = list(cell.parameters()) + list(arch.parameters())
    else:
        cell = FixedCell(c, [("dot.spatiotemporal.softmax", i) for i in range(3)])
        params = list(cell.parameters())
    with torch.no_grad():
        cell.bn.weight.fill_(1.0)  # a gamma = 0 cell would not backpropagate into itself
    x = torch.randn(shape, requires_grad=True)
    before = _rss_kib()
    times = []
    for _ in range(repeats + 1):
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        cell(x).square().mean().backward()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times[1:]), "peak_mib": (_peak_kib() - before) / 1024}


def measure(row: str, shape_name: str, repeats: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.supernet_cost", "--_child", row, shape_name,
           str(repeats), str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed fwd+bwd passes (median)")
    ap.add_argument("--shapes", default="proxy,res4", help=f"comma list of {list(SHAPES)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/supernet_cost.md")
    ap.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        row, shape_name, repeats, threads = args._child
        print(json.dumps(run_row(row, SHAPES[shape_name], int(repeats), int(threads))))
        return 0
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    bad = [s for s in shapes if s not in SHAPES]
    if bad or args.repeats < 1:
        print(f"supernet_cost: unknown shape(s) {bad}; accepted: {list(SHAPES)}; repeats >= 1",
              file=sys.stderr)
        return 2
    lines = [
        "| shape (N×C×T×H×W) | row | fwd+bwd median (s) | peak mem (MiB) "
        "| vs (a) time | vs (a) mem |",
        "|---|---|---:|---:|---:|---:|",
    ]
    summary = []
    for s in shapes:
        res = {r: measure(r, s, args.repeats, args.threads) for r in ROWS}
        a = res["a"]
        for r, label in ROWS.items():
            m = res[r]
            if "error" in m:
                lines.append(f"| {'×'.join(map(str, SHAPES[s]))} | ({r}) {label} | failed: "
                             f"{m['error']} | | | |")
                continue
            lines.append(
                f"| {'×'.join(map(str, SHAPES[s]))} | ({r}) {label} | {m['median_s']:.3f} | "
                f"{m['peak_mib']:.0f} | {m['median_s'] / a['median_s']:.2f}× | "
                f"{m['peak_mib'] / max(a['peak_mib'], 1e-9):.2f}× |"
            )
        if all("error" not in res[r] for r in ROWS):
            summary.append(
                f"- {s}: (b)/(a) time {res['b']['median_s'] / a['median_s']:.1f}× "
                f"(target ≥ 4×), (b)/(a) memory {res['b']['peak_mib'] / a['peak_mib']:.1f}× "
                f"(target ≥ 2×), (a)/(c) time {a['median_s'] / res['c']['median_s']:.1f}× "
                f"(target ≤ 3×)"
            )
        print("\n".join(lines[-3:]), flush=True)
    import torch

    header = [
        "# Supernet cell cost",
        "",
        f"Command: `python -m benchmarks.supernet_cost --repeats {args.repeats} "
        f"--shapes {args.shapes}`  ",
        f"Machine: {platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}. Cell: K=3 nodes, inner width C/2, K/V pooled 1×2×2.",
        "",
    ]
    text = "\n".join(header + lines + [""] + summary) + "\n"
    print("\n" + text)
    atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
