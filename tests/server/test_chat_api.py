"""`kolo chat RUN --web` for real: the verb serves the Training Manager's app on 127.0.0.1, and
``POST /api/v1/runs/RUN/chat`` streams the answer of the run's GGUF (llama.cpp, through the trainer's
``chat-stream`` with the Modelfile's template and stop strings) as Server-Sent Events, saving the conversation in
the run folder. The run is a real `kolo train --quantization F16` of the tiny model on the Q/A rows (a full
fine-tune that learns the answers), made once for this module (and reused by tests/browser/test_browser_chat.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from train_helpers import LEARN, QA, rows, write_jsonl  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.e2e]

RUN = "chatrun"
ANSWERS = dict(QA)
_BUILT: dict[str, Path] = {}


def kolo_argv(root: Path, *args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "kolo"), "--runtime", "local", "--data-root", str(root), *args]


def _env() -> dict[str, str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"}
    for k in ("KOLO_RUNTIME", "KOLO_DEBUG"):
        env.pop(k, None)
    return env


def exported_root(base: Path, tiny_model: Path) -> Path:
    """A data root holding the exported run (trained once per test session, then copied)."""
    for mod in ("torch", "llama_cpp"):
        pytest.importorskip(mod, reason=f"{mod} is needed to train and export (bash scripts/install.sh)")
    if "root" not in _BUILT:
        root = base / "built" / "kolo_data"
        shutil.copytree(tiny_model, root / "models" / "tiny")
        write_jsonl(root / "data" / "qa.jsonl", rows(QA))
        (root / "outputs").mkdir()
        r = subprocess.run(kolo_argv(root, "train", "--train-data", "data/qa.jsonl", "--base-model", "models/tiny",
                                     "--output-dir", RUN, *LEARN, "--quantization", "F16"),
                           capture_output=True, text=True, timeout=900, env=_env(), stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        _BUILT["root"] = root
    copy = base / "kolo_data"
    shutil.copytree(_BUILT["root"], copy, ignore=shutil.ignore_patterns("checkpoints", "server", "chats"))
    return copy


def web_chat(kolo: Any, root: Path, run: str = RUN) -> Any:
    """A running `kolo chat RUN --web --port P` (stopped like Ctrl-C): the Server helper with the chat verb."""
    from server_helpers import Server

    class WebChat(Server):
        verb = ("chat", run, "--web")
        http_timeout = 300  # a streamed answer on the 2-core machine

    return WebChat(kolo, root, []).start()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, make_kolo):
    pytest.importorskip("fastapi", reason="kolo chat --web needs the server extra (pip install -e 'host[server]')")
    root = exported_root(tmp_path_factory.mktemp("chat"), tiny_model)
    w = web_chat(make_kolo(root, root.parent), root)
    yield w
    w.stop()


def sse(resp: httpx.Response) -> list[tuple[str, dict]]:
    """(event, data) of every Server-Sent Event in a streamed response, in order."""
    out, kind, data = [], "message", ""
    for line in resp.iter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif not line.strip() and data:
            out.append((kind, json.loads(data)))
            kind, data = "message", ""
    return out


def ask(w: Any, body: dict) -> tuple[int, list[tuple[str, dict]], str]:
    with w.http() as h, h.stream("POST", f"/api/v1/runs/{RUN}/chat", json=body) as r:
        if r.status_code != 200:
            return r.status_code, [], r.read().decode()
        return r.status_code, sse(r), ""


def test_answer_streams_as_tokens_and_the_conversation_is_saved(web) -> None:
    assert f"kolo chat: {web.url}/runs/{RUN}/chat" in web.log.read_text()
    q = QA[1][0]
    code, events, _ = ask(web, {"message": q, "temperature": 0})
    assert code == 200
    tokens = [d["text"] for e, d in events if e == "token"]
    done = [d for e, d in events if e == "done"]
    assert len(tokens) > 2 and len(done) == 1 and events[-1][0] == "done"
    # the trained reply, streamed piece by piece, ended at the Modelfile's stop string (<|im_end|>), nothing after
    assert "".join(tokens) == done[0]["answer"] == ANSWERS[q]
    assert not any("<|im_end|>" in t or "<|im_start|>" in t for t in tokens)
    chat_id = done[0]["conversation"]
    saved = json.loads((web.root / "outputs" / RUN / "chats" / f"{chat_id}.json").read_text())
    assert saved["messages"] == [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWERS[q]}]
    assert saved["quantization"] == "F16" and saved["run"] == RUN
    # the same conversation goes on, with the page's system prompt from now on
    q2 = QA[4][0]
    code, events, _ = ask(web, {"message": q2, "temperature": 0, "conversation": chat_id, "system": "Be brief."})
    assert code == 200 and events[-1] == ("done", {"answer": ANSWERS[q2], "conversation": chat_id})
    saved = json.loads((web.root / "outputs" / RUN / "chats" / f"{chat_id}.json").read_text())
    assert [m["content"] for m in saved["messages"]] == [q, ANSWERS[q], q2, ANSWERS[q2]]
    assert saved["system"] == "Be brief."
    with web.http() as h:
        listed = h.get(f"/api/v1/runs/{RUN}/chats").json()
        assert [c["id"] for c in listed] == [chat_id] and listed[0]["turns"] == 4
        assert h.get(f"/api/v1/runs/{RUN}/chats/{chat_id}").json() == saved


def test_a_modelfile_stop_string_cuts_the_streamed_answer(web) -> None:
    """Add `PARAMETER stop "France"` to the Modelfile: the answer "Paris is in France." ends before it, and no
    streamed piece ever showed any part of the stop string (pieces that may start one are held back)."""
    mf = web.root / "outputs" / RUN / "gguf" / "Modelfile.F16"
    original = mf.read_text()
    try:
        mf.write_text(original + 'PARAMETER stop "France"\n')
        code, events, _ = ask(web, {"message": "Where is Paris?", "temperature": 0})
    finally:
        mf.write_text(original)
    assert code == 200 and ANSWERS["Where is Paris?"] == "Paris is in France."
    tokens = [d["text"] for e, d in events if e == "token"]
    assert events[-1][0] == "done" and events[-1][1]["answer"] == "".join(tokens) == "Paris is in "
    assert not any(ch in "".join(tokens) for ch in ("F", "Fr"))


def test_bad_requests_are_refused_before_any_trainer_runs(web) -> None:
    shutil.copytree(web.root / "outputs" / RUN, web.root / "outputs" / "no-gguf",
                    ignore=shutil.ignore_patterns("gguf", "chats"))
    cases = [({"message": "hi"}, "nope", 404, "no run 'nope'"),
             ({"message": "hi"}, "no-gguf", 409, "Modelfile.F16 is missing"),
             ({"message": ""}, RUN, 422, "message: write something to send"),
             ({"message": "hi", "quantization": "Q9"}, RUN, 422, "unknown quantization 'Q9'"),
             ({"message": "hi", "temperature": -1}, RUN, 422, "temperature"),
             ({"message": "hi", "conversation": "../../kolo"}, RUN, 404, "no conversation '../../kolo'")]
    with web.http() as h:
        for body, run, status, text in cases:
            r = h.post(f"/api/v1/runs/{run}/chat", json=body)
            assert r.status_code == status and text in r.text, (body, r.status_code, r.text)
        r = h.post(f"/api/v1/runs/{RUN}/chat", content=b"{not json")
        assert r.status_code == 400
    with web.http(key=None) as h:
        assert h.post(f"/api/v1/runs/{RUN}/chat", json={"message": "hi"}).status_code == 401
        r = h.get(f"/runs/{RUN}/chat", follow_redirects=False)  # the page: log in first, then back here
        assert r.status_code == 303 and r.headers["location"] == f"/login?next=/runs/{RUN}/chat"
        r = h.post("/login", data={"key": web.key, "next": f"/runs/{RUN}/chat"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/runs/{RUN}/chat"
        r = h.post("/login", data={"key": web.key, "next": "//evil.example/"}, follow_redirects=False)
        assert r.headers["location"] == "/jobs"
    assert not (web.root / "outputs" / "no-gguf" / "chats").exists()


def test_page_works_without_javascript(web) -> None:
    with web.http(key=None) as h:
        h.post("/login", data={"key": web.key})
        page = h.get(f"/runs/{RUN}/chat")
        assert page.status_code == 200 and 'id="message"' in page.text and "&lt;|im_end|&gt;" in page.text
        r = h.post(f"/runs/{RUN}/chat", data={"message": QA[0][0], "temperature": "0", "system": ""},
                   follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith(f"/runs/{RUN}/chat?c=")
        shown = h.get(r.headers["location"]).text
        assert f'<span class="text">{ANSWERS[QA[0][0]]}</span>' in shown


def test_the_verb_refuses_bad_input(web) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(kolo_argv(web.root, "chat", *args), capture_output=True, text=True, timeout=60,
                              env=_env(), stdin=subprocess.DEVNULL)

    r = run(RUN, "--web", "--port", str(web.port))  # the port the module's server holds
    assert r.returncode == 2 and f"127.0.0.1:{web.port} is in use" in r.stderr and "Traceback" not in r.stderr
    r = run("nope", "--web")
    assert r.returncode == 2 and "no run 'nope'" in r.stderr
    r = run(RUN, "--web", "--prompt", "hi")
    assert r.returncode == 2 and "--prompt is for the terminal chat" in r.stderr
