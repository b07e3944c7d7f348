"""The plan's verdict, for real processes: `kolo plan` and `kolo train` refuse a run that cannot fit before any
model loads, name the changes that fit, and --no-plan-check lets it through.

"Before any model load" is proven with a model folder that holds only a config.json (a 70B Llama's shape, no
weights): the plan judges it from the config alone, and any attempt to load it would fail differently.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kolo_trainer.plan import main as plan_main
from kolo_trainer.plan.estimate import Plan

BIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 80,
       "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 128256,
       "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
ROWS = [{"messages": [{"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": "answer."}]}
        for i in range(8)]


@pytest.fixture()
def root(data_root: Path) -> Path:
    (data_root / "models" / "big").mkdir()
    (data_root / "models" / "big" / "config.json").write_text(json.dumps(BIG))
    (data_root / "data" / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return data_root


def _trainer(root: Path, verb: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kolo_trainer", verb, "--data-root", str(root), *args],
                          capture_output=True, text=True, timeout=300, env={**_env(), "CUDA_VISIBLE_DEVICES": ""})


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("KOLO_")}


def test_kolo_plan_says_a_70b_full_fine_tune_does_not_fit_and_what_would(kolo, root: Path):
    r = kolo("--runtime", "local", "plan", "--base-model", "models/big", "--train-data", "data/d.jsonl",
             "--method", "full", "--gpu-memory", "80", "--json")
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    p = json.loads(r.stdout)
    assert p["fits"] is False and p["params"]["total"] > 69e9
    assert p["memory"]["parts"]["optimizer"] == 4 * p["params"]["total"]  # bf16 AdamW moments
    assert any("GPU memory" in x for x in p["problems"])
    # every advice entry was estimated again: QLoRA of a 70B model fits 80 GiB, a smaller batch alone does not
    changes = {a["change"]: a for a in p["advice"]}
    assert changes["QLoRA"]["fits"] and changes["QLoRA"]["need_bytes"] < 80 * 2 ** 30
    assert "smaller batch" not in changes
    r = kolo("--runtime", "local", "plan", "--base-model", "models/big", "--train-data", "data/d.jsonl",
             "--method", "qlora", "--gpu-memory", "80")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "verdict: fits" in r.stdout and "Traceback" not in r.stderr


def test_kolo_train_refuses_before_the_host_starts_the_trainer(kolo, root: Path):
    r = kolo("--runtime", "local", "train", "--base-model", "models/big", "--train-data", "data/d.jsonl",
             "--output-dir", "r", "--gpu-memory", "0.01")
    assert r.returncode == 2, r.stderr
    assert "does not fit" in r.stderr and "hint:" in r.stderr and "--no-plan-check" in r.stderr
    assert "@@kolo" not in r.stdout and not (root / "outputs" / "r").exists()


def test_the_trainer_refuses_on_cpu_ram_before_loading(root: Path):
    """CPU training of a 70B model in fp32: the RAM is the budget; the refusal comes from the check stage."""
    r = _trainer(root, "train", "--base-model", "models/big", "--train-data", "data/d.jsonl", "--output-dir", "r",
                 "--method", "lora")
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "of RAM (CPU training)" in r.stderr and "Traceback" not in r.stderr
    assert '"stage": "model"' not in r.stdout and '"stage": "template"' not in r.stdout
    assert not (root / "outputs" / "r").exists()


def test_no_plan_check_goes_on_to_the_load(root: Path):
    """With the check off the same run gets past the plan and fails where a weightless folder must: loading."""
    r = _trainer(root, "train", "--base-model", "models/big", "--train-data", "data/d.jsonl", "--output-dir", "r",
                 "--method", "lora", "--no-plan-check")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "does not fit" not in r.stderr and "cannot load" in r.stderr


def test_a_run_that_fits_is_left_alone_and_the_plan_of_the_tiny_model(root: Path, tiny_model: Path):
    shutil.copytree(tiny_model, root / "models" / "tiny")
    r = _trainer(root, "plan", "--base-model", "models/tiny", "--train-data", "data/d.jsonl", "--json")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["fits"] and p["memory"]["device"] == "cpu" and p["time"]["rows"] == 8
    assert p["disk"]["need_bytes"] <= p["disk"]["free_bytes"]


def test_unknown_model_and_exit_codes(root: Path):
    r = _trainer(root, "plan", "--base-model", "org/not-cached", "--train-data", "data/d.jsonl")
    assert r.returncode == 1 and "cannot plan org/not-cached" in r.stderr and "Traceback" not in r.stderr
    r = _trainer(root, "plan", "--base-model", "models/none")
    assert r.returncode == 2 and "models/none not found" in r.stderr
    p = Plan(model="m", config="c", arch=None)
    assert plan_main.exit_code(p) == 0
    p.disk_problem = "the run needs ~9 GiB of disk"
    assert plan_main.exit_code(p) == 1
    p.problems.append("too big")
    assert plan_main.exit_code(p) == 2


def test_a_disk_too_small_for_the_checkpoints_is_refused_before_loading(tmp_path: Path, tiny_model: Path):
    """A data root on a tmpfs that holds the model but not the two checkpoints the run will write (each: weights +
    AdamW states, 3x the fp32 model): refused by the estimate (exit 1) before the model loads, nothing written."""
    import os

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    root = tmp_path / "small"
    root.mkdir()
    size = 2 * sum(p.stat().st_size for p in tiny_model.rglob("*") if p.is_file()) + (1 << 20)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], check=True)
    try:
        for sub in ("data", "models", "outputs"):
            (root / sub).mkdir()
        shutil.copytree(tiny_model, root / "models" / "tiny")
        (root / "data" / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
        r = _trainer(root, "train", "--base-model", "models/tiny", "--train-data", "data/d.jsonl", "--output-dir",
                     "r", "--method", "full", "--max-steps", "4", "--save-steps", "2")
        assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
        assert "not enough free disk" in r.stderr and "checkpoints included" in r.stderr
        assert "--no-plan-check" in r.stderr and '"stage": "model"' not in r.stdout
        assert not (root / "outputs" / "r").exists()
    finally:
        subprocess.run(["umount", str(root)], check=False)
