"""Passages -> chunks that follow paragraph boundaries, sized in the embedding model's own tokens.

Consecutive paragraphs of one document are packed into a chunk while they fit in ``chunk_tokens``; a paragraph
longer than that is cut into windows of ``chunk_tokens`` that share ``overlap`` tokens, cut at the tokenizer's
character offsets so a chunk is always a slice of the original text (never a lower-cased wordpiece decode). Rows of
a dataset stay one chunk each (cut only when too long), so their source row stays exact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from .sources import Passage


@dataclass
class Chunk:
    text: str
    source: dict

    @property
    def hash(self) -> str:
        """What duplicates are recognised by: the chunk's text, whitespace-normalised."""
        return hashlib.sha256(" ".join(self.text.split()).encode("utf-8")).hexdigest()


def chunk(passages: list[Passage], tokenizer: Any, chunk_tokens: int, overlap: int) -> list[Chunk]:
    if not passages:
        return []
    enc = tokenizer([p.text for p in passages], add_special_tokens=False, return_offsets_mapping=True)
    out: list[Chunk] = []
    pending: list[Passage] = []
    pending_tokens = 0

    def flush() -> None:
        nonlocal pending, pending_tokens
        if pending:
            out.append(Chunk("\n\n".join(p.text for p in pending), dict(pending[0].source)))
        pending, pending_tokens = [], 0

    for p, offsets in zip(passages, enc["offset_mapping"]):
        n = len(offsets)
        mergeable = "row" not in p.source
        if n > chunk_tokens:
            flush()
            out += [Chunk(t, dict(p.source)) for t in _windows(p.text, offsets, chunk_tokens, overlap)]
            continue
        same_doc = pending and pending[0].source.get("file") == p.source.get("file")
        if not mergeable or not same_doc or pending_tokens + n > chunk_tokens:
            flush()
        pending.append(p)
        pending_tokens += n
        if not mergeable:
            flush()
    flush()
    return out


def _windows(text: str, offsets: list, size: int, overlap: int) -> list[str]:
    """Slices of ``text`` of ``size`` tokens, each starting ``size - overlap`` tokens after the previous one."""
    step = size - overlap
    out = []
    for start in range(0, len(offsets), step):
        window = offsets[start:start + size]
        out.append(text[window[0][0]:window[-1][1]].strip())
        if start + size >= len(offsets):
            break
    return [t for t in out if t]
