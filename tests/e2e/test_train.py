"""End-to-end training on the tiny model, through the real `kolo train --runtime local` (and the trainer's own
entry point where a signal must reach the trainer process itself).

Each test trains for real on a CPU: a 2-layer, hidden-256 Llama built by ``kolo_trainer.tiny`` (session fixture).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import train_helpers as th  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.fixture()
def root(data_root: Path, tiny_model: Path) -> Path:
    return th.setup_root(data_root, tiny_model)


def test_train_reproduces_answer_and_writes_complete_manifest(kolo, root: Path) -> None:
    r = kolo("--runtime", "local", "train", "--train-data", "data/qa.jsonl", "--eval-data", "data/qa_eval.jsonl",
             "--base-model", "models/tiny", "--output-dir", "qa", *th.LEARN, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = root / "outputs" / "qa"
    m = json.loads((run / "kolo.json").read_text())

    # --- the model learned: the trainer's own sample, and an independent reload of model/ decoding greedily
    s = m["sample"]
    qa = dict(th.QA)
    assert s["messages"] == [{"role": "system", "content": th.SYSTEM}, {"role": "user", "content": s["prompt"]}]
    assert s["expected"] == qa[s["prompt"]]  # the prompt is a training row's question, expected its answer
    assert s["response"] == s["expected"], s
    assert s["matches_data"] is True
    assert th.greedy_reply(run / "model", s["messages"]) == qa[s["prompt"]]

    # --- losses: train loss fell; eval loss was logged (from --eval-data)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    train_losses = [x["loss"] for x in log if x.get("loss") is not None]
    eval_losses = [x["eval_loss"] for x in log if x.get("eval_loss") is not None]
    assert len(train_losses) >= 10 and train_losses[-1] < 0.5 * train_losses[0], train_losses
    assert len(eval_losses) >= 8  # every 10 steps of 80
    assert all(x["tokens_per_s"] > 0 for x in log if x.get("loss") is not None and x["step"] > 1)
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --- progress events reached the host: kolo renders them as plain lines when not a TTY
    assert "[train]" in r.stdout or "train" in r.stdout

    # --- the manifest: values, not just keys
    assert m["status"] == "finished"
    assert m["options"]["epochs"] == 40 and m["options"]["method"] == "full"
    assert m["options"]["learning_rate"] == 0.002 and m["options"]["weight_decay"] == 0.0
    data_sha = hashlib.sha256((root / "data" / "qa.jsonl").read_bytes()).hexdigest()
    d = m["data"]
    assert (d["train_file"], d["sha256"], d["format"]) == ("data/qa.jsonl", data_sha, "messages")
    assert (d["rows_total"], d["rows_kept"], d["rows_dropped"], d["dropped"]) == (8, 8, 0, [])
    assert (d["eval_file"], d["eval_rows"]) == ("data/qa_eval.jsonl", 2)
    t = d["tokens"]
    assert 0 < t["min"] <= t["p50"] <= t["p95"] <= t["max"] < 100 and t["truncated_rows"] == 0
    assert m["base_model"] == {"id": "models/tiny", "revision": None, "local_path": "models/tiny"}
    ct = m["chat_template"]
    tok_cfg = json.loads((root / "models" / "tiny" / "tokenizer_config.json").read_text())
    assert ct["jinja"] == tok_cfg["chat_template"] and ct["registry_match"] == "chatml"
    assert ct["stop"][0] == "<|im_end|>" and "{{" in ct["ollama_template"]
    assert ct["system"] == th.SYSTEM
    assert (m["backend"], m["method"], m["device"]) == ("hf", "full", "cpu")
    assert m["versions"]["torch"] == md.version("torch")
    assert m["versions"]["transformers"] == md.version("transformers")
    tr = m["train"]
    assert (tr["global_step"], tr["max_steps"]) == (80, 80)
    assert tr["final_loss"] == pytest.approx(train_losses[-1]) and tr["final_eval_loss"] == eval_losses[-1]
    assert m["memory"]["peak_gpu_bytes_before"] is None and m["memory"]["peak_gpu_bytes_after"] is None
    assert m["memory"]["peak_rss_bytes"] > 50 * 2**20
    assert m["timings"]["train_s"] > 0 and m["timings"]["total_s"] >= m["timings"]["train_s"]
    arts = m["artifacts"]
    for a in ("model/model.safetensors", "model/config.json", "model/tokenizer_config.json", "loss.png",
              "train_log.jsonl"):
        assert a in arts
    assert all((run / a).is_file() for a in arts)
    assert not (run / ".lock").exists()
    assert not any(p.name.startswith(".tmp-") for p in run.rglob("*"))

    # --- a finished run is not overwritten by accident
    again = kolo("--runtime", "local", "train", "--train-data", "data/qa.jsonl", "--base-model", "models/tiny",
                 "--output-dir", "qa", "--method", "full", "--max-steps", "1", timeout=120)
    assert again.returncode == 4, again.stdout + again.stderr
    assert "already holds a finished run" in again.stderr and "--overwrite" in again.stderr
    assert json.loads((run / "kolo.json").read_text()) == m


def test_sigkill_then_resume_ends_at_planned_step(kolo, root: Path) -> None:
    args = ["--train-data", "data/qa.jsonl", "--base-model", "models/tiny", "--output-dir", "kill",
            "--method", "full", "--max-steps", "60", "--batch-size", "2", "--save-steps", "4",
            "--logging-steps", "1", "--learning-rate", "0.001"]
    run = root / "outputs" / "kill"
    p = th.trainer_popen(root, *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        th.wait_for(lambda: any((c / "trainer_state.json").exists() for c in run.glob("checkpoints/checkpoint-*")),
                    240, p, "the first checkpoint")
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL
    # The killed run left its lock file (a dead pid) and a manifest still saying "running".
    holder = json.loads((run / ".lock").read_text())
    assert holder["pid"] == p.pid and holder["host"] == socket.gethostname()
    assert json.loads((run / "kolo.json").read_text())["status"] == "running"
    from kolo_trainer.train.checkpoints import valid_checkpoints

    last = valid_checkpoints(run / "checkpoints")[-1]
    killed_at = int(last.name.split("-")[1])
    assert 4 <= killed_at < 60, "the run finished before it could be killed; make it longer"

    # Without --resume the folder is refused (it holds checkpoints)...
    refused = kolo("--runtime", "local", "train", *args, timeout=120)
    assert refused.returncode == 4 and "--resume" in refused.stderr, refused.stderr
    # ...with --resume it continues from the last complete checkpoint and ends at the planned step.
    r = kolo("--runtime", "local", "train", *args, "--resume", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((run / "kolo.json").read_text())
    assert m["status"] == "finished"
    assert m["train"]["global_step"] == 60 and m["train"]["max_steps"] == 60
    assert m["resumed_from"] == f"checkpoints/{last.name}"
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 61)), steps  # no gap, no step logged twice across the kill
    assert not (run / ".lock").exists()


def test_second_run_refused_while_first_runs_and_sigterm_checkpoints(kolo, root: Path) -> None:
    args = ["--train-data", "data/qa.jsonl", "--base-model", "models/tiny", "--output-dir", "busy",
            "--method", "full", "--max-steps", "100000", "--save-steps", "100000", "--logging-steps", "1"]
    run = root / "outputs" / "busy"
    p = th.trainer_popen(root, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        th.wait_for(lambda: (run / "train_log.jsonl").exists(), 240, p, "the first logged training step")
        second = kolo("--runtime", "local", "train", *args, timeout=120)
        assert second.returncode == 4, second.stdout + second.stderr
        assert "in use by another kolo process" in second.stderr and f"pid {p.pid}" in second.stderr
        # Ctrl-C / SIGTERM: the trainer saves a checkpoint at the end of the step and exits non-zero.
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
    m = json.loads((run / "kolo.json").read_text())
    assert m["status"] == "interrupted"
    step = m["train"]["global_step"]
    assert 1 <= step < 100000
    assert (run / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert "--resume" in err
    assert not (run / ".lock").exists()


def test_packing_trains_padding_free(root: Path) -> None:
    """--packing: one [1, total] row per batch with restarting position_ids (isolation itself is asserted in
    tests/unit/trainer/test_train_collate.py); here the real Trainer runs it and counts every token as real."""
    p = th.trainer_popen(root, "--train-data", "data/qa.jsonl", "--base-model", "models/tiny", "--output-dir",
                         "packed", "--method", "full", "--packing", "--max-steps", "6", "--batch-size", "4",
                         "--learning-rate", "0.002", "--logging-steps", "1")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    m = json.loads((root / "outputs" / "packed" / "kolo.json").read_text())
    assert m["options"]["packing"] is True and m["train"]["global_step"] == 6
    log = [json.loads(line) for line in (root / "outputs" / "packed" / "train_log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in log if "loss" in x]
    assert len(losses) == 6 and losses[-1] < losses[0]
    # 6 steps x 4 rows = 3 epochs of the 8 rows: every token of every row counted 3 times, no padding
    lengths_mean = m["data"]["tokens"]["mean"]
    assert m["train"]["tokens_seen"] == pytest.approx(3 * 8 * lengths_mean, abs=3 * 8 * 0.05 + 1)
