"""``python -m kolo_trainer rag-build | rag-add | rag-query``: the trainer side of ``kolo rag``.

Options come from :mod:`.options` through ``spec`` like every verb. The hub is forced offline first. ``rag-query``
emits its retrieval as one ``result`` event (``stage: "rag-query"``: question, prompt, documents, sources, scores),
which the host reads to print ``--json`` or to ask Ollama; with ``--run`` it answers here with the run's GGUF through
``kolo_trainer.export.chat.Session`` (the one llama.cpp chat).
"""

from __future__ import annotations

import sys

from .. import progress, spec
from ..runfolder import DataRoot
from . import embed
from .options import RagAddOptions, RagBuildOptions, RagQueryOptions


def _parse(model: type, argv: list[str], verb: str):
    embed.force_offline()
    root_s, rest = spec.pop_data_root(list(argv))
    opts, _ = spec.parse_argv(model, rest, prog=f"python -m kolo_trainer {verb}")
    return DataRoot(root_s).check(), opts


def _said(summary: dict) -> None:
    print(f"{summary['index']}: {summary['chunks']} chunks ({summary['added']} added, "
          f"{summary['duplicates_skipped']} duplicate(s) skipped, {summary['index_type']} index)")


def build_main(argv: list[str]) -> int:
    from .build import build

    root, opts = _parse(RagBuildOptions, argv, "rag-build")
    _said(build(root, opts))
    return 0


def add_main(argv: list[str]) -> int:
    from .build import add

    root, opts = _parse(RagAddOptions, argv, "rag-add")
    _said(add(root, opts))
    return 0


def query_main(argv: list[str]) -> int:
    from .retrieve import Retriever, prompt, where

    root, opts = _parse(RagQueryOptions, argv, "rag-query")
    assert isinstance(opts, RagQueryOptions)
    answer_with = None
    if opts.run is not None and not opts.retrieve_only:
        from ..export.chat import exported

        answer_with = exported(root.run(opts.run, "--run"), None)  # checked before any model loads
    hits = Retriever(root, opts.name).retrieve(opts.question, opts.top_k)
    text = prompt(opts.question, hits)
    progress.emit("result", stage="rag-query", question=opts.question, prompt=text, **hits)
    if answer_with is None:
        for n, (d, s, sc) in enumerate(zip(hits["documents"], hits["sources"], hits["scores"]), 1):
            print(f"[{n}] {where(s)}  score {sc:.3f}\n{d}\n")
        return 0
    from ..export.chat import Session

    Session(answer_with, opts.temperature).ask(text, opts.max_tokens, out=sys.stdout)
    print()
    return 0
