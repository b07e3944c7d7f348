"""What this machine offers a training run: the visible GPU (through nvidia-smi, no torch), host RAM, CPUs, free disk.

Light: stdlib only, so the host and the trainer answer the same way without importing torch. The trainer's own
device choice (``train.backends.detect_device``) asks torch; this module follows the same rule (CUDA when an
NVIDIA GPU is visible, CUDA_VISIBLE_DEVICES="" hides it) so the plan judges the device training will use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIB = 1024 ** 3


@dataclass(frozen=True)
class Machine:
    kind: str  # "cuda" | "cpu"
    gpu_name: str | None
    gpu_bytes: int | None  # total memory of the GPU training uses
    bf16_ok: bool
    ram_bytes: int  # host RAM available to this process now
    cpus: int
    source: str  # how the GPU figure was found ("nvidia-smi", "--gpu-memory", "no GPU visible")


def _visible_index() -> int | None:
    """Index of the first GPU torch would use, or None when CUDA_VISIBLE_DEVICES hides every GPU."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return 0
    first = env.split(",")[0].strip()
    if not first or first.startswith("-"):
        return None
    return int(first) if first.isdigit() else 0  # a UUID: nvidia-smi lists in the same order; take the first


def query_gpu() -> tuple[str, int, bool] | None:
    """(name, total bytes, bf16 supported) of the visible GPU, or None."""
    idx = _visible_index()
    smi = shutil.which("nvidia-smi")
    if idx is None or smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    if not rows:
        return None
    name, mib, cap = rows[min(idx, len(rows) - 1)][:3]
    try:
        major = int(float(cap))
    except ValueError:
        major = 0
    return name, int(float(mib)) * 1024 ** 2, major >= 8  # bf16 from Ampere (compute capability 8.0) on


def _cgroup_room() -> int | None:
    """Memory left under this container's cgroup v2 limit, when there is one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def available_ram() -> int:
    """MemAvailable from /proc/meminfo (what the kernel can hand out without swapping), capped by the cgroup."""
    avail = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if not avail and hasattr(os, "sysconf"):
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError):
            avail = 0
    room = _cgroup_room()
    return min(avail, room) if room is not None and avail else (room or avail)


def detect(gpu_memory_gib: float | None = None) -> Machine:
    """This machine; ``gpu_memory_gib`` (``--gpu-memory``) plans for a GPU of that size instead of the visible one."""
    ram, cpus = available_ram(), os.cpu_count() or 1
    gpu = query_gpu()
    if gpu_memory_gib is not None:
        name = gpu[0] if gpu else None
        return Machine("cuda", name, int(gpu_memory_gib * GIB), gpu[2] if gpu else True, ram, cpus, "--gpu-memory")
    if gpu is None:
        return Machine("cpu", None, None, False, ram, cpus, "no GPU visible")
    return Machine("cuda", gpu[0], gpu[1], gpu[2], ram, cpus, "nvidia-smi")
