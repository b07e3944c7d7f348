"""Host CLI start time: `kolo --help`, `kolo train --dry-run ...`, `kolo status` next to `python -c pass`.

Each command is a fresh process (a cold interpreter; the OS file cache is warm, as for a user typing commands);
the figure is the median wall time of N runs, measured in the same run as the baseline.

    .venv/bin/python bench/cli_start.py            # 7 runs each
    .venv/bin/python bench/cli_start.py --runs 15 --json
Goal (issue 3): `kolo --help` <= 0.3 s on the 2-core dev machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_HELP_S = 0.3


def kolo_exe() -> str:
    exe = shutil.which("kolo", path=str(Path(sys.executable).parent)) or shutil.which("kolo")
    if exe is None:
        sys.exit("kolo is not installed in this environment (bash scripts/install.sh)")
    return exe


def measure(argv: list[str], runs: int, env: dict[str, str], cwd: str) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            sys.exit(f"{argv} failed with exit code {r.returncode}")
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.runs < 5:
        ap.error("--runs must be at least 5")
    kolo = kolo_exe()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, KOLO_DATA=os.path.join(tmp, "kolo_data"), COLUMNS="100")
        cases = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("kolo --help", [kolo, "--help"]),
            ("kolo train --dry-run ...", [kolo, "train", "--dry-run", "--epochs", "3", "--lora-rank", "16",
                                          "--weight-decay", "0", "--output-dir", "it's a test"]),
            ("kolo status", [kolo, "status"]),
        ]
        for _, argv in cases:  # one warm-up each, so the first case does not pay for the file cache
            subprocess.run(argv, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = []
        for name, argv in cases:
            t = measure(argv, a.runs, env, tmp)
            rows.append({"command": name, "median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)})
    base = rows[0]["median_s"]
    for r in rows:
        r["over_python_s"] = r["median_s"] - base
    help_s = rows[1]["median_s"]
    if a.json:
        print(json.dumps({"runs": a.runs, "rows": rows, "goal_help_s": GOAL_HELP_S,
                          "goal_met": help_s <= GOAL_HELP_S}, indent=2))
    else:
        print(f"host CLI start, median of {a.runs} cold runs ({os.cpu_count()} CPUs, Python "
              f"{sys.version.split()[0]})")
        print(f"{'command':<28} {'median':>8} {'min':>8} {'max':>8} {'- python':>9}")
        for r in rows:
            print(f"{r['command']:<28} {r['median_s']:>7.3f}s {r['min_s']:>7.3f}s {r['max_s']:>7.3f}s "
                  f"{r['over_python_s']:>8.3f}s")
        verdict = "met" if help_s <= GOAL_HELP_S else "NOT met"
        print(f"goal `kolo --help` <= {GOAL_HELP_S} s: {verdict} ({help_s:.3f} s)")
    return 0 if help_s <= GOAL_HELP_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
