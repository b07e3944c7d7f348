"""Chat with a run's GGUF in the dashboard: the page ``/runs/{run}/chat`` and ``POST /api/v1/runs/{run}/chat``
(Server-Sent Events: ``token`` pieces as they are generated, then ``done`` with the whole answer, or ``error``).

The server stays torch-free: each answer is one trainer process, ``python -m kolo_trainer chat-stream``
(:func:`kolo_trainer.export.chat.stream_main`, the same ``Session`` as ``kolo chat``: the Modelfile's TEMPLATE
rendered as Ollama renders it, its stop strings, its SYSTEM unless the conversation brings one), started through
the CLI's own transport and argv builder (local subprocess, or ``docker exec -i``) and read as JSON lines. A
browser that goes away stops the trainer. ``kolo chat RUN --web`` serves this same app and prints this page's URL.

Conversations are saved as JSON in the run folder, ``outputs/RUN/chats/<id>.json`` (``runfolder.RUN_ENTRIES``:
``kolo delete`` removes them with the run), each written atomically after every answer.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import secrets
import subprocess
from typing import Any, AsyncIterator, Iterator, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .app import ApiError, ServerConfig, require_key

router = APIRouter(tags=["chat"])
CHATS = "chats"
#: A conversation id: its start time and a random part (also its file name, so nothing else is ever accepted).
CHAT_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{8}")
#: Seconds the trainer may take to load the GGUF, and then between two streamed pieces.
START_TIMEOUT_S = 300.0


# ------------------------------------------------------------------------------------------------ checks
def _status(e: Exception) -> ApiError:
    from kolo_trainer.errors import ExportError, KoloError, NameError_, OptionsError

    if isinstance(e, NameError_):
        return ApiError(404, e.message)
    if isinstance(e, OptionsError):
        return ApiError(422, e.message.splitlines()[0], list(e.problems))
    if isinstance(e, ExportError):
        return ApiError(409, e.message + (f" ({e.hint})" if e.hint else ""))
    assert isinstance(e, KoloError)
    return ApiError(500, e.message)


def _exported(cfg: ServerConfig, run: str, quant: Optional[str]) -> Any:
    """The run's Modelfile and GGUF (``export.chat.exported``), or the API error naming what is missing."""
    from kolo_trainer.errors import KoloError
    from kolo_trainer.export.chat import exported
    from kolo_trainer.runfolder import DataRoot

    try:
        return exported(DataRoot(cfg.data_root).run(run, "run"), quant)
    except KoloError as e:
        raise _status(e) from None


def _options(run: str, body: dict[str, Any]) -> dict[str, Any]:
    """The ChatOptions a request gives (the one definition checks them), every problem at once (422)."""
    from kolo_trainer import spec
    from kolo_trainer.errors import OptionsError
    from kolo_trainer.options import ChatOptions

    given = {k: body[k] for k in ("quantization", "temperature", "max_tokens") if body.get(k) not in (None, "")}
    problems = []
    if not isinstance(body.get("message"), str) or not body["message"].strip():
        problems.append("message: write something to send")
    if body.get("system") is not None and not isinstance(body["system"], str):
        problems.append("system: must be text")
    try:
        _, explicit = spec.merge(ChatOptions, {}, {**given, "output_dir": run})
    except OptionsError as e:
        problems += e.problems
        explicit = {}
    if problems:
        raise ApiError(422, f"{len(problems)} problem(s) with the request", problems)
    return explicit


