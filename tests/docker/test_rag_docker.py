"""`kolo serve --runtime docker`'s RAG routes against the suite's container (made by `kolo up`, see conftest.py).

The index is built IN the container (`kolo rag build` through `docker exec`, with the shipped all-MiniLM-L6-v2
from the read-only venv and real FAISS; the container has no network). The warm retriever is then a real
``python -m kolo_trainer rag-serve`` inside the container, reached through ``docker exec -i`` and JSON lines over
the docker CLI's stdin/stdout: the path that tests/server/test_rag_api.py (--runtime local) cannot exercise. The
test kills it inside the container and expects the next request to start a new one, and stops the server and
expects none left (the end of its stdin crossing `docker exec -i`).

One test, in the order a retriever lives (built, started, warm, killed, restarted, left behind or not): each step
needs the previous one's container, index and server, and the container is per test (conftest.py `running`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "e2e"))
sys.path.insert(0, str(TESTS / "server"))
from server_helpers import Server  # noqa: E402
from test_rag import FIXTURES, OFFLINE, _require_rag_stack  # noqa: E402  (tests/e2e: the RAG suite's own)

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

#: A handful of the RAG fixtures' documents: enough for ranking to mean something, cheap to embed.
DOCS = ("parental-leave.md", "leave-policy.md", "expenses.md", "sourdough.md", "volcanoes.md", "tides.txt")

#: Runs in the container: the pids whose argv holds a `rag-serve` argument (this script's own argv does not).
IN_CONTAINER = r"""
import os
for d in os.listdir("/proc"):
    try:
        argv = open("/proc/%s/cmdline" % d, "rb").read().split(b"\0")
    except OSError:
        continue
    if d.isdigit() and b"rag-serve" in argv:
        print(d)
"""


def _question(source: str) -> str:
    """The first labelled question of tests/fixtures/rag whose answer is in ``source``."""
    rows = [json.loads(line) for line in (FIXTURES / "questions.jsonl").read_text().splitlines()]
    return next(r["question"] for r in rows if r["source"] == f"docs/{source}")


def _retrievers(container: str) -> list[int]:
    """Pids, as the container sees them, of the rag-serve processes running in it."""
    r = subprocess.run(["docker", "exec", container, "python", "-c", IN_CONTAINER], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return sorted(int(p) for p in r.stdout.split())


def _top(container: str) -> list[str]:
    """The rag-serve lines of `docker top`: the engine's own view of the container's processes."""
    r = subprocess.run(["docker", "top", container], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if "rag-serve" in line]


def _retrieve(h, question: str) -> tuple[dict, float]:
    t0 = time.monotonic()
    r = h.post("/api/v1/rag/handbook/retrieve", json={"query": question, "top_k": 2})
    took = time.monotonic() - t0
    assert r.status_code == 200, r.text
    return r.json(), took


def _wait_none_left(container: str, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _retrievers(container)) and time.monotonic() < deadline:
        time.sleep(0.3)
    return left


def test_the_warm_retriever_lives_in_the_container(kolo, running, data_root: Path) -> None:
    _require_rag_stack()
    kolo.env.update(OFFLINE)
    container = running["KOLO_CONTAINER"]
    (data_root / "data" / "docs").mkdir()
    for name in DOCS:
        shutil.copy(FIXTURES / "docs" / name, data_root / "data" / "docs" / name)
    r = kolo("rag", "build", "handbook", "--source", "data/docs", timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (data_root / "outputs" / "handbook" / "rag" / "vector_index.faiss").is_file()

    srv = Server(kolo, data_root, [], runtime="docker").start(timeout=120)
    try:
        assert "runtime docker" in srv.output(), srv.output()
        with srv.http() as h:
            # refused on the host, before any process starts in the container
            bad = h.post("/api/v1/rag/handbook/retrieve", json={"query": " ", "top_k": 0})
            assert bad.status_code == 422 and len(bad.json()["problems"]) == 2, bad.text
            unknown = h.post("/api/v1/rag/nope/retrieve", json={"query": "x"})
            assert unknown.status_code == 404 and "no RAG index 'nope'" in unknown.json()["detail"], unknown.text
            assert _retrievers(container) == []

            first, cold = _retrieve(h, _question("parental-leave.md"))
            second, warm = _retrieve(h, _question("volcanoes.md"))
            print(f"\nretrieve through docker exec -i: first {cold:.2f}s (start + model load), second {warm:.2f}s")
            assert first["sources"][0]["file"] == "data/docs/parental-leave.md", first
            assert "maternity leave" in first["documents"][0]
            assert second["sources"][0]["file"] == "data/docs/volcanoes.md", second
            [pid] = _retrievers(container)  # one process, in the container, kept for both requests
            assert len(_top(container)) == 1, _top(container)

            killed = subprocess.run(["docker", "exec", container, "kill", "-9", str(pid)], capture_output=True,
                                    text=True, timeout=60)
            assert killed.returncode == 0, killed.stderr
            again, _ = _retrieve(h, _question("sourdough.md"))
            assert again["sources"][0]["file"] == "data/docs/sourdough.md", again
            [new] = _retrievers(container)
            assert new != pid
    finally:
        srv.stop()
    left = _wait_none_left(container)
    assert left == [], f"rag-serve outlived the server in the container: {left}\n{srv.output()[-2000:]}"
