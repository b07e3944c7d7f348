"""`kolo eval` for real: one tiny run trained by the real `kolo train --runtime local` (full fine-tune, a quarter of
the rows held out by --eval-split) and exported to F16 + Q4_0 by the real export chain, shared by the module.

What must hold, without magic numbers:
* the HF model's loss on the rows kolo eval picks equals the eval loss training itself reported on its held-out
  rows at the last step (the same rows, the same assistant-only masking, the same model);
* F16 agrees with HF almost exactly and Q4_0 measurably less: ordering of KL, top-1 and |loss - HF loss|;
* a judge (a stand-in server on 127.0.0.1 in this test, standing in for a real Ollama / OpenAI-compatible judge)
  gets kolo's judge prompt, the key only through the environment, and its scores land in eval.json;
* bad input (unknown run, a run without GGUF, an empty eval file, a key in the judge URL) is one clear message with
  the documented exit code, and nothing is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import QA, rows, write_jsonl  # noqa: E402

pytestmark = pytest.mark.e2e

RUN = "ev"
MORE_QA = [("What is snow?", "Snow is frozen rain."), ("What do hens lay?", "Hens lay eggs."),
           ("Which month follows May?", "June follows May."), ("What colour is coal?", "Coal is black.")]
TRAIN = ["--method", "full", "--epochs", "30", "--batch-size", "3", "--learning-rate", "0.002",
         "--scheduler-type", "constant_with_warmup", "--warmup-steps", "3", "--logging-steps", "5",
         "--seed", "7", "--eval-split", "0.25"]


def kolo(root: Path, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).parent / "kolo")
    e = {**os.environ, "NO_COLOR": "1", "COLUMNS": "220", "TERM": "dumb", **(env or {})}
    for k in ("KOLO_RUNTIME", "KOLO_DEBUG", "KOLO_JUDGE_API_KEY"):
        if not env or k not in env:
            e.pop(k, None)
    return subprocess.run([exe, "--runtime", "local", "--data-root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout, env=e, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    for mod in ("torch", "llama_cpp", "matplotlib"):
        pytest.importorskip(mod, reason=f"{mod} is needed for training and export (bash scripts/install.sh)")
    from kolo_trainer.export import converter

    try:
        converter.ensure()
    except Exception as e:  # no cached sdist and no network
        pytest.skip(f"the llama.cpp converter is not available: {e}")
    r = tmp_path_factory.mktemp("eval") / "kolo_data"
    shutil.copytree(tiny_model, r / "models" / "tiny")
    write_jsonl(r / "data" / "qa.jsonl", rows(QA + MORE_QA))
    (r / "outputs").mkdir()
    # 9 training rows, batch 3: training evaluates its 3 held-out rows every epoch, the last time on the saved model.
    done = kolo(r, "train", "--train-data", "data/qa.jsonl", "--base-model", "models/tiny", "--output-dir", RUN,
                *TRAIN, "--quantization", "Q4_0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def evaluated(root: Path) -> tuple[dict, subprocess.CompletedProcess]:
    r = kolo(root, "eval", RUN)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((root / "outputs" / RUN / "eval.json").read_text()), r


def test_held_out_rows_are_the_ones_training_held_out(root: Path, evaluated) -> None:
    report, _ = evaluated
    manifest = json.loads((root / "outputs" / RUN / "kolo.json").read_text())
    assert report["data"]["rows"] == manifest["data"]["eval_rows"] == 3
    assert "held out" in report["data"]["source"]
    # Training's own eval loss on its held-out rows, from the saved model: the same figure, recomputed.
    assert report["models"]["HF"]["loss"] == pytest.approx(manifest["train"]["final_eval_loss"], rel=1e-4)
    # ... and these rows were not trained on: the loss there is far above the training loss.
    assert report["models"]["HF"]["loss"] > 10 * manifest["train"]["final_loss"]


def test_f16_agrees_with_hf_and_q4_0_measurably_less(root: Path, evaluated) -> None:
    report, res = evaluated
    m = report["models"]
    assert list(m) == ["HF", "F16", "Q4_0"]
    hf, f16, q4 = m["HF"], m["F16"], m["Q4_0"]
    assert hf["positions"] == f16["positions"] == q4["positions"] == report["data"]["positions"] > 0
    assert f16["kl"] < q4["kl"] and f16["kl"] * 100 < q4["kl"]
    assert f16["top1"] >= q4["top1"] and f16["top1"] == pytest.approx(1.0, abs=1 / f16["positions"])
    assert abs(f16["loss"] - hf["loss"]) < abs(q4["loss"] - hf["loss"])
    assert q4["bytes"] < f16["bytes"]
    # llama.cpp tokenises the rendered conversations exactly as the HF tokenizer did
    assert report["tokens"]["equal"] == report["tokens"]["conversations"] == report["data"]["rows"]
    # the recommendation follows the stated budget: the smallest GGUF within it, or none
    b, rec = report["budget"], report["recommendation"]
    within = [q for q in ("Q4_0", "F16") if m[q]["kl"] <= b["max_kl"] and m[q]["top1"] >= b["min_top1"]]
    assert rec["quantization"] == (within[0] if within else None)
    # greedy answers side by side, with the dataset's reference answer
    assert report["answers"] and all(set(a["answers"]) == {"HF", "F16", "Q4_0"} for a in report["answers"])
    refs = dict((q, a) for q, a in QA + MORE_QA)
    assert all(a["reference"] == refs[a["prompt"]] for a in report["answers"])
    png = root / "outputs" / RUN / "eval.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the table names each model with its figures, the budget and the recommendation
    out = res.stdout
    assert re.search(r"Q4_0\s+│\s+[\d.]+\s+│", out) and "budget: KL <= 0.05 and top-1 >= 0.9" in out
    assert f"recommended: {rec['quantization'] or 'none'}" in out


# ------------------------------------------------------------------------------------------------ the judge

class _Judge(BaseHTTPRequestHandler):
    """Stands in for a real judge (an OpenAI-compatible API and Ollama's /api/chat): it scores by comparing the
    answer with the reference that kolo's prompt carries, so the scores follow the answers."""

    seen: list = []

    def log_message(self, *a) -> None:  # keep pytest's output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        ref = re.search(r"Reference answer:\n(.*?)\n\nModel's answer:\n(.*?)\n\nGive", prompt, re.S)
        same = ref is not None and ref.group(1).strip().lower() == ref.group(2).strip().lower()
        verdict = json.dumps({"correctness": 5 if same else 1, "relevancy": 4, "reason": "compared"})
        if self.path.endswith("/chat/completions"):
            if self.headers.get("Authorization") != "Bearer test-key-123":
                self.send_response(401)
                self.end_headers()
                return
            reply = {"choices": [{"message": {"role": "assistant", "content": "Scores: " + verdict}}]}
        else:
            reply = {"message": {"role": "assistant", "content": verdict}, "done": True}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def judge_server():
    _Judge.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_judge_url_and_budget_option(root: Path, evaluated, judge_server: str) -> None:
    from kolo_cli.commands.eval import JUDGE_PROMPT

    first, _ = evaluated
    kl_f16, kl_q4 = first["models"]["F16"]["kl"], first["models"]["Q4_0"]["kl"]
    # A budget between F16's and Q4_0's measured KL: the budget is an option, and F16 must now be the one.
    r = kolo(root, "eval", RUN, "--quantization", "Q4_0", "--max-kl", str((kl_f16 + kl_q4) / 2), "--min-top1", "0",
             "--judge", judge_server + "/v1", "--judge-model", "grader", "--json",
             env={"KOLO_JUDGE_API_KEY": "test-key-123"})
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)  # --json: stdout is exactly one JSON document
    assert report["recommendation"]["quantization"] == "F16"
    j = report["judge"]
    n_answers = sum(len(a["answers"]) for a in report["answers"])
    assert len(_Judge.seen) == len(j["scores"]) == n_answers > 0
    assert all(s["path"] == "/v1/chat/completions" and s["auth"] == "Bearer test-key-123" for s in _Judge.seen)
    assert all(s["body"]["model"] == "grader" for s in _Judge.seen)
    assert j["prompt"] == JUDGE_PROMPT and j["key"] == "from KOLO_JUDGE_API_KEY"
    for a in report["answers"]:  # the scores follow the answers
        for model, answer in a["answers"].items():
            s = next(x for x in j["scores"] if x["row"] == a["row"] and x["model"] == model)
            assert s["correctness"] == (5 if answer.strip().lower() == a["reference"].strip().lower() else 1)
            assert s["relevancy"] == 4
    stored = (root / "outputs" / RUN / "eval.json").read_text()
    assert json.loads(stored)["judge"]["scores"] == j["scores"]
    assert "test-key-123" not in stored and "test-key-123" not in r.stdout + r.stderr


