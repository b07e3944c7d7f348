"""bench/gpu_backends.py times steps without the warm-up: the per-step times it reads from a run's train_log.jsonl
are checked against a real (CPU) kolo training run logged every step; the warm-up split on those real times."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "bench"))

import gpu_backends  # noqa: E402  (bench/ is not a package: its scripts import their siblings this way)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from kolo_trainer import tiny

    root = tmp_path_factory.mktemp("bench-root")
    (root / "data").mkdir()
    shutil.copy(tiny.example_dataset_path(), root / "data" / "d.jsonl")
    tiny.build(root / "models" / "tiny")
    argv = [sys.executable, "-m", "kolo_trainer", "train", "--data-root", str(root), "--base-model", "models/tiny",
            "--train-data", "data/d.jsonl", "--output-dir", "b", "--max-steps", "8", "--logging-steps", "1"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "outputs" / "b"


def test_step_times_come_from_every_logged_step(run):
    times = gpu_backends.step_times(run / "train_log.jsonl")
    man = json.loads((run / "kolo.json").read_text())
    assert len(times) == man["train"]["global_step"] == 8
    assert all(t > 0 for t in times)
    # the per-step times account for the measured training time (which also holds the Trainer's own overhead)
    assert sum(times) <= man["timings"]["train_s"] * 1.05


def test_warmup_is_reported_apart(run):
    times = gpu_backends.step_times(run / "train_log.jsonl")
    res = gpu_backends.split_warmup(times, 3)
    assert res["warmup_steps"] == 3 and res["steady_steps"] == 5
    assert res["warmup_s"] == pytest.approx(sum(times[:3]))
    assert res["step_s"] == pytest.approx(sum(times[3:]) / 5)
    with pytest.raises(ValueError, match="raise --steps"):
        gpu_backends.split_warmup(times, 8)


def test_without_a_gpu_the_benchmark_says_so_and_exits_2():
    from kolo_trainer.train import backends

    if backends.nvidia_present():
        pytest.skip("this machine has an NVIDIA GPU")
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_backends.py")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "not measured (no GPU)" in r.stdout
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_backends.py"), "--steps", "5", "--warmup", "5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--warmup 5 must be" in r.stderr
