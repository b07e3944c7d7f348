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
        self.root, self.run = root, root.run(name, "NAME")
        self.stamp = self._stamp()
        self.store = store.load(self.run)
        self.model = self._model()

    def _model(self) -> Any:
        meta = self.store.metadata
        ref = embed.resolve(str(meta.get("model")), self.root, expected_sha256=meta.get("sha256"))
        return embed.load(ref)[0]

    def _stamp(self) -> tuple[int, int] | None:
        """Identity of the index on disk: every write renames a new folder in, so its config is a new file."""
        try:
            st = (store.folder(self.run) / store.CONFIG).stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def refresh(self) -> bool:
        """Reload the index if it changed on disk since it was loaded (``rag add``, a rebuild, a delete: then the
        load's own clear error); the embedding model is loaded again only when the index names other weights."""
        stamp = self._stamp()
        if stamp is not None and stamp == self.stamp:
            return False
        old = self.store.metadata
        self.store, self.stamp = store.load(self.run), stamp
        if (old.get("model"), old.get("sha256")) != (self.store.metadata.get("model"),
                                                     self.store.metadata.get("sha256")):
            self.model = self._model()
        return True

    def retrieve(self, question: str, top_k: int) -> dict[str, list]:
        """``{documents, sources, scores}``: the ``top_k`` best chunks across all documents, best first."""
        index = self.store.index
        k = min(int(top_k), index.ntotal)
        if hasattr(index, "hnsw"):
            index.hnsw.efSearch = max(64, 2 * k)
        scores, ids = search(index, embed.encode_query(self.model, question), k)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        return {"documents": [self.store.documents[i] for i, _ in hits],
                "sources": [_public(self.store.sources[i]) for i, _ in hits],
                "scores": [round(s, 6) for _, s in hits]}


def search(index: Any, vectors: Any, k: int) -> tuple[Any, Any]:
    """``index.search`` on one OpenMP thread: one question is too little work to split, and FAISS's threads meet at
    a barrier that stalls on any thread the OS has descheduled (as torch's do, see ``embed.encode_query``). Measured
    on the shared 2-core machine at load ~4, flat search of one question: 20k chunks p50 10.8 ms on FAISS's default
    2 threads vs 1.4 ms on one; 100k chunks 40.3 vs 10.7 ms."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(vectors, k)
    finally:
        faiss.omp_set_num_threads(before)


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
