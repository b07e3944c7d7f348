"""Helpers the benchmarks share: one measured child process, the machine description, the load it ran under.

Every figure a benchmark prints comes from a child process started here, so our command and the baseline pay the
same interpreter start and are measured the same way: wall time with ``time.perf_counter`` around the child, peak
RSS from ``os.wait4`` (the kernel's ru_maxrss for that child *and the descendants it waited for*, so a ``kolo``
process that runs the trainer as a subprocess is charged for the trainer's memory too).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass
class Measured:
    argv: list[str]
    rc: int
    wall_s: float
    peak_rss_bytes: int
    stdout: str
    stderr: str


def run_measured(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None,
                 timeout: float | None = None) -> Measured:
    """Run ``argv`` to completion; wall time and the child's own peak RSS (os.wait4, not RUSAGE_CHILDREN, which
    is the maximum over *every* child this process ever reaped and would mix the baseline and ours)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        return Measured(argv, p.returncode, wall, ru.ru_maxrss * 1024, out.read(), err.read())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def machine() -> dict:
    return {"nproc": os.cpu_count(), "mem_gib": round(mem_total_gib(), 1), "cpu": cpu_model(),
            "python": platform.python_version(), "loadavg_1_5_15": loadavg()}


def header(title: str) -> str:
    m = machine()
    return (f"{title}\nmachine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB RAM, Python {m['python']}; "
            f"load average (1/5/15 min) at start: {m['loadavg_1_5_15']}")


def kolo_exe() -> str:
    exe = shutil.which("kolo", path=str(Path(PY).parent)) or shutil.which("kolo")
    if exe is None:
        sys.exit("kolo is not installed in this environment (bash scripts/install.sh)")
    return exe


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus kolo settings that would change what is measured."""
    env = dict(os.environ)
    for k in ("KOLO_RUNTIME", "KOLO_CONTAINER", "KOLO_DEBUG", "KOLO_DATA"):
        env.pop(k, None)
    env.update(NO_COLOR="1", TERM="dumb", COLUMNS="200")
    env.update(extra)
    return env


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"
