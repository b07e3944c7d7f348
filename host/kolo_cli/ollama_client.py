"""A thin client for Ollama's REST API, and the Modelfile reader that feeds it.

``kolo ollama-install`` registers an exported run with an Ollama server over HTTP, so it works the same for the
compose ``ollama`` service and for an Ollama the user already runs on the host (no shared filesystem, no
``ollama`` binary needed on this side). The sequence is the one Ollama documents for remote model creation
(docs/api.md, "Create a Model" / "Push a Blob"):

1. ``HEAD /api/blobs/sha256:<hex>`` — is the GGUF already there?  200 yes, 404 no.
2. ``POST /api/blobs/sha256:<hex>`` with the file as the body (only when missing) — 201 created, 400 wrong digest.
3. ``POST /api/create`` ``{"model", "files": {"<file>.gguf": "sha256:<hex>"}, "template", "system",
   "parameters", "stream": false}`` — the Modelfile's instructions as JSON fields.
4. ``POST /api/chat`` with ``"stream": false`` — one smoke prompt; it must end with ``done_reason`` "stop".

Why httpx and not the ``ollama`` Python package: that package's ``create_blob`` reads and uploads the file with no
progress callback (a 5 GB GGUF would sit silently for minutes), and it is one more dependency for four plain HTTP
calls. httpx is already a kolo-cli dependency.

Light module: stdlib + httpx (imported lazily) + kolo_trainer's light modules. Never imports torch.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from kolo_trainer.errors import KoloError, NameError_, VerificationError

DEFAULT_URL = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434
CHUNK = 1 << 20

#: Ollama model names: [namespace/]model[:tag]. Ollama refuses anything else; refusing it here gives a clear
#: message before a multi-GB upload instead of an HTTP 400 after it.
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
_NAME_RE = re.compile(rf"^{_PART}(/{_PART})?(:[A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})?$")


class OllamaError(KoloError):
    """Ollama answered with an error (message carries its own words)."""


class OllamaUnreachable(OllamaError):
    """Nothing answers at the Ollama URL."""


class ModelNotFound(OllamaError):
    """The named model is not installed in Ollama (HTTP 404)."""


class SmokeTestFailed(VerificationError):
    """The installed model did not finish its smoke prompt with done_reason "stop"."""


def default_url() -> str:
    """``OLLAMA_HOST`` (Ollama's own variable, so one setting serves both) or http://127.0.0.1:11434."""
    return normalise_url(os.environ.get("OLLAMA_HOST") or DEFAULT_URL)


def normalise_url(value: str) -> str:
    """Accept what OLLAMA_HOST accepts: ``host``, ``host:port``, ``http(s)://host[:port]``.

    ``0.0.0.0`` is a listen address, not one to connect to; it becomes 127.0.0.1 (what the Ollama CLI does too).
    """
    v = value.strip().rstrip("/")
    if not v:
        return DEFAULT_URL
    scheme = "http"
    if "://" in v:
        scheme, v = v.split("://", 1)
        if scheme not in ("http", "https"):
            raise KoloError(f"Ollama URL {value!r}: scheme must be http or https")
    host, _, path = v.partition("/")
    if host.startswith("["):  # [ipv6]:port
        h, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        hostpart = f"[{h}]"
    elif host.count(":") == 1:
        hostpart, port = host.split(":")
    else:
        hostpart, port = host, ""
    if hostpart in ("", "0.0.0.0"):
        hostpart = "127.0.0.1"
    if not port:
        port = "443" if scheme == "https" and "://" in value else str(DEFAULT_PORT)
    if not port.isdigit():
        raise KoloError(f"Ollama URL {value!r}: port {port!r} is not a number")
    return f"{scheme}://{hostpart}:{port}" + (f"/{path}" if path else "")


def check_model_name(name: str) -> str:
    """Return ``name`` if Ollama accepts it as a model name, else raise a one-line KoloError."""
    if not _NAME_RE.match(name or ""):
        raise NameError_(f"model name {name!r} is not a valid Ollama name",
                        hint="use letters, digits, '.', '_' and '-', optionally namespace/name:tag "
                             "(e.g. my-model or my-model:q4)")
    return name


def same_model(a: str, b: str) -> bool:
    """Ollama lists ``name`` as ``name:latest``."""
    def norm(n: str) -> str:
        return n if ":" in n.rsplit("/", 1)[-1] else n + ":latest"
    return norm(a) == norm(b)


# --------------------------------------------------------------------------------------------------- Modelfile
# The Modelfile parser (a port of Ollama's parser/parser.go) lives with the code that writes Modelfiles; it is
# stdlib-only, so the host can import it.
from kolo_trainer.export.modelfile import Modelfile, parse as parse_modelfile  # noqa: E402


#: Ollama's Options fields by JSON type (api/types.go). Values must be sent typed: "0.7" as a string is refused.
_INT_PARAMS = {"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch", "num_gpu",
               "main_gpu", "num_thread"}
_FLOAT_PARAMS = {"top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
                 "frequency_penalty"}
_BOOL_PARAMS = {"numa", "use_mmap"}
_LIST_PARAMS = {"stop"}


def typed_parameters(raw: dict[str, list[str]]) -> dict[str, Any]:
    """PARAMETER lines -> the typed ``parameters`` object of /api/create (what Ollama's api.FormatParams does)."""
    out: dict[str, Any] = {}
    problems = []
    for key, values in raw.items():
        try:
            if key in _LIST_PARAMS:
                out[key] = list(values)
            elif key in _INT_PARAMS:
                out[key] = int(values[-1])
            elif key in _FLOAT_PARAMS:
                out[key] = float(values[-1])
            elif key in _BOOL_PARAMS:
                v = values[-1].lower()
                if v not in ("true", "false", "1", "0"):
                    raise ValueError(v)
                out[key] = v in ("true", "1")
            else:
                problems.append(f"unknown PARAMETER {key!r}")
        except ValueError:
            problems.append(f"PARAMETER {key} {values[-1]!r} is not a valid value")
    if problems:
        raise KoloError("Modelfile: " + "; ".join(problems))
    return out


# ------------------------------------------------------------------------------------------------------ client
def sha256_file(path: Path, on_bytes: Optional[Callable[[int], None]] = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            if on_bytes:
                on_bytes(len(block))
    return "sha256:" + h.hexdigest()


class OllamaClient:
    """Ollama's REST endpoints kolo uses. Every failure becomes a KoloError with one readable line."""

    def __init__(self, base_url: Optional[str] = None, timeout: float = 600.0):
        import httpx  # lazily: `kolo --help` must stay fast

        self.base_url = normalise_url(base_url) if base_url else default_url()
        self._httpx = httpx
        # connect quickly (a dead server should fail in seconds); reads may be long (create copies GBs, the first
        # chat loads the model).
        self._client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=5.0),
                                    trust_env=False)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "OllamaClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing
    def _request(self, method: str, path: str, **kw: Any):
        httpx = self._httpx
        try:
            return self._client.request(method, path, **kw)
        except httpx.ConnectError:
            raise OllamaUnreachable(
                f"no Ollama server answers at {self.base_url}",
                hint="start it (`kolo up` starts the compose ollama service; or run `ollama serve`), "
                     "or point --ollama / OLLAMA_HOST at it") from None
        except httpx.TimeoutException:
            raise OllamaError(f"Ollama at {self.base_url} did not answer {method} {path} in time") from None
        except httpx.HTTPError as e:
            raise OllamaError(f"talking to Ollama at {self.base_url}: {type(e).__name__}: {e}") from None

    @staticmethod
    def _error_text(resp) -> str:
        try:
            body = resp.json()
            if isinstance(body, dict) and body.get("error"):
                return str(body["error"])
        except ValueError:
            pass
        return (resp.text or "").strip()[:300] or resp.reason_phrase

    def _ok(self, resp, what: str):
        if resp.status_code >= 400:
            raise OllamaError(f"{what} failed: HTTP {resp.status_code}: {self._error_text(resp)}")
        return resp

    # -- endpoints
    def tags(self) -> list[str]:
        """Names of the installed models (GET /api/tags)."""
        resp = self._ok(self._request("GET", "/api/tags"), "listing models")
        try:
            models = resp.json().get("models", [])
            return [str(m.get("name") or m.get("model")) for m in models]
        except (ValueError, AttributeError, TypeError):
            # Something answers on that port, but not Ollama (a web server, another API).
            raise KoloError(f"the server at {self.base_url} does not answer like Ollama (GET /api/tags did not "
                            "return Ollama's model list)",
                            hint="check the URL (--ollama / OLLAMA_HOST); Ollama listens on port 11434") from None

    def has_blob(self, digest: str) -> bool:
        resp = self._request("HEAD", f"/api/blobs/{digest}")
        if resp.status_code == 404:
            return False
        self._ok(resp, f"checking blob {digest}")
        return True

    def push_blob(self, path: Path, digest: str, on_bytes: Optional[Callable[[int], None]] = None) -> None:
        """Upload ``path`` as blob ``digest``; Ollama recomputes the digest and refuses a mismatch (400)."""
        size = path.stat().st_size

        def body() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while block := f.read(CHUNK):
                    if on_bytes:
                        on_bytes(len(block))
                    yield block

        # Content-Length given explicitly: a generator body would otherwise go out chunked, and a proxy in
        # front of Ollama may not accept chunked uploads.
        resp = self._request("POST", f"/api/blobs/{digest}", content=body(),
                             headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
        if resp.status_code == 400:
            raise OllamaError(f"Ollama refused the upload of {path.name}: {self._error_text(resp)} "
                              f"(the file changed while uploading, or the digest is wrong)")
        self._ok(resp, f"uploading {path.name}")

    def create(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /api/create with stream false; raise unless the final status is "success"."""
        body = {**payload, "stream": False}
        resp = self._ok(self._request("POST", "/api/create", json=body), f"creating model {payload.get('model')!r}")
        data = resp.json()
        if data.get("error") or data.get("status") != "success":
            raise OllamaError(f"creating model {payload.get('model')!r} failed: {data.get('error') or data}")
        return data

    def delete(self, name: str) -> None:
        resp = self._request("DELETE", "/api/delete", json={"model": name})
        if resp.status_code == 404:
            raise ModelNotFound(f"model {name!r} is not installed in Ollama at {self.base_url}",
                                hint="see the installed models with `kolo list` (or `ollama list`)")
        self._ok(resp, f"deleting model {name!r}")

    def chat(self, name: str, prompt: str, options: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": name, "messages": [{"role": "user", "content": prompt}], "stream": False}
        if options:
            body["options"] = options
        resp = self._request("POST", "/api/chat", json=body)
        if resp.status_code == 404:
            raise ModelNotFound(f"model {name!r} is not installed in Ollama at {self.base_url}")
        return self._ok(resp, f"asking {name!r} (POST /api/chat)").json()


# ------------------------------------------------------------------------------------------------ the install
@dataclass
class InstallPlan:
    """Everything ollama-install needs, read from the run folder before any byte goes over the wire."""

    name: str
    run_dir: Path
    quantization: str
    modelfile_path: Path
    modelfile: Modelfile
    gguf: Optional[Path]               # FROM as a local file (None when FROM names an existing Ollama model)
    adapters: list[Path]
    smoke_prompt: str

    def create_payload(self, digests: dict[Path, str]) -> dict[str, Any]:
        mf = self.modelfile
        payload: dict[str, Any] = {"model": self.name}
        if self.gguf is not None:
            payload["files"] = {self.gguf.name: digests[self.gguf]}
        else:
            payload["from"] = mf.from_
        if self.adapters:
            payload["adapters"] = {a.name: digests[a] for a in self.adapters}
        if mf.template is not None:
            payload["template"] = mf.template
        if mf.system is not None:
            payload["system"] = mf.system
        params = typed_parameters(mf.parameters)
        if params:
            payload["parameters"] = params
        if mf.messages:
            payload["messages"] = mf.messages
        if mf.license:
            payload["license"] = mf.license
        return payload


def _local_file(ref: str, base: Path, run_dir: Path, what: str) -> Optional[Path]:
    """A FROM/ADAPTER value as a file inside the run folder, or None when it is not a path at all."""
    looks_like_path = ref.startswith((".", "/", "~")) or ref.lower().endswith((".gguf", ".bin", ".safetensors"))
    if not looks_like_path:
        return None
    p = Path(os.path.expanduser(ref))
    p = (p if p.is_absolute() else base / p).resolve()
    root = run_dir.resolve()
    if not p.is_file():
        # The export step writes FROM relative to gguf/; an absolute container path (/var/kolo_data/...) is
        # mapped back onto the host data root by taking the part under the run folder's name.
        parts = Path(ref).parts
        if run_dir.name in parts:
            cand = (run_dir / Path(*parts[parts.index(run_dir.name) + 1:])).resolve()
            if cand.is_file():
                p = cand
    if p != root and root not in p.parents:
        raise KoloError(f"Modelfile {what} {ref!r} points outside the run folder {run_dir}")
    if not p.is_file():
        raise KoloError(f"Modelfile {what} {ref!r}: file not found ({p})",
                        hint="re-run the export: kolo export --output-dir " + run_dir.name)
    return p


def plan_install(data_root: Path, output_dir: str, quantization: str, name: str) -> InstallPlan:
    """Check everything locally (names, manifest, Modelfile, GGUF) and say exactly what is missing."""
    from kolo_trainer import options
    from kolo_trainer.runfolder import DataRoot

    check_model_name(name)
    quant = options.quantization(quantization)
    run = DataRoot(data_root).run(output_dir, "--output-dir")
    data = run.require(finished=True, verb="install")
    run_dir = run.path
    mf_path = run_dir / "gguf" / f"Modelfile.{quant}"
    if not mf_path.is_file():
        have = sorted(p.name.split(".", 1)[1] for p in (run_dir / "gguf").glob("Modelfile.*")
                      if not p.name.startswith(".")) if (run_dir / "gguf").is_dir() else []
        raise KoloError(f"run {output_dir!r} has no {quant} export ({mf_path} is missing)"
                        + (f"; exported: {', '.join(have)}" if have else ""),
                        hint=f"kolo export --output-dir {output_dir} --quantization {quant}")
    mf = parse_modelfile(mf_path.read_text(encoding="utf-8"), source=str(mf_path))
    typed_parameters(mf.parameters)  # refuse a bad PARAMETER now, not after the upload
    gguf = _local_file(mf.from_ or "", mf_path.parent, run_dir, "FROM")
    adapters = [a for a in (_local_file(x, mf_path.parent, run_dir, "ADAPTER") for x in mf.adapters) if a]
    if len(adapters) != len(mf.adapters):
        raise KoloError(f"{mf_path}: ADAPTER must name a file in the run folder")
    prompt = (data.get("sample") or {}).get("prompt") or "Hello! Who are you?"
    return InstallPlan(name=name, run_dir=run_dir, quantization=quant, modelfile_path=mf_path, modelfile=mf,
                       gguf=gguf, adapters=adapters, smoke_prompt=prompt)


def smoke_check(response: dict[str, Any], name: str, max_tokens: int) -> str:
    """The reply text when the model stopped on its own; otherwise a SmokeTestFailed naming the cause."""
    reason = response.get("done_reason")
    text = ((response.get("message") or {}).get("content")
            if "message" in response else response.get("response")) or ""
    if reason == "stop":
        return text
    if reason == "length":
        raise SmokeTestFailed(
            f"smoke prompt to {name!r} hit the {max_tokens}-token limit (done_reason \"length\"): the model never "
            f"emitted a stop token, so every chat would run on until num_predict",
            hint="the Modelfile's TEMPLATE/stop strings do not match what the model was trained on; re-export with "
                 "the right --chat-template, or train longer. The model stays installed: `kolo ollama-uninstall "
                 f"{name}` removes it")
    raise SmokeTestFailed(f"smoke prompt to {name!r} ended with done_reason {reason!r}, expected \"stop\"",
                          hint=f"`kolo ollama-uninstall {name}` removes the model")
