"""``/api/v1/rag/{name}/retrieve`` and ``/api/v1/rag/{name}/query``: passages from a RAG index (``kolo rag build``),
and an answer from them through Ollama or a kolo run's GGUF.

The server stays torch-free (``--runtime docker`` runs it on a host without torch): retrieval runs where torch is,
in the trainer, through the CLI's own transport and argv builder. Each index gets a warm retriever: a long-lived
``python -m kolo_trainer rag-serve NAME`` (``kolo_trainer.rag.serve``: JSON lines on stdin/stdout, started on the
first request through ``docker exec -i`` or as a local subprocess), so a request after the first costs one embedding
and one FAISS search, not a process start and a model load. A retriever that died is started again; the trainer
reloads an index that changed on disk (``kolo rag add``, a rebuild) before answering; at most :data:`MAX_WARM`
indexes are kept warm (the least recently used one is stopped). Closing a retriever's stdin ends it, so a server
that stops, however it stops, leaves none behind.

Options are checked by ``kolo rag query``'s own check (:func:`kolo_cli.commands.rag.validate`): 422 with every
problem; an unknown index is 404, Ollama not answering 503.
"""

from __future__ import annotations

import collections
import json
import queue
import subprocess
import threading
from typing import Any, Optional

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from .app import ApiError, ServerConfig
from .routes_jobs import json_body

router = APIRouter(tags=["rag"])

#: Seconds a retriever may take to load its index and model, and to answer one request (a GGUF answer included).
START_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 600.0
#: Indexes kept warm at once: each holds its embedding model (~0.3 GB with torch) and its vectors.
MAX_WARM = 4
RETRIEVE_FIELDS = ("query", "top_k")
QUERY_FIELDS = RETRIEVE_FIELDS + ("ollama_model", "ollama_url", "run", "max_tokens", "temperature")


class TrainerReply(Exception):
    """The retriever answered with an error object (``rag.serve._error``): message, hint, exit code, kind."""

    def __init__(self, reply: dict[str, Any]):
        super().__init__(reply.get("error"))
        self.reply = reply


