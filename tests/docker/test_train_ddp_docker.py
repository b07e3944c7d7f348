"""`kolo train --nproc 2` in the container (DockerTransport + torchrun): Ctrl-C -> exit 130 and "interrupted", both
ranks' RNG state in the checkpoint, no trainer left in the container, and `--resume` finishes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from test_docker_suite import _ps  # noqa: E402  (the suite's process listing inside the container)

pytestmark = pytest.mark.docker

EXAMPLE = Path(__file__).resolve().parents[2] / "container" / "kolo_trainer" / "assets" / "example.jsonl"


def test_ddp_ctrl_c_in_container_then_resume(kolo, running, data_root, tiny_model):
    shutil.copytree(tiny_model, data_root / "models" / "tiny")
    shutil.copy(EXAMPLE, data_root / "data" / "example.jsonl")
    args = ["train", "--base-model", "models/tiny", "--train-data", "data/example.jsonl", "--method", "full",
            "--max-steps", "40", "--save-steps", "4000", "--output-dir", "ddp", "--nproc", "2"]
    p = kolo.popen(*args, stderr=subprocess.STDOUT)
    seen = []
    for line in p.stdout:
        seen.append(line)
        if line.startswith("[train] step 2/"):
            break
    else:
        pytest.fail("".join(seen[-50:]))
    assert "kolo_trainer.train.launch" in _ps(running["KOLO_CONTAINER"])
    p.send_signal(signal.SIGINT)
    rest, _ = p.communicate(timeout=180)
    assert p.returncode == 130, rest
    assert "kolo_trainer" not in _ps(running["KOLO_CONTAINER"])
    m = json.loads((data_root / "outputs" / "ddp" / "kolo.json").read_text())
    assert m["status"] == "interrupted", m.get("status")
    ck = data_root / "outputs" / "ddp" / "checkpoints" / f"checkpoint-{m['train']['global_step']}"
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {x.name for x in ck.iterdir()}
    r = kolo(*args, "--resume", timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    m = json.loads((data_root / "outputs" / "ddp" / "kolo.json").read_text())
    assert m["status"] == "finished" and m["train"]["global_step"] == 40