def test_judge_ollama_and_a_refused_key(root: Path, evaluated, judge_server: str, monkeypatch) -> None:
    """ollama:MODEL goes to Ollama's /api/chat (OLLAMA_HOST); a URL judge that refuses the key is one message."""
    from kolo_cli.commands.eval import judge_answers, parse_judge
    from kolo_trainer.errors import KoloError

    report, _ = evaluated
    monkeypatch.setenv("OLLAMA_HOST", judge_server)
    spec, problems = parse_judge("ollama:llama3.1", None)
    assert not problems
    j = judge_answers(report, spec)
    assert j["judge"] == "ollama:llama3.1" and j["key"] is None
    assert {s["path"] for s in _Judge.seen} == {"/api/chat"} and j["mean"]["HF"]["judged"] == len(report["answers"])
    monkeypatch.delenv("KOLO_JUDGE_API_KEY", raising=False)
    spec, _ = parse_judge(judge_server, "grader")
    with pytest.raises(KoloError, match="refused the request \\(401\\)") as e:
        judge_answers(report, spec)
    assert "KOLO_JUDGE_API_KEY" in (e.value.hint or "")


# ------------------------------------------------------------------------------------------------ bad input

def _unchanged(root: Path):
    f = root / "outputs" / RUN / "eval.json"
    before = f.read_bytes() if f.exists() else None
    return lambda: (f.read_bytes() if f.exists() else None) == before


