"""Render Ollama TEMPLATEs with the real Go ``text/template``, as Ollama does (see ``ollama_render.go``).

Ollama itself cannot run here, but its template engine is Go's standard library: a ~150-line Go program that
reproduces Ollama's data (collated ``.Messages``, ``.System``, the Modelfile SYSTEM rule, the ``json`` function)
renders a TEMPLATE byte for byte like Ollama would. It is built on first use with ``go build`` into a cache folder
(``$KOLO_CACHE_DIR`` or ``~/.cache/kolo``), keyed by a hash of the source and the Go version, and reused after.

Without Go, every function raises :class:`GoUnavailable` with the fix; :func:`available` lets callers (export's
run-time verification, the tests) decide to skip instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Iterable, Optional

from ..errors import KoloError

_SOURCE = "ollama_render.go"


class GoUnavailable(KoloError):
    """The ``go`` command is missing or cannot build the renderer."""

    exit_code = 6


class GoRenderError(KoloError):
    """The template failed to parse or execute in Go (Ollama would fail the same way)."""

    exit_code = 6


def _go() -> Optional[str]:
    return shutil.which("go", path=os.environ.get("PATH", "") + os.pathsep + "/usr/lib/go/bin:/usr/local/go/bin")


def available() -> bool:
    """True when a Go toolchain is on PATH (building may still fail; :func:`binary` says why)."""
    return _go() is not None


def _cache_dir() -> Path:
    base = os.environ.get("KOLO_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "kolo")
    return Path(base)


def _source_text() -> str:
    return (resources.files("kolo_trainer.templates") / _SOURCE).read_text(encoding="utf-8")


def binary() -> Path:
    """Path of the built renderer, building it first if needed (atomic: a half-built binary is never used)."""
    go = _go()
    if go is None:
        raise GoUnavailable("Go is not installed: checking an Ollama TEMPLATE needs Go's text/template "
                            "(the `go` command)", hint="install it (Debian/Ubuntu: apt-get install golang-go) "
                            "or skip template verification")
    src = _source_text()
    try:
        version = subprocess.run([go, "version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise GoUnavailable(f"`go version` failed: {e}") from None
    key = hashlib.sha256((src + "\0" + version).encode()).hexdigest()[:16]
    cache = _cache_dir()
    target = cache / f"ollama_render-{key}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ollama_render-", dir=cache) as tmp:
        (Path(tmp) / "main.go").write_text(src, encoding="utf-8")
        (Path(tmp) / "go.mod").write_text("module kolo/ollama_render\n\ngo 1.18\n", encoding="utf-8")
        env = dict(os.environ)
        # Offline and self-contained: no module downloads, no toolchain switching, a writable build cache even
        # when $HOME is read-only (containers).
        env.update(GOFLAGS="-mod=mod", GOPROXY="off", GOTOOLCHAIN="local", CGO_ENABLED="0")
        env.setdefault("GOCACHE", str(cache / "go-build"))
        if not os.access(os.path.expanduser("~"), os.W_OK):
            env["GOCACHE"] = str(cache / "go-build")
            env.setdefault("GOPATH", str(cache / "gopath"))
        built = Path(tmp) / "ollama_render"
        try:
            proc = subprocess.run([go, "build", "-o", str(built), "."], cwd=tmp, env=env, capture_output=True,
                                  text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            raise GoUnavailable(f"building the Go template renderer failed: {e}") from None
        if proc.returncode != 0:
            raise GoUnavailable("building the Go template renderer failed: "
                                + (proc.stderr.strip() or proc.stdout.strip())[-2000:])
        os.replace(built, target)
    return target


def _run(payload: dict) -> str:
    exe = binary()
    proc = subprocess.run([str(exe)], input=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
                          capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise GoRenderError(proc.stderr.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}")
    return proc.stdout.decode("utf-8")


def _clean(messages: Iterable[dict]) -> list[dict]:
    out = []
    for m in messages:
        msg = {"role": str(m["role"]), "content": str(m["content"])}
        if m.get("thinking"):
            msg["thinking"] = str(m["thinking"])
        out.append(msg)
    return out


def render(template: str, messages: Iterable[dict], system: Optional[str] = None,
           think: Optional[bool] = None) -> str:
    """Ollama's rendering of ``messages`` with TEMPLATE ``template``; ``system`` is the Modelfile SYSTEM; ``think``
    is the request's think value (None: not given, so Ollama's default applies)."""
    return _run({"template": template, "system": system or "", "messages": _clean(messages), "think": think})


def _render_cases(template: str, conversations: Iterable[Iterable[dict]], system: Optional[str],
                  think: Optional[bool]) -> dict:
    cases = [{"system": system or "", "messages": _clean(c), "think": think} for c in conversations]
    return json.loads(_run({"template": template, "cases": cases}))


def render_many(template: str, conversations: Iterable[Iterable[dict]], system: Optional[str] = None,
                think: Optional[bool] = None) -> list[str]:
    """Render several conversations in one process (one ``go`` start instead of one per conversation)."""
    return list(_render_cases(template, conversations, system, think)["outputs"])


def thinking_capability(template: str) -> bool:
    """Whether Ollama infers the "thinking" capability from this TEMPLATE (and so renders with think on)."""
    return bool(_render_cases(template, [[{"role": "user", "content": "x"}]], None, None)["thinking"])
