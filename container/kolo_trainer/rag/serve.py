"""``python -m kolo_trainer rag-serve NAME --data-root ROOT``: one index kept warm for ``kolo serve``.

``kolo serve`` stays torch-free, so its ``/api/v1/rag`` routes run retrieval here, through the transport like every
trainer verb, in a long-lived process: the index and the embedding model load once, and each request then costs an
embedding and a FAISS search instead of a process start and a model load.

The protocol is JSON lines. The first line this process writes is ``{"ready": true, "chunks": N, ...}``, or
``{"error", "hint", "exit_code", "kind"}`` (then it exits with that code). Then each stdin line
``{"question", "top_k", "run"?, "max_tokens"?}`` gets one stdout line: ``{documents, sources, scores, prompt}``
(plus ``answer`` when ``run`` names an exported kolo run, answered by its GGUF through llama.cpp, the same
``export.chat.Session`` as ``kolo chat``), or an error object as above. End of stdin ends the process (the server
closing the pipe, or dying, stops it: ``docker exec -i`` passes the end of input on). An index that changes on disk
(``kolo rag add``, a rebuild) is reloaded before the next request is answered.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

from .. import spec
from ..errors import KoloError
from ..runfolder import DataRoot
from . import embed
from .options import RagQueryOptions


def _error(e: BaseException) -> dict[str, Any]:
    from ..cli import as_kolo_error

    err = as_kolo_error(e) if isinstance(e, Exception) else KoloError(str(e))
    return {"error": err.message, "hint": err.hint, "problems": list(getattr(err, "problems", None) or []),
            "exit_code": err.exit_code, "kind": type(err).__name__}


class _Answerers:
    """One llama.cpp ``Session`` per exported run, reused while its GGUF stays the same file."""

    def __init__(self, root: DataRoot):
        self.root, self.sessions = root, {}

    def ask(self, opts: RagQueryOptions, text: str) -> str:
        from ..export.chat import Session, exported

        assert opts.run is not None
        files = exported(self.root.run(opts.run, "--run"), None)
        st = files.gguf.stat()
        key = (opts.run, str(files.gguf), st.st_ino, st.st_mtime_ns, opts.temperature)
        session = self.sessions.get(key)
        if session is None:
            self.sessions = {key: Session(files, opts.temperature)}  # one model in memory at a time
            session = self.sessions[key]
        session.messages = []  # every request is a conversation of its own
        return session.ask(text, opts.max_tokens)


def answer(retriever: Any, answerers: _Answerers, request: dict[str, Any]) -> dict[str, Any]:
    """One request -> its reply (the host validated it; checked again here, the trainer trusts no caller)."""
    from .retrieve import prompt

    opts = spec.validate(RagQueryOptions, {"name": retriever.run.name, **request})
    assert isinstance(opts, RagQueryOptions)
    retriever.refresh()
    hits = retriever.retrieve(opts.question, opts.top_k)
    out: dict[str, Any] = {**hits, "prompt": prompt(opts.question, hits)}
    if opts.run is not None:
        out["answer"] = answerers.ask(opts, out["prompt"])
    return out


def serve(retriever: Any, answerers: _Answerers, lines: TextIO, write: Callable[[dict], None]) -> None:
    for line in lines:
        if not line.strip():
            continue
        try:
            try:
                request = json.loads(line)
            except ValueError:
                raise KoloError(f"a request line is not JSON: {line[:80]!r}") from None
            if not isinstance(request, dict):
                raise KoloError("a request must be a JSON object")
            write(answer(retriever, answerers, request))
        except Exception as e:  # one bad request never ends the process: it gets its error, the next one an answer
            write(_error(e))


def main(argv: list[str]) -> int:
    embed.force_offline()
    # The protocol gets its own copy of stdout; fd 1 becomes stderr, so nothing a library prints can corrupt it.
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def write(obj: dict) -> None:
        proto.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        proto.flush()

    try:
        root_s, rest = spec.pop_data_root(list(argv))
        if len(rest) != 1:
            raise KoloError("usage: python -m kolo_trainer rag-serve NAME --data-root ROOT")
        from .retrieve import Retriever

        root = DataRoot(root_s).check()
        retriever = Retriever(root, rest[0])
    except Exception as e:
        err = _error(e)
        write(err)
        return int(err["exit_code"])
    write({"ready": True, "name": rest[0], "chunks": len(retriever.store.documents), "pid": os.getpid(),
           "index_type": retriever.store.config.get("index_type"), "data_root": str(Path(root_s))})
    serve(retriever, _Answerers(root), sys.stdin, write)
    return 0