def test_bad_input_is_one_message_and_writes_nothing(root: Path, evaluated) -> None:
    same = _unchanged(root)
    r = kolo(root, "eval", "nope")
    assert r.returncode == 2 and "no run 'nope'" in r.stderr and "Traceback" not in r.stderr
    # a finished run whose GGUFs are gone (copied without gguf/)
    shutil.copytree(root / "outputs" / RUN, root / "outputs" / "no-gguf",
                    ignore=shutil.ignore_patterns("gguf", "eval.*", "checkpoints"))
    r = kolo(root, "eval", "no-gguf")
    assert r.returncode == 5, r.stderr
    assert "cannot evaluate outputs/no-gguf: it has no exported GGUF" in r.stderr and "kolo export no-gguf" in r.stderr
    assert not (root / "outputs" / "no-gguf" / "eval.json").exists()
    (root / "data" / "empty.jsonl").write_text("")
    r = kolo(root, "eval", RUN, "--eval-data", "data/empty.jsonl")
    assert r.returncode == 3 and "data/empty.jsonl:1: empty file (no rows)" in r.stderr, r.stderr
    r = kolo(root, "eval", RUN, "--quantization", "Q8_0")
    assert r.returncode == 2 and "Q8_0 not exported for outputs/ev (exported: F16, Q4_0)" in r.stderr, r.stderr
    r = kolo(root, "eval", RUN, "--judge", "https://user:sk-secret@judge.example/v1", "--judge-model", "m")
    assert r.returncode == 2 and "KOLO_JUDGE_API_KEY" in r.stderr and "sk-secret" not in r.stderr
    assert all("Traceback" not in x for x in (r.stderr,)) and same()
