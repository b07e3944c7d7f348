"""kolo ollama-install / ollama-uninstall / list against a stand-in Ollama server, plus the Modelfile reader.

``StandInOllama`` below STANDS IN FOR OLLAMA: no Ollama binary can exist on these machines (it is in no registry
they can reach), so the REST client is tested against a small stdlib HTTP server that implements the documented
endpoints (ollama docs/api.md: HEAD/POST /api/blobs/:digest, POST /api/create with ``files``, GET /api/tags,
DELETE /api/delete, POST /api/chat) with the same status codes, and is stricter than needed where that catches
client bugs: it recomputes the sha256 of every uploaded blob and answers 400 on a mismatch, refuses a create whose
``files`` name a blob it does not hold or is not a GGUF, and refuses untyped parameters. Every request is recorded
so the tests assert the exact calls kolo makes.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kolo_cli import ollama_client as oc
from kolo_cli.cli import main

GGUF_BYTES = b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 64  # a small fake GGUF: magic + filler

TEMPLATE = ('{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}'
            '{{ range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>'
            '{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n')

MODELFILE = f'''# written by kolo export
FROM ./my-run-Q4_K_M.gguf
TEMPLATE """{TEMPLATE}"""
PARAMETER stop "<|eot_id|>"
PARAMETER stop "<|start_header_id|>"
PARAMETER num_ctx 2048
PARAMETER temperature 0.7
PARAMETER top_p 0.9
SYSTEM """You are a "helpful" assistant.
Answer briefly."""
'''


class StandInOllama:
    """Stands in for Ollama (see the module docstring: no Ollama binary can exist here)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.models: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.done_reason = "stop"
        self.reply = "Hello, I am your model."
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep pytest output clean
                pass

            def _send(self, code: int, obj=None):
                body = b"" if obj is None else json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_HEAD(self):
                outer.requests.append({"method": "HEAD", "path": self.path})
                if self.path.startswith("/api/blobs/"):
                    return self._send(200 if self.path[len("/api/blobs/"):] in outer.blobs else 404)
                self._send(404)

            def do_GET(self):
                outer.requests.append({"method": "GET", "path": self.path})
                if self.path == "/api/tags":
                    return self._send(200, {"models": [{"name": n, "model": n, "size": 1, "digest": "x"}
                                                       for n in outer.models]})
                self._send(404, {"error": "not found"})

            def do_DELETE(self):
                body = self._json()
                outer.requests.append({"method": "DELETE", "path": self.path, "json": body})
                name = _full(body.get("model", ""))
                if name not in outer.models:
                    return self._send(404, {"error": f"model '{body.get('model')}' not found"})
                del outer.models[name]
                self._send(200)

            def do_POST(self):
                if self.path.startswith("/api/blobs/"):
                    digest = self.path[len("/api/blobs/"):]
                    if "Content-Length" not in self.headers:
                        outer.requests.append({"method": "POST", "path": self.path, "chunked": True})
                        return self._send(411, {"error": "length required"})
                    data = self.rfile.read(int(self.headers["Content-Length"]))
                    outer.requests.append({"method": "POST", "path": self.path, "body_len": len(data)})
                    actual = "sha256:" + hashlib.sha256(data).hexdigest()
                    if actual != digest:
                        return self._send(400, {"error": f"digest mismatch, expected \"{digest}\", got \"{actual}\""})
                    outer.blobs[digest] = data
                    return self._send(201)
                body = self._json()
                outer.requests.append({"method": "POST", "path": self.path, "json": body})
                if self.path == "/api/create":
                    for fname, digest in (body.get("files") or {}).items():
                        if digest not in outer.blobs:
                            return self._send(400, {"error": f"blob {digest} not found"})
                        if not outer.blobs[digest].startswith(b"GGUF"):
                            return self._send(400, {"error": "invalid file magic"})
                    params = body.get("parameters") or {}
                    if not all(isinstance(v, list) for k, v in params.items() if k == "stop") or \
                            any(isinstance(v, str) for k, v in params.items() if k != "stop"):
                        return self._send(400, {"error": "parameters must be typed"})
                    outer.models[_full(body["model"])] = body
                    if body.get("stream") is False:
                        return self._send(200, {"status": "success"})
                    return self._send(200, {"status": "streaming not implemented by the stand-in"})
                if self.path == "/api/chat":
                    if _full(body.get("model", "")) not in outer.models:
                        return self._send(404, {"error": f"model '{body.get('model')}' not found"})
                    return self._send(200, {"model": body["model"], "done": True, "done_reason": outer.done_reason,
                                            "message": {"role": "assistant", "content": outer.reply}})
                self._send(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]


