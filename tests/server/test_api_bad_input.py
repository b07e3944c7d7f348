"""Every bad request gets the right status code, a clear message, and leaves nothing behind (a real `kolo serve`).
No training runs here: every request is refused before a job could start."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

pytestmark = [pytest.mark.server]

GOOD = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]})


def stored(root: Path) -> list[str]:
    """What uploads left in the data root's data/ and the server's upload folder."""
    found = sorted(p.name for p in (root / "data").glob("*"))
    uploads = root / "server" / "uploads"
    return found + (sorted(p.name for p in uploads.iterdir()) if uploads.is_dir() else [])


def test_key_is_required_and_checked(serve, data_root: Path, kolo) -> None:
    srv = serve()
    assert stat.S_IMODE((data_root / "server" / "api_key").stat().st_mode) == 0o600
    assert srv.key in srv.output()  # printed once, at the first start
    shown = kolo("serve", "--show-key")
    assert shown.returncode == 0 and shown.stdout.strip() == srv.key
    with srv.http(key=None) as h:
        assert h.get("/api/v1/health").json()["status"] == "ok"
        r = h.get("/api/v1/datasets")
        assert r.status_code == 401 and "missing API key" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
        r = h.get("/api/v1/jobs/", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and "wrong API key" in r.json()["detail"]
        r = h.options("/api/v1/jobs/", headers={"Origin": "http://evil.example",
                                                "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in r.headers


def test_non_loopback_bind_without_a_key_is_refused(kolo, data_root: Path) -> None:
    r = kolo("--runtime", "local", "serve", "--host", "0.0.0.0", "--port", "1")
    assert r.returncode == 2, r.stderr
    assert "refusing to listen beyond this machine" in r.stderr and "Traceback" not in r.stderr
    assert not (data_root / "server" / "api_key").exists()


def test_bad_uploads_are_refused_and_nothing_is_stored(serve, data_root: Path) -> None:
    srv = serve("--max-upload", "1K")
    before = stored(data_root)
    with srv.http() as h:
        def up(name: str, body: bytes) -> dict:
            r = h.post("/api/v1/datasets", files={"file": (name, body)})
            return {"status": r.status_code, **r.json()}

        assert up("notes.txt", GOOD.encode())["status"] == 415
        r = up("big.jsonl", (GOOD + "\n").encode() * 40)
        assert r["status"] == 413 and "upload limit of 1,024 bytes" in r["detail"]
        for bad in ("../evil.jsonl", "/etc/evil.jsonl", "a/b.jsonl"):
            r = up(bad, GOOD.encode())
            assert r["status"] == 422 and bad in r["detail"], r
        r = up("rows.jsonl", b'{"messages": []}\nnot json\n')
        assert r["status"] == 422 and len(r["problems"]) == 2
        assert r["problems"][0].startswith("rows.jsonl:1: ") and r["problems"][1].startswith("rows.jsonl:2: ")
        r = h.post("/api/v1/datasets", content=b"raw", headers={"content-type": "text/plain"})
        assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
        r = h.post("/api/v1/datasets", data={"name": "x"}, files={"other": ("a.jsonl", b"x")})
        assert r.status_code == 422 and "field `file`" in r.json()["detail"]
        assert h.get("/api/v1/datasets").json() == []
        assert h.get("/api/v1/datasets/7").status_code == 404
    assert stored(data_root) == before


def test_bad_jobs_are_refused_with_every_problem(serve, data_root: Path) -> None:
    srv = serve()
    with srv.http() as h:
        ds = h.post("/api/v1/datasets", files={"file": ("ok.jsonl", GOOD.encode())}).json()
        r = h.post("/api/v1/jobs/", content=b'{"dataset_id": ', headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
        r = h.post("/api/v1/jobs/", json=[1, 2])
        assert r.status_code == 422 and "JSON object" in r.json()["detail"]
        r = h.post("/api/v1/jobs/", json={"dataset_id": 999, "model_name": "models/tiny"})
        assert r.status_code == 422 and any("dataset_id 999: no such dataset" in p for p in r.json()["problems"])
        r = h.post("/api/v1/jobs/", json={"dataset_id": ds["id"], "epochs": 0, "lora_rank": -1, "colour": "red",
                                          "model_name": "models/missing", "output_dir": "x"})
        problems = r.json()["problems"]
        assert r.status_code == 422 and len(problems) == 5, problems
        for part in ("--epochs", "--lora-rank", "colour: unknown option", "models/missing", "output_dir: set by"):
            assert any(part in p for p in problems), (part, problems)
        r = h.post("/api/v1/jobs/", json={"dataset_id": ds["id"], "training_type": "rag", "chunk_tokens": 1,
                                          "epochs": 3})
        problems = r.json()["problems"]
        assert r.status_code == 422 and len(problems) == 2, problems
        assert any("--chunk-tokens" in p for p in problems) and "epochs: unknown option" in problems
        r = h.post("/api/v1/jobs/", json={"dataset_id": ds["id"], "training_type": "rag", "chunk_tokens": 32,
                                          "overlap": 64})
        assert r.status_code == 422 and "--overlap (64) must be smaller" in r.json()["problems"][0]
        r = h.post("/api/v1/jobs/", json={"dataset_id": ds["id"], "training_type": "magic"})
        assert r.status_code == 422 and "choose qlora, unsloth, standard, lora or rag" in r.json()["problems"][0]
        assert h.get("/api/v1/jobs/").json() == []
        for path in ("/api/v1/jobs/42", "/api/v1/jobs/42/status", "/api/v1/jobs/42/download",
                     "/api/v1/jobs/42/logs"):
            r = h.get(path)
            assert r.status_code == 404 and "no job 42" in r.json()["detail"], path
        assert h.post("/api/v1/jobs/42/cancel").status_code == 404
        assert h.post("/api/v1/jobs/42/deploy/ollama", json={"name": "m"}).status_code == 404
    assert not (data_root / "outputs").exists() or list((data_root / "outputs").iterdir()) == []
