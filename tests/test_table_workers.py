"""The table build's local workers: a killed build leaves none of them training."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from repo import REPO


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_a_killed_build_leaves_no_worker_training(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        "import time\n"
        "from benchmarks.table.build import _LocalPool\n"
        "if __name__ == '__main__':\n"
        "    pool = _LocalPool(1)\n"
        "    pool._pool.submit(time.sleep, 600).running()\n"
        "    while not pool._pool._processes:\n"
        "        time.sleep(0.05)\n"
        "    print(*[p.pid for p in pool._pool._processes.values()], flush=True)\n"
        "    time.sleep(600)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              text=True, env=env, cwd=tmp_path)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert workers and all(_alive(p) for p in workers)
    finally:
        parent.kill()  # as a user's kill -9 or a lost session would
        parent.wait()
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)
