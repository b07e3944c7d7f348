"""``python -m kolo_trainer VERB [options]``: the entry point the host runs (through docker exec or locally).

Verbs are looked up lazily so that ``--help`` and option errors never import torch. Each verb function takes
``(argv: list[str]) -> int``. Every exception becomes ``error: ...`` (+ ``hint: ...``) on stderr and an exit code
(:func:`as_kolo_error`); ``--debug`` (or ``KOLO_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

from .errors import KoloError

#: verb -> "module:function" (relative to kolo_trainer), imported only when the verb runs.
VERBS: dict[str, tuple[str, str]] = {
    "train": ("kolo_trainer.train.main:run", "Fine-tune a model (LoRA, QLoRA or full)."),
    "export": ("kolo_trainer.export.main:run", "Merge, convert to GGUF, quantise, write Modelfiles, verify."),
    "chat": ("kolo_trainer.export.chat:run", "Chat with an exported GGUF through its Modelfile template."),
    "chat-stream": ("kolo_trainer.export.chat:stream_main", "One chat answer as JSON lines (for kolo chat --web)."),
    "eval": ("kolo_trainer.eval.main:run", "Measure each GGUF against the HF model (loss, KL, top-1, answers)."),
    "check": ("kolo_trainer.data:check_main", "Validate a data file and print statistics."),
    "preview": ("kolo_trainer.masking:preview_main", "Show one rendered example with the trained tokens marked."),
    "plan": ("kolo_trainer.plan.main:run", "Estimate memory, disk and time of a training run (no model load)."),
    "make-tiny-model": ("kolo_trainer.tiny:main", "Build the tiny demo model (a toy that only proves the pipeline)."),
    "rag-build": ("kolo_trainer.rag.main:build_main", "Index documents for RAG (offline embeddings + FAISS)."),
    "rag-add": ("kolo_trainer.rag.main:add_main", "Add documents to a RAG index (old chunks are not re-embedded)."),
    "rag-query": ("kolo_trainer.rag.main:query_main", "Retrieve passages from a RAG index and answer from them."),
    "rag-serve": ("kolo_trainer.rag.serve:main", "Keep one RAG index warm for kolo serve (JSON lines, stdin/stdout)."),
}


def _usage() -> str:
    lines = ["usage: python -m kolo_trainer VERB [options]", "", "verbs:"]
    lines += [f"  {v:<16} {h}" for v, (_, h) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("KOLO_DEBUG") == "1"
    if "--debug" in argv:
        argv.remove("--debug")
        debug = True
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"kolo_trainer: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target = VERBS[verb][0]
    mod_name, func_name = target.split(":")
    try:
        func = getattr(importlib.import_module(mod_name), func_name)
        return int(func(rest) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the one error path: a message and the documented exit code, never a traceback
        if debug:
            raise
        err = as_kolo_error(e)
        print(f"error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return err.exit_code


def as_kolo_error(e: Exception) -> KoloError:
    """KoloErrors as they are; an OSError (disk full, read-only, permission) as a message naming the fix; anything
    else as an internal error in one line (``--debug`` shows the traceback)."""
    if isinstance(e, KoloError):
        return e
    if isinstance(e, OSError):
        from .runfolder import os_error

        return os_error(e, "could not finish")
    first = (str(e).splitlines() or [""])[0][:300]
    return KoloError(f"internal error: {type(e).__name__}: {first}",
                     hint="run the command again with --debug for a traceback, and report it")
