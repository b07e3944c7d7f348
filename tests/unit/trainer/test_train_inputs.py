"""Bad input to `python -m kolo_trainer train`: a clear message, the right exit code, nothing written.

These stop before any model is loaded (the checks run first), so they are fast and need no tiny model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kolo_trainer.spec import pop_data_root as _pop_data_root
from kolo_trainer.train.checkpoints import valid_checkpoints


def _train(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("KOLO_DEBUG", "KOLO_DATA")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "kolo_trainer", "train", *args, "--data-root", str(root)],
                          capture_output=True, text=True, env=e, timeout=120)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _fake_model(root: Path) -> None:
    (root / "models" / "m").mkdir(parents=True)
    (root / "models" / "m" / "config.json").write_text("{}")


def test_every_path_problem_is_reported_at_once_and_nothing_is_written(data_root: Path) -> None:
    before = _snapshot(data_root)
    r = _train(data_root, "--train-data", "data/missing.jsonl", "--base-model", "models/nope",
               "--early-stopping-patience", "2", "--output-dir", "run")
    assert r.returncode == 2, r.stderr
    err = r.stderr
    assert "3 problems" in err and "Traceback" not in err
    assert "--train-data: data/missing.jsonl not found" in err
    assert "--base-model: models/nope not found" in err
    assert "--early-stopping-patience needs eval data" in err
    assert not (data_root / "outputs" / "run").exists()
    assert _snapshot(data_root) == before


@pytest.mark.parametrize("args, expect", [
    (["--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
    (["--eval-split", "0.1", "--eval-data", "data/d.jsonl"], "--eval-data and --eval-split exclude each other"),
    (["--lora-rank", "0"], "--lora-rank"),
    (["--output-dir", "../escape"], "--output-dir"),
    (["--learning-rate", "nan"], "--learning-rate: must be a finite number"),
])
def test_bad_option_combinations_exit_2(data_root: Path, args: list[str], expect: str) -> None:
    (data_root / "data" / "d.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    _fake_model(data_root)
    r = _train(data_root, "--train-data", "data/d.jsonl", "--base-model", "models/m", *args)
    assert r.returncode == 2, r.stderr
    assert expect in r.stderr and "Traceback" not in r.stderr


def test_cuda_only_methods_are_refused_on_cpu(data_root: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for CPU-only machines")
    (data_root / "data" / "d.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    _fake_model(data_root)
    r = _train(data_root, "--train-data", "data/d.jsonl", "--base-model", "models/m", "--method", "qlora",
               "--backend", "unsloth")
    assert r.returncode == 2, r.stderr
    assert "--method qlora: 4-bit bitsandbytes training needs a CUDA GPU" in r.stderr
    assert "--backend unsloth: unsloth needs a CUDA GPU" in r.stderr
    assert not (data_root / "outputs" / "model").exists()


def test_invalid_rows_stop_before_training_with_file_and_line(data_root: Path) -> None:
    pytest.importorskip("torch")
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}]}
    (data_root / "data" / "d.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n{not json\n")
    _fake_model(data_root)
    before = _snapshot(data_root)
    r = _train(data_root, "--train-data", "data/d.jsonl", "--base-model", "models/m", "--output-dir", "run")
    assert r.returncode == 3, r.stderr
    assert "data/d.jsonl:2:" in r.stderr and "data/d.jsonl:3:" in r.stderr and "--skip-invalid" in r.stderr
    assert not (data_root / "outputs" / "run").exists()
    assert _snapshot(data_root) == before


def test_data_root_flag_and_env_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _pop_data_root(["--epochs", "2", "--data-root", "/x"]) == ("/x", ["--epochs", "2"])
    assert _pop_data_root(["--data-root=/y", "--resume"]) == ("/y", ["--resume"])
    monkeypatch.setenv("KOLO_DATA", "/from-env")
    assert _pop_data_root(["--resume"]) == ("/from-env", ["--resume"])


def test_only_complete_checkpoints_count(tmp_path: Path) -> None:
    for n, complete in ((2, True), (10, True), (12, False)):
        d = tmp_path / f"checkpoint-{n}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in valid_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