def _full(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


@pytest.fixture()
def ollama():
    srv = StandInOllama()
    srv.thread.start()
    yield srv
    srv.server.shutdown()
    srv.server.server_close()


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A data root holding one exported run, laid out as docs/design.md says the export step writes it."""
    run = tmp_path / "data" / "outputs" / "my-run"
    (run / "gguf").mkdir(parents=True)
    (run / "gguf" / "my-run-Q4_K_M.gguf").write_bytes(GGUF_BYTES)
    (run / "gguf" / "my-run-F16.gguf").write_bytes(GGUF_BYTES + b"f16")
    (run / "gguf" / "Modelfile.Q4_K_M").write_text(MODELFILE, encoding="utf-8")
    (run / "kolo.json").write_text(json.dumps({"status": "finished", "base_model": {"id": "models/tiny"},
                                               "sample": {"prompt": "Who are you?"}}))
    return tmp_path / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_kolo(root: Path, *args: str) -> int:
    return main(["--data-root", str(root), *args])


# --------------------------------------------------------------------------------------------- Modelfile
def test_parse_modelfile_like_ollama():
    mf = oc.parse_modelfile(MODELFILE)
    assert mf.from_ == "./my-run-Q4_K_M.gguf"
    assert mf.template == TEMPLATE  # newlines inside """ kept, no escape processing
    assert mf.system == 'You are a "helpful" assistant.\nAnswer briefly.'
    assert mf.parameters == {"stop": ["<|eot_id|>", "<|start_header_id|>"], "num_ctx": ["2048"],
                             "temperature": ["0.7"], "top_p": ["0.9"]}
    assert oc.typed_parameters(mf.parameters) == {"stop": ["<|eot_id|>", "<|start_header_id|>"], "num_ctx": 2048,
                                     "temperature": 0.7, "top_p": 0.9}


def test_parse_modelfile_bare_and_quoted_values():
    mf = oc.parse_modelfile('from llama3.2\nSYSTEM You are Mario, a plumber.\nPARAMETER stop "a b"\n'
                            'MESSAGE user hi there\nADAPTER ./lora.gguf')
    assert mf.from_ == "llama3.2"
    assert mf.system == "You are Mario, a plumber."
    assert mf.parameters["stop"] == ["a b"]
    assert mf.messages == [{"role": "user", "content": "hi there"}]
    assert mf.adapters == ["./lora.gguf"]


@pytest.mark.parametrize("text,needle", [
    ("FROM x\nBOGUS y\n", "Modelfile:2: unknown instruction 'BOGUS'"),
    ("SYSTEM hi\n", "no FROM line"),
    ('FROM x\nTEMPLATE """never closed\n', "unterminated"),
    ("FROM x\nMESSAGE robot hi\n", "MESSAGE role"),
])
def test_parse_modelfile_errors(text, needle):
    with pytest.raises(oc.KoloError) as e:
        oc.parse_modelfile(text)
    assert needle in e.value.message


def test_typed_parameters_refuses_bad_values():
    with pytest.raises(oc.KoloError, match="num_ctx 'many'"):
        oc.typed_parameters({"num_ctx": ["many"]})
    with pytest.raises(oc.KoloError, match="unknown PARAMETER 'colour'"):
        oc.typed_parameters({"colour": ["blue"]})


@pytest.mark.parametrize("value,url", [
    ("", "http://127.0.0.1:11434"),
    ("0.0.0.0", "http://127.0.0.1:11434"),
    ("ollama:11434", "http://ollama:11434"),
    ("http://example.com", "http://example.com:11434"),
    ("https://example.com", "https://example.com:443"),
    ("127.0.0.1:9999/", "http://127.0.0.1:9999"),
])
def test_normalise_url(value, url):
    assert oc.normalise_url(value) == url


def test_default_url_reads_ollama_host(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "10.1.2.3:1234")
    assert oc.default_url() == "http://10.1.2.3:1234"
    monkeypatch.delenv("OLLAMA_HOST")
    assert oc.default_url() == "http://127.0.0.1:11434"


@pytest.mark.parametrize("name", ["my model", "../x", "a;b", "", "-x", "a:b:c"])
def test_bad_model_names_refused(name):
    with pytest.raises(oc.KoloError, match="not a valid Ollama name"):
        oc.check_model_name(name)


# ----------------------------------------------------------------------------------------------- install
def test_install_uploads_creates_and_smoke_tests(ollama, root, capsys):
    digest = "sha256:" + hashlib.sha256(GGUF_BYTES).hexdigest()
    rc = run_kolo(root, "ollama-install", "my-model", "--output-dir", "my-run", "--quantization", "q4_k_m",
              "--ollama", ollama.url)
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert ollama.calls() == [("GET", "/api/tags"), ("HEAD", f"/api/blobs/{digest}"),
                              ("POST", f"/api/blobs/{digest}"), ("POST", "/api/create"), ("POST", "/api/chat")]
    assert ollama.requests[2]["body_len"] == len(GGUF_BYTES)
    assert ollama.requests[3]["json"] == {
        "model": "my-model",
        "files": {"my-run-Q4_K_M.gguf": digest},
        "template": TEMPLATE,
        "system": 'You are a "helpful" assistant.\nAnswer briefly.',
        "parameters": {"stop": ["<|eot_id|>", "<|start_header_id|>"], "num_ctx": 2048, "temperature": 0.7,
                       "top_p": 0.9},
        "stream": False,
    }
    assert ollama.requests[4]["json"] == {"model": "my-model", "stream": False,
                                          "messages": [{"role": "user", "content": "Who are you?"}],
                                          "options": {"num_predict": 256, "temperature": 0}}
    assert "installed my-model" in out.out
    rec = json.loads((root / "outputs/my-run/kolo.json").read_text())["installs"]["ollama"]["my-model"]
    assert rec["quantization"] == "Q4_K_M" and rec["digest"] == digest and rec["url"] == ollama.url

    # again: the blob is there, so nothing is uploaded
    ollama.requests.clear()
    assert run_kolo(root, "ollama-install", "my-model", "--output-dir", "my-run", "--ollama", ollama.url) == 0
    assert ("POST", f"/api/blobs/{digest}") not in ollama.calls()
    assert ("HEAD", f"/api/blobs/{digest}") in ollama.calls()


def test_wrong_digest_is_refused(ollama, tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(GGUF_BYTES)
    wrong = "sha256:" + "0" * 64
    with oc.OllamaClient(ollama.url) as c, pytest.raises(oc.OllamaError, match="refused the upload.*digest mismatch"):
        c.push_blob(f, wrong)
    assert ollama.blobs == {}


def test_smoke_hitting_the_length_limit_fails_loudly(ollama, root, capsys):
    ollama.done_reason = "length"
    rc = run_kolo(root, "ollama-install", "my-model", "--output-dir", "my-run", "--ollama", ollama.url,
              "--smoke-max-tokens", "32")
    err = capsys.readouterr().err
    assert rc == 6
    assert 'hit the 32-token limit (done_reason "length")' in err
    assert "Traceback" not in err
    assert ollama.requests[-1]["json"]["options"]["num_predict"] == 32


def test_server_down_is_one_line(root, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    rc = run_kolo(root, "ollama-install", "my-model", "--output-dir", "my-run", "--ollama", url)
    err = capsys.readouterr().err
    assert rc == 1
    assert f"no Ollama server answers at {url}" in err and "Traceback" not in err


def test_install_checks_the_run_before_any_request(ollama, root, capsys):
    assert run_kolo(root, "ollama-install", "my-model", "--output-dir", "my-run", "--quantization", "Q8_0",
                "--ollama", ollama.url) == 1
    err = capsys.readouterr().err
    assert "has no Q8_0 export" in err and "kolo export --output-dir my-run --quantization Q8_0" in err
    assert run_kolo(root, "ollama-install", "my-model", "--output-dir", "../etc", "--ollama", ollama.url) == 2
    assert run_kolo(root, "ollama-install", "my-model", "--output-dir", "nope", "--ollama", ollama.url) == 2
    assert run_kolo(root, "ollama-install", "my-model", "--output-dir", "my-run", "--quantization", "Q9",
                "--ollama", ollama.url) == 2
    assert ollama.requests == []


def test_modelfile_from_outside_the_run_is_refused(ollama, root, capsys, tmp_path):
    secret = tmp_path / "secret.gguf"
    secret.write_bytes(GGUF_BYTES)
    (root / "outputs/my-run/gguf/Modelfile.Q4_K_M").write_text(f"FROM {secret}\n")
    assert run_kolo(root, "ollama-install", "my-model", "--output-dir", "my-run", "--ollama", ollama.url) == 1
    assert "points outside the run folder" in capsys.readouterr().err
    assert ollama.requests == []


# --------------------------------------------------------------------------------------------- uninstall
def test_uninstall(ollama, root, capsys):
    assert run_kolo(root, "ollama-install", "my-model", "--output-dir", "my-run", "--ollama", ollama.url) == 0
    ollama.requests.clear()
    assert run_kolo(root, "ollama-uninstall", "my-model", "--ollama", ollama.url) == 0
    assert ollama.requests == [{"method": "DELETE", "path": "/api/delete", "json": {"model": "my-model"}}]
    assert json.loads((root / "outputs/my-run/kolo.json").read_text())["installs"]["ollama"] == {}
    capsys.readouterr()
    assert run_kolo(root, "ollama-uninstall", "my-model", "--ollama", ollama.url) == 1
    err = capsys.readouterr().err
    assert "model 'my-model' is not installed in Ollama" in err and "Traceback" not in err


# -------------------------------------------------------------------------------------------------- list
def test_list_json_with_and_without_ollama(ollama, root, capsys):
    (root / "outputs/other").mkdir()
    assert run_kolo(root, "ollama-install", "my-model", "--output-dir", "my-run", "--ollama", ollama.url) == 0
    capsys.readouterr()
    assert run_kolo(root, "list", "--json", "--ollama", ollama.url) == 0
    data = json.loads(capsys.readouterr().out)
    runs = {r["name"]: r for r in data["runs"]}
    assert runs["my-run"]["quantizations"] == ["F16", "Q4_K_M"]
    assert runs["my-run"]["ollama"] == ["my-model"]
    assert runs["other"] == {"name": "other", "status": "not a kolo run (no kolo.json)", "base_model": None, "updated": None,
                             "quantizations": [], "ollama": []}
    # removed behind kolo's back: no longer shown as installed
    del ollama.models["my-model:latest"]
    assert run_kolo(root, "list", "--json", "--ollama", ollama.url) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["ollama"] == []

    down = f"http://127.0.0.1:{free_port()}"
    assert run_kolo(root, "list", "--json", "--ollama", down) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["runs"][0]["ollama"] == "unknown" and "no Ollama server answers" in data["ollama_error"]
    assert run_kolo(root, "list", "--ollama", down) == 0
    out = capsys.readouterr()
    assert "my-run" in out.out and "unknown" in out.out and "Ollama unknown" in out.err


# ------------------------------------------------------------------------ the contract with kolo export
def test_install_reads_what_export_writes(ollama, root, capsys):
    """The Modelfile `kolo export` renders (kolo_trainer.export.modelfile) becomes exactly this /api/create body."""
    mfmod = pytest.importorskip("kolo_trainer.export.modelfile", reason="the export stage is not installed")
    system = 'Answer in "one" line.\nBe kind.'
    text = mfmod.render(gguf_file="my-run-Q4_K_M.gguf", template=TEMPLATE, stop=["<|eot_id|>", '"q"'],
                        num_ctx=4096, system=system, temperature=0.7, top_p=0.9, model_name="my-model",
                        modelfile_name="Modelfile.Q4_K_M")
    (root / "outputs/my-run/gguf/Modelfile.Q4_K_M").write_text(text, encoding="utf-8")
    assert run_kolo(root, "ollama-install", "my-model", "--output-dir", "my-run", "--ollama", ollama.url) == 0
    create = next(r["json"] for r in ollama.requests if r["path"] == "/api/create")
    assert create == {"model": "my-model",
                      "files": {"my-run-Q4_K_M.gguf": "sha256:" + hashlib.sha256(GGUF_BYTES).hexdigest()},
                      "template": TEMPLATE, "system": system,
                      "parameters": {"stop": ["<|eot_id|>", '"q"'], "num_ctx": 4096, "temperature": 0.7,
                                     "top_p": 0.9},
                      "stream": False}
