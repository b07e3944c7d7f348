"""The index on disk: ``outputs/NAME/rag/`` with the layout users know.

=========================  ==========================================================================================
``rag_config.json``        ``embedding_model`` (a value ``SentenceTransformer(...)`` loads offline here: the model
                           folder), ``top_k``, the file names below, chunking, index type, counts
``vector_index.faiss``     FAISS, inner product on unit vectors (cosine): flat, or HNSW above :data:`HNSW_ABOVE`
``documents.json``         the chunk texts, a list of strings, in index order
``chunk_sources.json``     per chunk: ``{"file", "line"}`` / ``{"file", "row"}`` / ``{"file", "page", "line"}`` and
                           the chunk's ``sha256`` (duplicates are skipped by it)
``embeddings_metadata.json``  model name, path, weights sha256, dimension, normalisation, chunking
=========================  ==========================================================================================

The folder is written whole under a temporary name and renamed into place (``manifest.atomic_path``): a crash or a
bad input leaves the previous index, never half of a new one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import KoloError
from ..manifest import atomic_path, now
from ..runfolder import Run

FOLDER = "rag"
CONFIG, INDEX, DOCUMENTS, SOURCES, METADATA = ("rag_config.json", "vector_index.faiss", "documents.json",
                                               "chunk_sources.json", "embeddings_metadata.json")
FILES = (CONFIG, INDEX, DOCUMENTS, SOURCES, METADATA)
#: Above this many chunks the index is HNSW (approximate) instead of flat (exact). bench/rag_speed.py measured, on
#: the shared 2-core machine under load ~6: flat search over 100k x 384 p50 86 ms, HNSW (M=32) p50 1.1 ms. Flat cost
#: grows linearly, so it stays under the 20 ms goal up to about 20k chunks there; above that, HNSW.
HNSW_ABOVE = 20_000
HNSW_M = 32


class DamagedIndex(KoloError):
    exit_code = 1


@dataclass
class Store:
    config: dict
    metadata: dict
    documents: list[str]
    sources: list[dict]
    index: Any  # faiss.Index

    @property
    def hashes(self) -> set[str]:
        return {s.get("sha256") for s in self.sources}


def folder(run: Run) -> Path:
    return run.path / FOLDER


def new_index(dim: int, n: int) -> Any:
    import faiss

    if n > HNSW_ABOVE:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        return index
    return faiss.IndexFlatIP(dim)


def grown(index: Any, n_total: int) -> Any:
    """``index``, or the same vectors moved into an HNSW index once ``n_total`` passes :data:`HNSW_ABOVE` (the
    stored vectors are reused, nothing is embedded again)."""
    import faiss

    if n_total <= HNSW_ABOVE or not isinstance(index, faiss.IndexFlat):
        return index
    new = new_index(index.d, n_total)
    new.add(index.reconstruct_n(0, index.ntotal))
    return new


def _damaged(run: Run, name: str, why: str) -> DamagedIndex:
    return DamagedIndex(f"{run.label}/{FOLDER}/{name} is damaged ({why})",
                        hint=f"rebuild the index with `kolo rag build {run.name} --source ... --overwrite`")


def _json(run: Run, name: str, kind: type) -> Any:
    p = folder(run) / name
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _damaged(run, name, "missing") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise _damaged(run, name, f"not JSON: {str(e)[:120]}") from None
    if not isinstance(data, kind):
        raise _damaged(run, name, f"not a JSON {'object' if kind is dict else 'list'}")
    return data


def require(run: Run) -> None:
    """An index is there, or a clear 'no index' (exit 2) naming the command that builds one."""
    from ..errors import NameError_

    run.check_kind()
    if not folder(run).is_dir():
        raise NameError_(f"no RAG index {run.name!r} (no {run.label}/{FOLDER}/)",
                         hint=f"build it with `kolo rag build {run.name} --source PATH`")


def load(run: Run) -> Store:
    """Every file of the index, checked against each other: a damaged one is named, never a traceback."""
    import faiss

    require(run)
    config, metadata = _json(run, CONFIG, dict), _json(run, METADATA, dict)
    documents, sources = _json(run, DOCUMENTS, list), _json(run, SOURCES, list)
    p = folder(run) / INDEX
    if not p.is_file():
        raise _damaged(run, INDEX, "missing")
    try:
        index = faiss.read_index(str(p))
    except RuntimeError as e:
        raise _damaged(run, INDEX, f"FAISS cannot read it: {str(e).strip().splitlines()[-1][:160]}") from None
    n = index.ntotal
    if not (n == len(documents) == len(sources)) or index.d != metadata.get("dimension"):
        raise _damaged(run, INDEX, f"{n} vectors of dimension {index.d}, {len(documents)} documents, "
                       f"{len(sources)} sources, metadata dimension {metadata.get('dimension')}")
    if not all(isinstance(d, str) for d in documents):
        raise _damaged(run, DOCUMENTS, "not a list of strings")
    return Store(config, metadata, documents, sources, index)


def write(run: Run, store: Store) -> None:
    """Write the whole folder under a temporary name, then rename it into place."""
    import faiss

    store.config.update(updated=now(), chunks=len(store.documents),
                        index_type="hnsw" if isinstance(store.index, faiss.IndexHNSW) else "flat")
    with atomic_path(folder(run)) as tmp:
        tmp.mkdir()
        faiss.write_index(store.index, str(tmp / INDEX))
        for name, data in ((DOCUMENTS, store.documents), (SOURCES, store.sources), (METADATA, store.metadata),
                           (CONFIG, store.config)):
            with open(tmp / name, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False, indent=None if name in (DOCUMENTS, SOURCES) else 2)
                f.write("\n")