# ------------------------------------------------------------------------------------------------ conversations
class Chats:
    """The saved conversations of one run (``outputs/RUN/chats/<id>.json``)."""

    def __init__(self, cfg: ServerConfig, run: str):
        from kolo_trainer.runfolder import DataRoot

        self.run = DataRoot(cfg.data_root).run(run, "run")
        self.dir = self.run.root.resolve(f"outputs/{run}/{CHATS}", "the chats folder")  # no link out of the root

    def load(self, chat_id: str) -> dict[str, Any]:
        path = self.dir / f"{chat_id}.json"
        if not CHAT_ID.fullmatch(chat_id) or not path.is_file():
            raise ApiError(404, f"no conversation {chat_id!r} in {self.run.label}/{CHATS}")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ApiError(500, f"{self.run.label}/{CHATS}/{chat_id}.json cannot be read ({e})") from None

    def new(self, quant: str, system: Optional[str]) -> dict[str, Any]:
        now = _dt.datetime.now(_dt.timezone.utc)
        chat_id = now.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)
        stamp = now.isoformat(timespec="seconds")
        return {"id": chat_id, "run": self.run.name, "quantization": quant, "system": system, "created": stamp,
                "updated": stamp, "messages": []}

    def save(self, chat: dict[str, Any]) -> None:
        from kolo_trainer import manifest

        chat["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        manifest.write_json_atomic(self.dir / f"{chat['id']}.json", chat)

    def list(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.dir.glob("*.json"), reverse=True) if self.dir.is_dir() else []:
            if CHAT_ID.fullmatch(p.stem):
                try:
                    c = json.loads(p.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                first = next((m["content"] for m in c.get("messages", []) if m.get("role") == "user"), "")
                out.append({"id": c["id"], "updated": c.get("updated"), "turns": len(c.get("messages", [])),
                            "title": first[:80]})
        return out


# ------------------------------------------------------------------------------------------------ generation
def _trainer(cfg: ServerConfig, explicit: dict[str, Any]) -> tuple[subprocess.Popen, Any]:
    from kolo_trainer.options import ChatOptions

    from ..transport import make_transport, trainer_argv

    t = make_transport(cfg.runtime, cfg.container, cfg.data_root, debug=cfg.debug)
    t.preflight()
    cmd = t.command(trainer_argv("chat-stream", ChatOptions, explicit, t.data_root))
    if cmd[:2] == ["docker", "exec"]:
        cmd.insert(2, "-i")  # the conversation goes in on stdin
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", errors="replace", bufsize=1, **t.popen_kwargs())
    return proc, t


class Answer:
    """One answer being generated: :meth:`events` yields (event, data) pairs, ``token`` {text} as the answer
    streams, then ``done`` {answer, conversation} once the conversation is saved, or ``error`` {detail};
    :meth:`stop` ends the trainer (a browser that went away), which also ends :meth:`events`."""

    def __init__(self, cfg: ServerConfig, explicit: dict[str, Any], chat: dict[str, Any], text: str, chats: Chats):
        self.cfg, self.explicit, self.chat, self.text, self.chats = cfg, explicit, chat, text, chats
        self.proc: Optional[subprocess.Popen] = None
        self.transport: Any = None

    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        messages = self.chat["messages"] + [{"role": "user", "content": self.text}]
        self.proc, self.transport = _trainer(self.cfg, self.explicit)
        proc = self.proc
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps({"messages": messages, "system": self.chat.get("system")}) + "\n")
            proc.stdin.close()
            answer = None
            for line in proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue  # library output on stdout is not part of the protocol
                if "token" in msg:
                    yield "token", {"text": msg["token"]}
                elif msg.get("done"):
                    answer = str(msg.get("answer", ""))
            code = proc.wait()
            if answer is None or code != 0:
                err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
                why = next((ln[len("error: "):] for ln in err if ln.startswith("error: ")), err[-1] if err else "")
                yield "error", {"detail": f"the trainer stopped (exit code {code}): {why}".rstrip(": ")}
                return
            self.chat["messages"] = messages + [{"role": "assistant", "content": answer}]
            self.chats.save(self.chat)
            yield "done", {"answer": answer, "conversation": self.chat["id"]}
        finally:
            self.stop()

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.transport.stop(proc, 2)
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _prepare(cfg: ServerConfig, run: str, body: dict[str, Any]) -> tuple[dict, dict, Chats]:
    """Options, the exported GGUF, and the conversation (an existing one, or a new one): checked before any
    trainer process starts."""
    explicit = _options(run, body)
    files = _exported(cfg, run, explicit.get("quantization"))
    explicit["quantization"] = files.quant
    chats = Chats(cfg, run)
    chat = chats.load(str(body["conversation"])) if body.get("conversation") else \
        chats.new(files.quant, body.get("system") or None)
    if body.get("conversation") and "system" in body:
        chat["system"] = body.get("system") or None  # the page's system field is the conversation's from now on
    return explicit, chat, chats


@router.post("/api/v1/runs/{run}/chat", dependencies=[Depends(require_key)])
async def chat_api(run: str, request: Request) -> Any:
    """One user message -> the answer as Server-Sent Events (``token``..., then ``done`` or ``error``). Body:
    ``{"message", "system"?, "conversation"?, "quantization"?, "temperature"?, "max_tokens"?}``."""
    from sse_starlette.sse import EventSourceResponse

    from .routes_jobs import json_body

    body = await json_body(request)
    cfg = request.app.state.cfg
    explicit, chat, chats = await run_in_threadpool(_prepare, cfg, run, body)
    answer = Answer(cfg, explicit, chat, body["message"], chats)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for e, d in iterate_in_threadpool(answer.events()):
                yield {"event": e, "data": json.dumps(d, ensure_ascii=False)}
        finally:  # also when the browser went away: the stream is cancelled, the trainer must not go on
            await run_in_threadpool(answer.stop)

    return EventSourceResponse(events(), ping=15)


@router.get("/api/v1/runs/{run}/chats", dependencies=[Depends(require_key)])
def chats_api(run: str, request: Request) -> list[dict[str, Any]]:
    """The run's saved conversations, newest first: {id, updated, turns, title}."""
    return _chats(request.app.state.cfg, run).list()


@router.get("/api/v1/runs/{run}/chats/{chat_id}", dependencies=[Depends(require_key)])
def chat_get(run: str, chat_id: str, request: Request) -> dict[str, Any]:
    return _chats(request.app.state.cfg, run).load(chat_id)


def _chats(cfg: ServerConfig, run: str) -> Chats:
    from kolo_trainer.errors import KoloError

    try:
        chats = Chats(cfg, run)
        chats.run.require()
    except KoloError as e:
        raise _status(e) from None
    return chats


# ------------------------------------------------------------------------------------------------ the page
def _page_context(cfg: ServerConfig, run: str, chat_id: Optional[str]) -> dict[str, Any]:
    files = _exported(cfg, run, None)
    chats = _chats(cfg, run)
    mfs = (files.data.get("export") or {}).get("modelfiles") or {}
    chat = chats.load(chat_id) if chat_id else None
    return {"run": run, "quants": list(mfs), "quant": (chat or {}).get("quantization") or files.quant,
            "system": (chat or {}).get("system") if chat else files.mf.system, "chat": chat,
            "chats": chats.list(), "stops": list(files.mf.parameters.get("stop", []))}


@router.get("/runs/{run}/chat", include_in_schema=False)
async def chat_page(run: str, request: Request, c: Optional[str] = None) -> HTMLResponse:
    """The chat page: the conversation, a message box, the system prompt, the GGUF; answers stream in with
    JavaScript, and the form works without it (the answer then comes with the next page)."""
    from .web import _authed, page

    _authed(request)
    ctx = await run_in_threadpool(_page_context, request.app.state.cfg, run, c)
    return page(request, "chat.html", **ctx, error=None)


@router.post("/runs/{run}/chat", include_in_schema=False)
async def chat_form(run: str, request: Request) -> Response:
    """The form without JavaScript: the whole answer, then the page of the conversation."""
    from .web import _authed, page

    _authed(request)
    form = {k: str(v) for k, v in (await request.form()).items()}
    cfg = request.app.state.cfg
    try:
        explicit, chat, chats = await run_in_threadpool(_prepare, cfg, run, form)
        result = await run_in_threadpool(lambda: list(Answer(cfg, explicit, chat, form["message"], chats).events()))
    except ApiError as e:
        ctx = await run_in_threadpool(_page_context, cfg, run, None)
        return page(request, "chat.html", e.status_code, **ctx, error={"detail": e.detail, "problems": e.problems})
    kind, data = result[-1]
    if kind == "error":
        ctx = await run_in_threadpool(_page_context, cfg, run, chat["id"] if chat["messages"] else None)
        return page(request, "chat.html", 500, **ctx, error={"detail": data["detail"], "problems": []})
    return RedirectResponse(f"/runs/{run}/chat?c={data['conversation']}", status_code=303)


def chat_url(host: str, port: int, run: str) -> str:
    from urllib.parse import quote

    return f"http://{host}:{port}/runs/{quote(run, safe='')}/chat"

