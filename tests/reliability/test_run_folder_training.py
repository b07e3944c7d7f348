"""Issue 10's cases that need a real training run (the tiny model, CPU, local runtime, through the real `kolo`):

* train + export are two processes chained by the host; --resume of an exported run withdraws the old GGUFs;
* a checkpoint with a truncated file is skipped by --resume, which continues from the newest complete one;
* a disk that fills up during training ends in one message naming the disk, and kolo.json does not stay "running".
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from train_helpers import LEARN, setup_root

pytestmark = pytest.mark.e2e

LOCAL = {"KOLO_RUNTIME": "local"}
BASE = ["train", "--train-data", "data/qa.jsonl", "--base-model", "models/tiny", *LEARN]


def _manifest(root: Path, run: str) -> dict:
    return json.loads((root / "outputs" / run / "kolo.json").read_text())


def test_exported_run_resumed_from_the_last_complete_checkpoint(kolo, data_root: Path, tiny_model: Path) -> None:
    pytest.importorskip("llama_cpp", reason="export needs llama-cpp-python (scripts/install.sh)")
    setup_root(data_root, tiny_model)
    run = data_root / "outputs" / "r"
    r = kolo(*BASE, "--output-dir", "r", "--max-steps", "10", "--save-steps", "5", "--quantization", "F16",
             env=LOCAL, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    first = _manifest(data_root, "r")
    assert first["status"] == "finished" and first["export"]["status"] == "finished"
    assert (run / "gguf" / "r-F16.gguf").is_file()
    assert "[export]" in r.stdout or "export" in r.stdout  # the chained export process reported its stages

    # A kill while saving left the newest checkpoint with a truncated weights file.
    weights = run / "checkpoints" / "checkpoint-10" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)

    r = kolo(*BASE, "--output-dir", "r", "--max-steps", "12", "--save-steps", "5", "--resume", env=LOCAL,
             timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "skipping incomplete checkpoint(s) checkpoint-10" in out
    again = _manifest(data_root, "r")
    assert again["resumed_from"] == "checkpoints/checkpoint-5" and again["train"]["global_step"] == 12
    # The GGUF came from the old weights: it is withdrawn, never offered as this run's model.
    assert not (run / "gguf").exists() and not (run / "merged").exists() and again.get("export") is None
    listed = kolo("list", "--json", "--ollama", "http://127.0.0.1:9")
    row = {x["name"]: x for x in json.loads(listed.stdout)["runs"]}["r"]
    assert row["status"] == "finished" and row["quantizations"] == []


def test_a_disk_that_fills_during_training(kolo, tmp_path: Path, tiny_model: Path) -> None:
    """The data root on a small tmpfs, the plan's disk check switched off (it counts the checkpoints and would refuse
    this run up front: test_plan_check covers that): the first checkpoint (weights + optimizer state, ~3x the
    model) does not fit, and the run fails cleanly mid-training."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    root = tmp_path / "small"
    root.mkdir()
    model_bytes = sum(p.stat().st_size for p in tiny_model.rglob("*") if p.is_file())
    size = model_bytes + 2 * model_bytes + (1 << 20)  # the copy, what the estimate asks for, and 1 MiB
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], check=True)
    try:
        for sub in ("data", "models", "outputs"):
            (root / sub).mkdir()
        setup_root(root, tiny_model)
        r = kolo("--data-root", str(root), *BASE, "--output-dir", "full", "--max-steps", "4", "--save-steps", "2",
                 "--no-plan-check", env=LOCAL, timeout=600)
        out = r.stdout + r.stderr
        assert r.returncode == 1, out[-3000:]
        assert "Traceback" not in out and "ran out of space" in out and "--resume" in out, out[-3000:]
        status = _manifest(root, "full")["status"]
        assert status == "failed", status  # recorded even on the full disk (the last-resort write)
    finally:
        subprocess.run(["umount", str(root)], check=False)


def test_too_little_disk_is_refused_before_training(kolo, tmp_path: Path, tiny_model: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    root = tmp_path / "tiny-disk"
    root.mkdir()
    model_bytes = sum(p.stat().st_size for p in tiny_model.rglob("*") if p.is_file())
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={model_bytes + (1 << 20)}", "tmpfs", str(root)], check=True)
    try:
        for sub in ("data", "models", "outputs"):
            (root / sub).mkdir()
        setup_root(root, tiny_model)
        r = kolo("--data-root", str(root), *BASE, "--output-dir", "x", "--quantization", "Q8_0", env=LOCAL)
        out = r.stdout + r.stderr
        assert r.returncode == 1 and "not enough free disk" in out and "Traceback" not in out, out[-3000:]
        assert not (root / "outputs" / "x").exists()
    finally:
        subprocess.run(["umount", str(root)], check=False)


def test_train_and_export_do_not_import_each_other() -> None:
    """Train and export are separate processes: neither package imports the other (a trainer's patched model code
    must never reach export's verification)."""
    import ast

    import kolo_trainer

    pkg = Path(kolo_trainer.__file__).parent
    for side, other in (("train", "export"), ("export", "train")):
        for f in sorted((pkg / side).glob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    mod = node.module or ""
                    if node.level == 2:  # from ..other import x / from .. import other
                        targets = [f"kolo_trainer.{mod}"] if mod else [f"kolo_trainer.{a.name}" for a in node.names]
                    else:
                        targets = [mod] if node.level == 0 else []
                else:
                    continue
                bad = [t for t in targets if t == f"kolo_trainer.{other}" or t.startswith(f"kolo_trainer.{other}.")]
                assert not bad, f"{side}/{f.name} imports {bad}"