class WarmIndex:
    """One ``rag-serve`` process for one index; requests to it are answered one at a time."""

    def __init__(self, cfg: ServerConfig, name: str):
        self.cfg, self.name = cfg, name
        self.lock = threading.Lock()
        self.proc: Optional[subprocess.Popen] = None
        self.transport: Any = None
        self.lines: queue.Queue = queue.Queue()
        self.stderr: collections.deque[str] = collections.deque(maxlen=20)

    def _start(self) -> None:
        from ..transport import make_transport, trainer_argv

        t = make_transport(self.cfg.runtime, self.cfg.container, self.cfg.data_root, debug=self.cfg.debug)
        t.preflight()
        cmd = t.command(trainer_argv("rag-serve", None, {}, t.data_root, extra=[self.name]))
        if cmd[:2] == ["docker", "exec"]:
            cmd.insert(2, "-i")  # stdin stays open in the container: its end is what stops the retriever
        self.transport, self.lines = t, queue.Queue()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, encoding="utf-8", errors="replace", bufsize=1, **t.popen_kwargs())
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append, False), daemon=True).start()
        ready = self._read(START_TIMEOUT_S, "load the index")
        if "error" in ready:
            self.close()
            raise TrainerReply(ready)

    @staticmethod
    def _pump(stream: Any, put: Any, mark_end: bool) -> None:
        for line in stream:
            put(line.rstrip("\n"))
        if mark_end:
            put(None)  # end of stdout: the process is gone

    def _read(self, timeout: float, what: str) -> dict[str, Any]:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                self.close()
                raise ApiError(504, f"the retriever of {self.name!r} did not {what} in {timeout:g}s; it was "
                                    "stopped (the next request starts a new one)") from None
            if line is None:
                raise _Died(self._exit_text())
            try:
                reply = json.loads(line)
            except ValueError:
                continue  # not a protocol line (the trainer sends library output to stderr; be lenient)
            if isinstance(reply, dict):
                return reply

    def _exit_text(self) -> str:
        try:
            code = self.proc.wait(timeout=30) if self.proc is not None else None
        except subprocess.TimeoutExpired:
            code = None
        tail = " | ".join(s for s in list(self.stderr)[-3:] if s.strip())
        return f"the retriever of {self.name!r} exited (code {code})" + (f": {tail}" if tail else "")

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """The reply to one request; a dead retriever is started again (once per request)."""
        with self.lock:
            for attempt in (1, 2):
                try:
                    if self.proc is None or self.proc.poll() is not None:
                        self._start()
                    assert self.proc is not None and self.proc.stdin is not None
                    self.proc.stdin.write(json.dumps(request) + "\n")
                    self.proc.stdin.flush()
                    reply = self._read(REQUEST_TIMEOUT_S, "answer")
                except (_Died, OSError) as e:
                    died = str(e) if isinstance(e, _Died) else self._exit_text()
                    self.close()
                    if attempt == 2:
                        raise ApiError(500, died + "; it was started again and failed again") from None
                    continue
                if "error" in reply:
                    raise TrainerReply(reply)
                return reply
        raise AssertionError("unreachable")

    def close(self) -> None:
        """End of input ends the retriever; one that does not end in 10 s is stopped like a trainer on Ctrl-C."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.transport.stop(proc, 5)
            proc.kill()
            proc.wait()


class _Died(Exception):
    pass


class Pool:
    """The warm retrievers of one server, by index name (least recently used first)."""

    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.lock = threading.Lock()
        self.warm: collections.OrderedDict[str, WarmIndex] = collections.OrderedDict()

    def ask(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            index = self.warm.get(name) or WarmIndex(self.cfg, name)
            self.warm[name] = index
            self.warm.move_to_end(name)
            evicted = [self.warm.popitem(last=False)[1] for _ in range(max(0, len(self.warm) - MAX_WARM))]
        for old in evicted:
            with old.lock:  # after its request in flight, if any
                old.close()
        return index.ask(request)


def _pool(request: Request) -> Pool:
    state = request.app.state
    with _POOL_LOCK:
        if getattr(state, "rag_pool", None) is None:
            state.rag_pool = Pool(state.cfg)
    return state.rag_pool


_POOL_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------------------- checks
#: A trainer error's exit code -> the status it is answered with (kolo's exit codes: 2 options/names, 3 data,
#: 5 export, 7 Docker); anything else is the server's own failure.
_STATUS = {2: 422, 3: 422, 5: 422, 7: 503}


def _api_error(reply: dict[str, Any]) -> ApiError:
    if reply.get("kind") == "NameError_":
        status = 404
    else:
        status = _STATUS.get(int(reply.get("exit_code") or 1), 500)
    hint = reply.get("hint")
    return ApiError(status, str(reply.get("error")) + (f" ({hint})" if hint else ""), list(reply.get("problems") or []))


def _check(cfg: ServerConfig, name: str, body: dict[str, Any], fields: tuple[str, ...],
           more: list[str]) -> dict[str, Any]:
    """The trainer request for ``body``, checked by ``kolo rag query``'s own check (422 listing every problem),
    then the index's presence on the data root (404), before any retriever is started."""
    from kolo_trainer.errors import KoloError, OptionsError
    from kolo_trainer.rag import store
    from kolo_trainer.runfolder import DataRoot

    from ..commands.rag import validate

    problems = [f"{k}: unknown field (give {', '.join(fields)})" for k in body if k not in fields] + more
    flags = {"question" if k == "query" else k: v for k, v in body.items() if k in fields and k not in
             ("ollama_model", "ollama_url")}
    if "query" not in body:
        problems.append("query: required, the question to retrieve passages for")
    try:
        explicit = validate("RagQueryOptions", flags, {"name": name}, tuple(problems))
    except OptionsError as e:
        # The API's field is `query`; the check speaks of the CLI's --question.
        shown = [p.replace("--question", "query") for p in e.problems]
        raise ApiError(422, f"{len(shown)} problem(s) with the request", shown) from None
    try:
        store.require(DataRoot(cfg.data_root).run(name, "NAME"))
    except KoloError as e:
        raise ApiError(404 if e.exit_code == 2 else 500, e.message + (f" ({e.hint})" if e.hint else "")) from None
    return {k: v for k, v in explicit.items() if k != "name"}


def _answer_problems(body: dict[str, Any]) -> list[str]:
    """How to answer: exactly one of ollama_model and run; ollama_url only with ollama_model."""
    from kolo_trainer.errors import KoloError

    from ..ollama_client import check_model_name

    model, run, url = body.get("ollama_model"), body.get("run"), body.get("ollama_url")
    if (model is None) == (run is None):
        return ["give ollama_model (answer through Ollama) or run (answer with a kolo run's GGUF through "
                "llama.cpp), exactly one; POST /api/v1/rag/{name}/retrieve gives the passages alone"]
    problems = []
    if model is not None and not isinstance(model, str):
        problems.append("ollama_model: must be a string (an Ollama model name, e.g. llama3.2)")
    elif model is not None:
        try:
            check_model_name(model)
        except KoloError as e:
            problems.append(f"ollama_model: {e.message}")
    if url is not None and (model is None or not isinstance(url, str)):
        problems.append("ollama_url: a string, with ollama_model")
    return problems


