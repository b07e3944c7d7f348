"""The estimate next to what the run measured, for kolo.json's ``plan`` section: accuracy stays visible over time.

``measured``: the process's peak RSS (``resource.getrusage``, as the trainer's ``memory`` section), the GPU's
``torch.cuda.max_memory_allocated`` (the figure the GPU estimate models: allocated bytes, no CUDA context), and
the bytes the run folder holds after training (what the disk estimate's ``train`` part covers; the export adds its
own files later).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .estimate import Plan, to_dict


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed)."""
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def _ratio(measured: int | None, estimated: int | None) -> float | None:
    return round(measured / estimated, 3) if measured and estimated else None


def section(p: Plan | None, memory: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """kolo.json ``plan``: {estimate, measured, compare}; None when no estimate was made."""
    if p is None or p.arch is None:
        return None
    est = to_dict(p)
    gpu = [v for v in (memory.get("peak_gpu_bytes_before"), memory.get("peak_gpu_bytes_after")) if v]
    measured = {"peak_rss_bytes": memory.get("peak_rss_bytes"), "peak_gpu_bytes": max(gpu) if gpu else None,
                "run_folder_bytes": folder_bytes(run_dir)}
    device_measured = measured["peak_gpu_bytes"] if p.setup.device == "cuda" else measured["peak_rss_bytes"]
    kept = p.disk.checkpoint_each * p.disk.checkpoints_kept + p.disk.final
    compare = {
        "device_memory": {"estimated": p.memory.peak, "measured": device_measured,
                          "ratio": _ratio(device_measured, p.memory.peak)},
        # measured: rank 0's own process; estimated: per process (host_ram counts every local rank)
        "host_ram": {"estimated": p.host_ram // p.setup.nproc, "measured": measured["peak_rss_bytes"],
                     "ratio": _ratio(measured["peak_rss_bytes"], p.host_ram // p.setup.nproc)},
        "train_disk": {"estimated": kept, "measured": measured["run_folder_bytes"],
                       "ratio": _ratio(measured["run_folder_bytes"], kept)},
    }
    return {"estimate": est, "measured": measured, "compare": compare}


def with_export(plan: dict[str, Any] | None, run_dir: Path, quantizations: dict[str, dict]) -> dict[str, Any] | None:
    """kolo.json ``plan`` after an export: the bytes it wrote (merged/ and each GGUF) next to the estimate's figures
    for the same files. None when the run has no plan section (trained before kolo planned, or --no-plan-check)."""
    disk = ((plan or {}).get("estimate") or {}).get("disk")
    if not disk:
        return None
    ggufs = {q: info for q, info in quantizations.items() if q != "LORA"}
    merged = run_dir / "merged"
    estimated = (disk.get("merged_bytes") or 0 if merged.is_dir() else 0) + \
        sum((disk.get("gguf_bytes") or {}).get(q, 0) for q in ggufs)
    measured = (folder_bytes(merged) if merged.is_dir() else 0) + sum(int(i.get("bytes") or 0) for i in ggufs.values())
    assert plan is not None
    return {**plan, "measured": {**(plan.get("measured") or {}), "export_bytes": measured},
            "compare": {**(plan.get("compare") or {}),
                        "export_disk": {"estimated": estimated, "measured": measured,
                                        "ratio": _ratio(measured, estimated)}}}
