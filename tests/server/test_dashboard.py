"""The dashboard without a browser: the vendored htmx files are the pinned ones (sha256 as VENDORED.md records),
and every page is plain HTML that works without JavaScript (login, upload with its report, the option form)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.server]

STATIC = Path(__import__("kolo_cli.server", fromlist=["x"]).__file__).parent / "static"


def test_vendored_files_match_their_recorded_hashes() -> None:
    table = (STATIC / "VENDORED.md").read_text()
    rows = re.findall(r"^\| (\S+\.js) \| .*? \| (\S+) \| ([0-9a-f]{64}) \|", table, re.M)
    assert {r[0] for r in rows} == {p.name for p in STATIC.glob("*.js")} and len(rows) == 2
    for name, version, digest in rows:
        assert version.startswith("2."), name
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
    base = (STATIC.parent / "templates" / "base.html").read_text()
    assert all(f"/static/{name}" in base for name, _, _ in rows) and "https://" not in base


def test_pages_work_without_javascript(serve, data_root: Path) -> None:
    srv = serve()
    with srv.http(key=None) as h:
        r = h.get("/jobs", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert h.post("/login", data={"key": "wrong"}).status_code == 401
        r = h.post("/login", data={"key": srv.key}, follow_redirects=False)
        assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        r = h.post("/datasets", files={"file": ("bad.jsonl", b'{"messages": []}\n')})
        assert r.status_code == 422 and "bad.jsonl:1: " in r.text
        r = h.post("/datasets", files={"file": ("qa.csv", b"prompt,completion\nHi,Hello\nYo,Hey\n")})
        assert r.status_code == 201 and '<span id="uploaded-rows">2</span>' in r.text
        page = h.get("/jobs").text
        for name in ("lora_rank", "learning_rate", "epochs", "quantization", "packing"):
            assert f'name="{name}"' in page, name
        assert 'name="train_data"' not in page and 'name="output_dir"' not in page
        r = h.post("/jobs", data={"dataset_id": "1", "model_name": "models/nope", "epochs": "many"})
        assert r.status_code == 422 and "--epochs" in r.text and "models/nope" in r.text
        assert 'value="many"' in r.text  # what the user typed stays in the form
        assert h.get("/api/v1/jobs/").json() == []  # the cookie is the key: the API answers the dashboard