# ------------------------------------------------------------------------------------------------- routes
def _ask(pool: Pool, name: str, request: dict[str, Any]) -> dict[str, Any]:
    from kolo_trainer.errors import KoloError

    try:
        return pool.ask(name, request)
    except TrainerReply as e:
        raise _api_error(e.reply) from None
    except KoloError as e:  # the transport's own (Docker not running: exit 7)
        raise _api_error({"error": e.message, "hint": e.hint, "exit_code": e.exit_code,
                          "kind": type(e).__name__}) from None


def _passages(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: reply[k] for k in ("documents", "sources", "scores")}


@router.post("/rag/{name}/retrieve")
async def retrieve(name: str, request: Request) -> dict[str, Any]:
    """``{query, top_k?}`` -> ``{documents, sources, scores}``: the best ``top_k`` (default 3) chunks across all the
    index's documents, best first (scores: cosine similarity)."""
    body = await json_body(request)
    req = await run_in_threadpool(_check, request.app.state.cfg, name, body, RETRIEVE_FIELDS, [])
    return _passages(await run_in_threadpool(_ask, _pool(request), name, req))


@router.post("/rag/{name}/query")
async def query(name: str, request: Request) -> dict[str, Any]:
    """``{query, top_k?, ollama_model, ollama_url?}`` or ``{query, top_k?, run}``, both with ``max_tokens?`` and
    ``temperature?`` -> ``{answer, answered_by, prompt, documents, sources, scores}``: retrieve, then answer from
    the passages through Ollama (``POST /api/chat``) or with a kolo run's exported GGUF through llama.cpp (as
    ``kolo chat`` does)."""
    from ..commands.rag import ollama_options

    body = await json_body(request)
    cfg = request.app.state.cfg
    req = await run_in_threadpool(_check, cfg, name, body, QUERY_FIELDS, _answer_problems(body))
    if req.get("run") is not None:
        await run_in_threadpool(_exported, cfg, req["run"])
        reply = await run_in_threadpool(_ask, _pool(request), name, req)
        by = {"run": req["run"]}
    else:
        reply = await run_in_threadpool(_ask, _pool(request), name, req)
        reply["answer"] = await run_in_threadpool(_ollama, body["ollama_model"], body.get("ollama_url"),
                                                  reply["prompt"], ollama_options(req))
        by = {"ollama_model": body["ollama_model"]}
    return {"answer": reply["answer"], "answered_by": by, "prompt": reply["prompt"], **_passages(reply)}


def _exported(cfg: ServerConfig, run: str) -> None:
    """The run was exported (checked on the host, like `kolo rag query --run`): a typo costs no model load."""
    from kolo_trainer.errors import KoloError
    from kolo_trainer.export.chat import exported
    from kolo_trainer.runfolder import DataRoot

    try:
        exported(DataRoot(cfg.data_root).run(run, "--run"), None)
    except KoloError as e:
        raise ApiError(422, "1 problem(s) with the request",
                       [f"run: {e.message}" + (f" ({e.hint})" if e.hint else "")]) from None


def _ollama(model: str, url: Optional[str], prompt: str, options: dict[str, Any]) -> str:
    from kolo_trainer.errors import KoloError

    from ..ollama_client import ModelNotFound, OllamaClient, OllamaError, OllamaUnreachable

    try:
        with OllamaClient(url, timeout=REQUEST_TIMEOUT_S) as client:
            reply = client.chat(model, prompt, options or None)
    except OllamaUnreachable as e:
        raise ApiError(503, f"{e.message}: start Ollama, or send its address as ollama_url") from None
    except ModelNotFound as e:
        raise ApiError(422, "1 problem(s) with the request", [f"ollama_model: {e.message}"]) from None
    except OllamaError as e:
        # The client's timeout is an OllamaError saying "did not answer": Ollama is there but not answering.
        raise ApiError(503 if "did not answer" in e.message else 502, e.message) from None
    except KoloError as e:  # the address itself (normalise_url)
        raise ApiError(422, "1 problem(s) with the request", [f"ollama_url: {e.message}"]) from None
    return str((reply.get("message") or {}).get("content", "")).strip()
