"""Retrieval (global top-k over every document) and the prompt built from it. ``retrieve`` is what a server's
``POST /api/v1/rag/{name}/retrieve`` returns; ``prompt`` is what an answer is generated from."""

from __future__ import annotations

from typing import Any

from ..runfolder import DataRoot
from . import embed, store

PROMPT_HEAD = ("Based on the following context, answer the question. If the context does not contain the answer, "
               "say that you do not know.")


class Retriever:
    """One loaded index and its embedding model (load once, query many times: a server keeps one)."""

    def __init__(self, root: DataRoot, name: str):
        self.run = root.run(name, "NAME")
        self.store = store.load(self.run)
        meta = self.store.metadata
        ref = embed.resolve(str(meta.get("model")), root, expected_sha256=meta.get("sha256"))
        self.model, _sha = embed.load(ref)

    def retrieve(self, question: str, top_k: int) -> dict[str, list]:
        """``{documents, sources, scores}``: the ``top_k`` best chunks across all documents, best first."""
        index = self.store.index
        k = min(int(top_k), index.ntotal)
        if hasattr(index, "hnsw"):
            index.hnsw.efSearch = max(64, 2 * k)
        scores, ids = index.search(embed.encode(self.model, [question]), k)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        return {"documents": [self.store.documents[i] for i, _ in hits],
                "sources": [_public(self.store.sources[i]) for i, _ in hits],
                "scores": [round(s, 6) for _, s in hits]}


def _public(source: Any) -> dict:
    return {k: v for k, v in dict(source).items() if k != "sha256"}


def where(source: dict) -> str:
    """``docs/a.md:12``, ``faq.jsonl row 7``, ``guide.pdf page 3``."""
    f = source.get("file", "?")
    if "row" in source:
        return f"{f} row {source['row']}"
    if "page" in source:
        return f"{f} page {source['page']}"
    return f"{f}:{source.get('line', 1)}"


def prompt(question: str, hits: dict[str, list]) -> str:
    """The prompt an answer is generated from: the passages (with their sources), then the question."""
    parts = [f"[{n}] ({where(s)})\n{d}" for n, (d, s) in enumerate(zip(hits["documents"], hits["sources"]), 1)]
    return f"{PROMPT_HEAD}\n\nContext:\n" + "\n\n".join(parts) + f"\n\nQuestion: {question}\nAnswer:"
