"""`kolo serve`'s RAG routes for real: a real uvicorn (``server_helpers.Server``), the real index of the RAG tests
(tests/fixtures/rag, built once per module with the shipped all-MiniLM-L6-v2 and FAISS, hub forced offline), the
warm retriever a real ``python -m kolo_trainer rag-serve`` started through the local transport, and the suite's one
stand-in Ollama (no Ollama binary can exist on these machines: see tests/unit/host/test_ollama_client.py).

One server serves the whole module, so the retriever's model loads once (that is the feature under test: requests
after the first reuse the same process, which the tests check by its pid).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "host"))
from server_helpers import Server  # noqa: E402
from test_ollama_client import StandInOllama  # noqa: E402
from test_rag import OFFLINE, _require_rag_stack, build_here, exported_tiny_run, make_root  # noqa: E402  (tests/e2e)

pytestmark = [pytest.mark.server, pytest.mark.e2e]

KOLO = str(Path(sys.executable).parent / "kolo")


class _Kolo:
    """What ``Server`` needs of the suite's ``kolo`` fixture (which is per test; this server is per module)."""

    def __init__(self, root: Path):
        self.root = root

    def popen(self, *args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen:
        e = {k: v for k, v in os.environ.items() if not k.startswith("KOLO_")}
        e.update(OFFLINE, KOLO_DATA=str(self.root), NO_COLOR="1", **(env or {}))
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen([KOLO, *args], env=e, text=True, **kw)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _require_rag_stack()
    root = make_root(tmp_path_factory.mktemp("ragapi"))
    build_here(root, "handbook", "data/docs", "data/faq.jsonl")
    server = Server(_Kolo(root), root, [])
    server.start()
    yield server
    server.stop()
    deadline = time.monotonic() + 15
    while _retrievers(root) and time.monotonic() < deadline:
        time.sleep(0.2)  # the end of its stdin reaches it as the server exits
    assert _retrievers(root) == [], "the retriever outlived the server"


def _retrievers(root: Path) -> list[int]:
    """Pids of the rag-serve processes working on this data root."""
    out = []
    for d in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"rag-serve" in argv and str(root).encode() in argv:
            out.append(int(d))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_retrieve_is_global_top_k_with_sources_from_one_warm_retriever(srv: Server) -> None:
    with srv.http() as h:
        r = h.post("/api/v1/rag/handbook/retrieve", json={"query": "What is the office cat called?", "top_k": 4})
        assert r.status_code == 200, r.text
        out = r.json()
        assert set(out) == {"documents", "sources", "scores"}
        assert out["sources"][0] == {"file": "data/faq.jsonl", "row": 1} and "Biscuit" in out["documents"][0]
        assert len(out["documents"]) == len(out["scores"]) == 4 and out["scores"] == sorted(out["scores"])[::-1]
        assert len({s["file"] for s in out["sources"]}) > 1  # top-k across documents
        pids = _retrievers(srv.root)
        assert len(pids) == 1
        qs = [json.loads(line) for line in (Path(__file__).parents[1] / "fixtures" / "rag" /
                                             "questions.jsonl").read_text().splitlines()][:12]
        hits = 0
        for q in qs:
            r = h.post("/api/v1/rag/handbook/retrieve", json={"query": q["question"]})
            assert r.status_code == 200 and len(r.json()["documents"]) == 3  # top_k defaults to 3
            hits += f"data/{q['source']}" in [s["file"] for s in r.json()["sources"]]
        assert hits >= 11, hits
        assert _retrievers(srv.root) == pids  # every request after the first: the same process


def test_an_added_document_is_served_and_a_dead_retriever_comes_back(srv: Server) -> None:
    with srv.http() as h:
        h.post("/api/v1/rag/handbook/retrieve", json={"query": "warm up"}).raise_for_status()
        [pid] = _retrievers(srv.root)
        (srv.root / "data" / "kiln.md").write_text("# Kiln\n\nThe pottery kiln in the basement fires at 1240 °C "
                                                   "every second Thursday.\n")
        from kolo_trainer.rag.build import add
        from kolo_trainer.rag.options import RagAddOptions
        from kolo_trainer.runfolder import DataRoot

        add(DataRoot(srv.root), RagAddOptions(name="handbook", source=["data/kiln.md"]))
        r = h.post("/api/v1/rag/handbook/retrieve", json={"query": "When is the pottery kiln fired?", "top_k": 1})
        assert r.status_code == 200 and r.json()["sources"] == [{"file": "data/kiln.md", "line": 1}], r.text
        assert _retrievers(srv.root) == [pid]  # reloaded in place, not restarted
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        r = h.post("/api/v1/rag/handbook/retrieve", json={"query": "When is the pottery kiln fired?", "top_k": 1})
        assert r.status_code == 200 and r.json()["sources"][0]["file"] == "data/kiln.md", r.text
        [new] = _retrievers(srv.root)
        assert new != pid


def test_query_answers_through_ollama_from_the_retrieved_passages(srv: Server) -> None:
    ollama = StandInOllama()
    ollama.models["helper:latest"] = {}
    ollama.reply = "Twenty-six weeks."
    ollama.thread.start()
    try:
        with srv.http() as h:
            r = h.post("/api/v1/rag/handbook/query", json={"query": "How long is maternity leave?",
                                                           "ollama_model": "helper", "ollama_url": ollama.url})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["answer"] == "Twenty-six weeks." and out["answered_by"] == {"ollama_model": "helper"}
            assert out["sources"][0]["file"] == "data/docs/parental-leave.md"
            r = h.post("/api/v1/rag/handbook/query", json={"query": "How long is maternity leave?",
                                                           "ollama_model": "absent", "ollama_url": ollama.url})
            assert r.status_code == 422 and "'absent' is not installed" in r.json()["problems"][0], r.text
            r = h.post("/api/v1/rag/handbook/query", json={"query": "Leave?", "ollama_model": "helper",
                                                           "ollama_url": f"http://127.0.0.1:{_free_port()}"})
            assert r.status_code == 503 and "no Ollama server answers" in r.json()["detail"], r.text
    finally:
        ollama.server.shutdown()
        ollama.server.server_close()
    chats = [q["json"] for q in ollama.requests if q["path"] == "/api/chat"]
    assert [c["model"] for c in chats] == ["helper", "absent"]
    prompt = chats[0]["messages"][-1]["content"]
    assert prompt == out["prompt"] and prompt.startswith("Based on the following context, answer the question.")
    assert "26 weeks of fully paid maternity leave" in prompt and "(data/docs/parental-leave.md:1)" in prompt


def test_query_answers_with_a_runs_gguf_in_the_warm_retriever(srv: Server) -> None:
    """The retriever answers with the run's GGUF (``export.chat.Session``, a fresh conversation per request):
    greedy, so exactly what that GGUF gives for the returned prompt, twice (no history carried over)."""
    from kolo_trainer.export.chat import Session, exported
    from kolo_trainer.runfolder import DataRoot

    run = exported_tiny_run(srv.root)
    ask = {"query": "How long is maternity leave?", "run": run, "top_k": 2, "max_tokens": 12, "temperature": 0}
    with srv.http() as h:
        first, second = (h.post("/api/v1/rag/handbook/query", json=ask) for _ in range(2))
    assert first.status_code == 200, first.text
    out = first.json()
    assert out["answered_by"] == {"run": run} and out["sources"][0]["file"] == "data/docs/parental-leave.md"
    expected = Session(exported(DataRoot(srv.root).run(run, "--run"), None), 0.0).ask(out["prompt"], 12)
    assert out["answer"] == expected and second.json()["answer"] == expected


def test_bad_requests_get_every_problem_and_start_nothing(srv: Server) -> None:
    import shutil

    shutil.copytree(srv.root / "outputs" / "handbook", srv.root / "outputs" / "broken")
    idx = srv.root / "outputs" / "broken" / "rag" / "vector_index.faiss"
    idx.write_bytes(idx.read_bytes()[:40])
    before = sorted(str(p) for p in (srv.root / "outputs").rglob("*"))
    with srv.http(key=None) as h:
        r = h.post("/api/v1/rag/handbook/retrieve", json={"query": "x"})
        assert r.status_code == 401 and "missing API key" in r.json()["detail"]
    with srv.http() as h:
        r = h.post("/api/v1/rag/nope/retrieve", json={"query": "x"})
        assert r.status_code == 404 and "no RAG index 'nope'" in r.json()["detail"]
        assert "kolo rag build nope" in r.json()["detail"]
        r = h.post("/api/v1/rag/handbook/retrieve", json={"query": " ", "top_k": 0, "colour": "red"})
        problems = r.json()["problems"]
        assert r.status_code == 422 and len(problems) == 3, problems
        for part in ("query: must not be empty", "--top-k: input should be greater", "colour: unknown field"):
            assert any(part in p for p in problems), (part, problems)
        r = h.post("/api/v1/rag/handbook/retrieve", json={"top_k": "many"})
        assert r.status_code == 422 and any(p.startswith("query: required") for p in r.json()["problems"])
        r = h.post("/api/v1/rag/handbook/query", json={"query": "x", "ollama_model": "m", "run": "r"})
        assert r.status_code == 422 and "exactly one" in r.json()["problems"][0]
        r = h.post("/api/v1/rag/handbook/query", json={"query": "x", "ollama_model": "bad name!"})
        assert r.status_code == 422 and "not a valid Ollama name" in r.json()["problems"][0]
        r = h.post("/api/v1/rag/handbook/query", json={"query": "x", "run": "never-trained"})
        assert r.status_code == 422 and "run: no run 'never-trained'" in r.json()["problems"][0], r.text
        r = h.post("/api/v1/rag/" + "n" * 200 + "/retrieve", json={"query": "x"})
        assert r.status_code == 422 and any("--name" in p for p in r.json()["problems"]), r.text
        r = h.post("/api/v1/rag/handbook/retrieve", content=b"{", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
        r = h.post("/api/v1/rag/broken/retrieve", json={"query": "x"})  # the retriever's own error, passed on
        detail = r.json()["detail"]
        assert r.status_code == 500 and "outputs/broken/rag/vector_index.faiss is damaged" in detail, r.text
        assert "kolo rag build broken" in detail
    assert sorted(str(p) for p in (srv.root / "outputs").rglob("*")) == before
    assert len(_retrievers(srv.root)) <= 1  # only the one a good request started (earlier tests), never "nope"


def test_a_rag_job_lists_field_and_two_field_problems_together(srv: Server) -> None:
    """`commands.rag.validate` (used by the jobs route) reports a field error and a two-field error at once."""
    with srv.http() as h:
        ds = h.post("/api/v1/datasets", files={"file": ("faq.jsonl", (srv.root / "data" / "faq.jsonl").read_bytes())})
        assert ds.status_code == 201, ds.text
        r = h.post("/api/v1/jobs/", json={"dataset_id": ds.json()["id"], "training_type": "rag",
                                          "chunk_tokens": 20, "overlap": 300, "embedding_model": "../x"})
        problems = r.json()["problems"]
        assert r.status_code == 422 and len(problems) == 2, problems
        assert "--embedding-model" in problems[0] and "--overlap (300) must be smaller than --chunk-tokens (20)" \
            in problems[1]
