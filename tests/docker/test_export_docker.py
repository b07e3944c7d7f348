"""The end-to-end path through the container: `kolo train` then `kolo export`, both with the docker runtime, and
the GGUFs + Modelfiles appear in the host's data folder (the bind-mounted data root), verified inside the container.

Uses the Docker suite's test container (tests/docker/conftest.py: the host venv and checkout mounted read-only, so
the llama.cpp converter installed in the venv by scripts/install.sh is the one the container runs) and the session
tiny model. Also marked e2e: it needs llama-cpp-python like the export suite.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "container" / "kolo_trainer" / "assets" / "example.jsonl"


def test_train_then_export_in_the_container(kolo, running, data_root, tiny_model):
    pytest.importorskip("llama_cpp", reason="export needs llama-cpp-python (bash scripts/install.sh)")
    from kolo_trainer.export import converter

    if converter.path() is None:
        pytest.skip("the llama.cpp converter is not installed in this venv "
                    "(python -m kolo_trainer.export.converter install)")
    shutil.copytree(tiny_model, data_root / "models" / "tiny")
    shutil.copy(EXAMPLE, data_root / "data" / "example.jsonl")
    r = kolo("train", "--base-model", "models/tiny", "--train-data", "data/example.jsonl", "--chat-template",
             "chatml", "--max-steps", "4", "--batch-size", "4", "--output-dir", "in docker", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = kolo("export", "in docker", "--quantization", "q4_k_m", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    gguf = data_root / "outputs" / "in docker" / "gguf"
    assert {p.name for p in gguf.iterdir()} == {"in docker-F16.gguf", "in docker-Q4_K_M.gguf", "Modelfile.F16",
                                                "Modelfile.Q4_K_M"}
    assert (gguf / "Modelfile.Q4_K_M").read_text().splitlines()[2] == "FROM ./in docker-Q4_K_M.gguf"
    exp = json.loads((data_root / "outputs" / "in docker" / "kolo.json").read_text())["export"]
    assert exp["status"] == "finished"
    assert exp["converter"]["path"].startswith(str(Path(__import__("sys").prefix)))  # the venv's own converter
    ver = exp["verification"]
    assert ver["tokens"]["equal"] == ver["tokens"]["prompts"] > 0, ver["problems"]
    assert all(v["ok"] for v in ver["load"].values())
    assert ver["status"] in ("passed", "passed with warnings"), ver["problems"]
    # Written inside the container, readable here: the host can hand these to Ollama directly.
    assert (gguf / "in docker-Q4_K_M.gguf").read_bytes()[:4] == b"GGUF"
