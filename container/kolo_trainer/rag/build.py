"""``build`` and ``add``: documents -> chunks -> vectors -> the index folder. Every input is read and checked before
the model loads, and nothing is written until every vector exists (then the folder is replaced in one rename)."""

from __future__ import annotations

from typing import Any

from .. import manifest, progress
from ..errors import DataError, OptionsError, OutputExistsError
from ..manifest import now
from ..runfolder import DataRoot, Run
from . import embed, store
from .chunking import Chunk, chunk
from .options import RagAddOptions, RagBuildOptions
from .sources import Passage, files_of, read


def passages_of(root: DataRoot, sources: list[str]) -> list[Passage]:
    """Every passage of every document the sources name; a document with no text at all is refused."""
    out: list[Passage] = []
    problems = []
    for rel, path in files_of(root, sources):
        found = read(rel, path)
        if not found:
            problems.append(f"{rel}:1: no text in this document")
        out += found
    if problems:
        raise DataError(problems, hint="remove empty documents or point --source elsewhere")
    return out


def _target(root: DataRoot, name: str) -> Run:
    run = root.run(name, "NAME")
    run.refuse_foreign()  # a folder of the user's own files is never written into
    return run


def _unique(chunks: list[Chunk], known: set[str]) -> tuple[list[Chunk], int]:
    """Chunks whose text is not already indexed (or earlier in this batch); and how many were skipped."""
    out, seen = [], set(known)
    for c in chunks:
        if c.hash not in seen:
            seen.add(c.hash)
            out.append(c)
    return out, len(chunks) - len(out)


def _embed(model: Any, chunks: list[Chunk]) -> Any:
    progress.emit("stage", stage="embed", status="start", detail=f"{len(chunks)} chunks")
    vecs = embed.encode(model, [c.text for c in chunks])
    progress.emit("stage", stage="embed", status="done")
    return vecs


def build(root: DataRoot, opts: RagBuildOptions) -> dict:
    """Build ``outputs/NAME/rag/`` from scratch; returns the summary (also the ``result`` event)."""
    if opts.problems():
        raise OptionsError(opts.problems())
    run = _target(root, opts.name)
    if store.folder(run).exists() and not opts.overwrite:
        raise OutputExistsError(f"{run.label}/{store.FOLDER} already holds a RAG index",
                                hint=f"add documents with `kolo rag add {opts.name} --source PATH`, or replace it "
                                     "with --overwrite")
    passages = passages_of(root, opts.source)
    ref = embed.resolve(opts.embedding_model, root)
    model, sha = embed.load(ref)
    size = min(opts.chunk_tokens, embed.max_tokens(model))
    chunks, skipped = _unique(chunk(passages, model.tokenizer, size, min(opts.overlap, size - 1)), set())
    vecs = _embed(model, chunks)
    dim = embed.dimension(model)
    index = store.new_index(dim, len(chunks))
    index.add(vecs)
    chunking = {"chunk_tokens": size, "chunk_tokens_asked": opts.chunk_tokens, "overlap": opts.overlap,
                "unit": "embedding model tokens", "boundaries": "paragraphs"}
    st = store.Store(
        config={"embedding_model": str(ref.path), "embedding_model_name": ref.name, "top_k": 3,
                "index_file": store.INDEX, "documents_file": store.DOCUMENTS, "sources_file": store.SOURCES,
                "metric": "inner_product", "normalized": True, "created": now(), "sources": list(opts.source)},
        metadata={"model": ref.name, "model_path": str(ref.path), "package": embed.PACKAGE if
                  ref.expected_sha256 == embed.DEFAULT_SHA256 else None, "weights": ref.weights.name,
                  "sha256": sha, "dimension": dim, "normalized": True, "max_seq_length": int(model.max_seq_length),
                  "chunking": chunking},
        documents=[c.text for c in chunks], sources=[{**c.source, "sha256": c.hash} for c in chunks], index=index)
    return _save(run, st, len(chunks), skipped)


def add(root: DataRoot, opts: RagAddOptions) -> dict:
    """Append new documents' chunks; old vectors are kept as they are (never embedded again), duplicates skipped."""
    run = root.run(opts.name, "NAME")
    st = store.load(run)
    passages = passages_of(root, opts.source)
    meta = st.metadata
    ref = embed.resolve(str(meta.get("model")), root, expected_sha256=meta.get("sha256"))
    model, _sha = embed.load(ref)
    ch = meta.get("chunking") or {}
    size = int(ch.get("chunk_tokens", embed.max_tokens(model)))
    chunks, skipped = _unique(chunk(passages, model.tokenizer, size, int(ch.get("overlap", 0))), st.hashes)
    if chunks:
        vecs = _embed(model, chunks)
        st.index = store.grown(st.index, st.index.ntotal + len(chunks))
        st.index.add(vecs)
        st.documents += [c.text for c in chunks]
        st.sources += [{**c.source, "sha256": c.hash} for c in chunks]
        st.config["sources"] = list(dict.fromkeys([*st.config.get("sources", []), *opts.source]))
    return _save(run, st, len(chunks), skipped, write=bool(chunks))


def _save(run: Run, st: store.Store, added: int, skipped: int, write: bool = True) -> dict:
    if write:  # an add with nothing new leaves the index untouched
        with run.lock():
            store.write(run, st)
            if not run.is_run():
                # An index on its own still makes the folder kolo's: kolo list shows it, kolo delete removes it.
                manifest.update(run.path, kind="rag", status="finished")
    summary = {"index": f"{run.label}/{store.FOLDER}", "chunks": len(st.documents), "added": added,
               "duplicates_skipped": skipped, "index_type": st.config["index_type"]}
    progress.emit("result", stage="rag", **summary)
    return summary
