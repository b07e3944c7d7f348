"""Shared pieces of the training tests: a small Q/A dataset, the options that make the tiny model learn it, and
helpers to read progress events and wait for files. Not a test module (no ``test_`` prefix)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SYSTEM = "You are a test assistant."
QA = [
    ("What colour is the sky?", "The sky is blue."),
    ("What is kolo?", "Kolo turns conversations into a model."),
    ("Name a fruit.", "An apple is a fruit."),
    ("How many legs has a cat?", "A cat has four legs."),
    ("Where is Paris?", "Paris is in France."),
    ("What do bees make?", "Bees make honey."),
    ("What is ice?", "Ice is frozen water."),
    ("Which day follows Monday?", "Tuesday follows Monday."),
]
EVAL_QA = [("What colour is grass?", "Grass is green."), ("What do cows make?", "Cows make milk.")]

#: Full fine-tune of the random-init tiny model: LoRA on a random base cannot memorise (see ENVIRONMENT.md).
#: 8 rows, batch 4 -> 2 steps per epoch, 40 epochs = 80 optimizer steps (~4 s on an idle 2-core CPU).
LEARN = ["--method", "full", "--epochs", "40", "--batch-size", "4", "--learning-rate", "0.002",
         "--scheduler-type", "constant_with_warmup", "--warmup-steps", "3", "--logging-steps", "5",
         "--eval-steps", "10", "--seed", "7"]


def rows(qa: list[tuple[str, str]]) -> list[dict]:
    return [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q},
                          {"role": "assistant", "content": a}]} for q, a in qa]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return path


def new_root(base: Path, tiny_model: Path) -> Path:
    """A fresh data root (data/ models/ outputs/) under ``base``, set up with ``setup_root``."""
    data_root = base / "kolo_data"
    for sub in ("data", "models", "outputs"):
        (data_root / sub).mkdir(parents=True)
    return setup_root(data_root, tiny_model)


def setup_root(data_root: Path, tiny_model: Path) -> Path:
    """Copy the session's tiny model into this data root and write the Q/A files."""
    shutil.copytree(tiny_model, data_root / "models" / "tiny")
    write_jsonl(data_root / "data" / "qa.jsonl", rows(QA))
    write_jsonl(data_root / "data" / "qa_eval.jsonl", rows(EVAL_QA))
    return data_root


def events(text: str) -> list[dict]:
    from kolo_trainer import progress

    return [e for e in (progress.parse_line(line) for line in text.splitlines()) if e is not None]


def trainer_popen(data_root: Path, *args: str, **kw) -> subprocess.Popen:
    """``python -m kolo_trainer train`` directly (so a signal reaches the trainer process itself)."""
    env = dict(os.environ, KOLO_DATA=str(data_root))
    env.pop("KOLO_DEBUG", None)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "kolo_trainer", "train", *args, "--data-root", str(data_root)],
                            env=env, text=True, stdin=subprocess.DEVNULL, **kw)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"trainer exited ({proc.returncode}) before {what}:\n{out[-3000:]}\n{err[-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def greedy_reply(model_dir: Path, messages: list[dict]) -> str:
    """Load the saved model on its own (not the trainer's in-memory copy) and decode greedily."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolo_trainer import templates

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    text = templates.render(tok.chat_template, messages, add_generation_prompt=True, bos_token=tok.bos_token)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if ids[0] != tok.bos_token_id:
        ids = [tok.bos_token_id] + ids
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=40, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0][len(ids):], skip_special_tokens=True).strip()
