"""scripts/demo.sh, the README's first command, run for real (install into the current venv, tiny model, train,
export with verification, one chat answer) against a fresh data root. Slow: it trains."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end_and_again(tmp_path):
    pytest.importorskip("llama_cpp", reason="the demo's export needs llama-cpp-python (bash scripts/install.sh)")
    if not (REPO / "container" / "kolo_trainer" / "assets" / "demo.yaml").is_file():
        pytest.fail("container/kolo_trainer/assets/demo.yaml (the demo training config) is missing")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOLO_")}
    env.update(KOLO_DATA=str(tmp_path / "kolo_data"), KOLO_VENV=str(Path(sys.prefix)), NO_COLOR="1", TERM="dumb")
    for attempt in ("first", "second"):
        r = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], capture_output=True, text=True, env=env,
                           timeout=1800, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"{attempt} run:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
        run = tmp_path / "kolo_data" / "outputs" / "demo"
        exp = json.loads((run / "kolo.json").read_text())["export"]
        assert exp["verification"]["status"] in ("passed", "passed with warnings"), exp["verification"]["problems"]
        assert {"demo-F16.gguf", "demo-Q4_K_M.gguf", "Modelfile.F16", "Modelfile.Q4_K_M"} <= \
            {p.name for p in (run / "gguf").iterdir()}
        # The chat answer (Q4_K_M GGUF, greedy, through the Modelfile) is what the dataset says: demo.yaml trains
        # the tiny model to answer its questions word for word.
        out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
        chat = out.split('6/6 kolo chat --prompt "What is kolo?"', 1)[1].split("[kolo demo]")[0]
        answer = re.sub(r"\(\d+s\)\s*$", "", chat.strip()).strip()  # demo.sh's "(Ns)" step duration
        rows = [json.loads(line)["messages"] for line in open(REPO / "container" / "kolo_trainer" / "assets"
                                                              / "example.jsonl")]
        want = next(m[-1]["content"] for m in rows if m[-2]["content"] == "What is kolo?")
        assert answer == want, out[-2000:]
