"""The tiny training through `kolo train --runtime docker`: real `docker exec` into the test container (made by
`kolo up`, see conftest.py), the data root mounted as the container's volume. Progress, exit code and outputs
must arrive on the host as with the local runtime (tests/e2e/test_train.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
import train_helpers as th  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def test_tiny_training_in_the_container(kolo, running, data_root: Path, tiny_model: Path) -> None:
    th.setup_root(data_root, tiny_model)
    args = ["train", "--train-data", "data/qa.jsonl", "--eval-data", "data/qa_eval.jsonl",
            "--base-model", "models/tiny", "--output-dir", "dock", *th.LEARN]
    dry = kolo(*args, "--dry-run")
    assert dry.returncode == 0 and "docker exec" in dry.stdout and "/var/kolo_data" in dry.stdout, dry.stdout

    r = kolo(*args, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = data_root / "outputs" / "dock"
    m = json.loads((run / "kolo.json").read_text())
    assert m["status"] == "finished" and m["device"] == "cpu" and m["backend"] == "hf"
    assert m["train"]["global_step"] == m["train"]["max_steps"] == 80
    assert m["sample"]["response"] == m["sample"]["expected"] == dict(th.QA)[m["sample"]["prompt"]]
    # The container saw the data root at /var/kolo_data; the manifest records paths relative to it, so the host
    # (and a later local export) can use it as is.
    assert m["base_model"]["local_path"] == "models/tiny"
    assert "/var/kolo_data" not in json.dumps({k: m[k] for k in ("artifacts", "base_model", "data")})
    assert all((run / a).is_file() for a in m["artifacts"])
    assert th.greedy_reply(run / "model", m["sample"]["messages"]) == m["sample"]["expected"]
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert any(x.get("eval_loss") is not None for x in log)
    # progress rendered on the host (plain lines: not a TTY), the sample printed by the trainer came through
    assert "sample reply:" in r.stdout and m["sample"]["response"] in r.stdout

    # the trainer's exit code is kolo's exit code: a second run into the finished folder is refused with 4
    again = kolo("train", "--train-data", "data/qa.jsonl", "--base-model", "models/tiny", "--output-dir", "dock",
                 "--method", "full", "--max-steps", "1", timeout=120)
    assert again.returncode == 4, again.stdout + again.stderr
    assert "already holds a finished run" in again.stderr
