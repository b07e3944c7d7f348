"""Which checkpoints ``--resume`` may use: only complete ones.

A kill, a power cut or a full disk while the Trainer saves leaves a checkpoint folder with a truncated file.
Trainer writes ``trainer_state.json`` last, so a folder without it is incomplete; but a truncated
``model.safetensors`` or ``optimizer.pt`` next to a complete ``trainer_state.json`` happens too (the file system
flushed them out of order). Resuming from one of those fails deep inside transformers with a traceback, so each
file is checked with its own format's cheapest integrity test and the newest complete checkpoint wins.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path


def _safetensors_ok(path: Path) -> bool:
    # safetensors' own reader validates that the file holds every byte its header promises.
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            return True
    except Exception:  # SafetensorError (truncated, bad header) or OSError: either way not usable
        return False


def _torch_file_ok(path: Path) -> bool:
    # torch.save writes a zip archive; a truncated one has lost its central directory (read at the end).
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None if path.stat().st_size < 64 * 2**20 else bool(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def complete(folder: Path) -> bool:
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    checks = [(_safetensors_ok, "*.safetensors"), (_torch_file_ok, "*.pt"), (_torch_file_ok, "*.bin"), (_torch_file_ok, "*.pth")]
    return all(ok(p) for ok, pattern in checks for p in folder.glob(pattern))


def valid_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (see the module docstring)."""
    out = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.glob("checkpoint-*"):
            suffix = p.name.split("-", 1)[1]
            if p.is_dir() and suffix.isdigit() and complete(p):
                out.append(p)
    return sorted(out, key=lambda p: int(p.name.split("-", 1)[1]))


def incomplete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint folders that :func:`valid_checkpoints` skips (reported, so a skipped one is not a surprise)."""
    valid = set(valid_checkpoints(ckpt_dir))
    return sorted(p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and p not in valid) \
        if ckpt_dir.is_dir() else []
