"""RAG retrieval quality: recall@1/@3/@5 of kolo's default (all-MiniLM-L6-v2 + FAISS, as `kolo rag build` makes it)
next to a BM25 baseline (rank-bm25's BM25Okapi) over the SAME chunks, on the labelled set in tests/fixtures/rag/
(questions.jsonl: each question with the document that answers it).

A hit at k means one of the first k chunks comes from the expected document. The index is built by kolo's own code
(``kolo_trainer.rag.build.build``) into a temporary data root; BM25 reads that index's documents.json, so both
rank exactly the same chunks.

    .venv/bin/python bench/rag_quality.py [--json]
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "rag"
KS = (1, 3, 5)


def labelled() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "questions.jsonl").read_text().splitlines() if line.strip()]


def build_index(root: Path) -> None:
    from kolo_trainer.rag.build import build
    from kolo_trainer.rag.options import RagBuildOptions
    from kolo_trainer.runfolder import DataRoot

    for sub in ("data", "models", "outputs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copytree(FIXTURES / "docs", root / "data" / "docs")
    build(DataRoot(root), RagBuildOptions(name="bench", source=["data/docs"]))


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def recall(ranked_files: list[list[str]], expected: list[str]) -> dict[int, float]:
    return {k: sum(e in r[:k] for r, e in zip(ranked_files, expected)) / len(expected) for k in KS}


def main(argv: list[str]) -> int:
    from rank_bm25 import BM25Okapi

    from kolo_trainer.rag.retrieve import Retriever
    from kolo_trainer.runfolder import DataRoot

    qs = labelled()
    expected = [f"data/{q['source']}" for q in qs]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_index(root)
        r = Retriever(DataRoot(root), "bench")
        kolo = [[s["file"] for s in r.retrieve(q["question"], max(KS))["sources"]] for q in qs]
        docs, sources = r.store.documents, r.store.sources
        bm25 = BM25Okapi([_tokens(d) for d in docs])
        base = []
        for q in qs:
            scores = bm25.get_scores(_tokens(q["question"]))
            order = sorted(range(len(docs)), key=lambda i: -scores[i])[:max(KS)]
            base.append([sources[i]["file"] for i in order])
    res = {"questions": len(qs), "documents": len(set(expected)), "chunks": len(docs),
           "kolo": recall(kolo, expected), "bm25": recall(base, expected)}
    if "--json" in argv:
        print(json.dumps(res))
        return 0
    print(f"{res['questions']} questions over {res['documents']} documents ({res['chunks']} chunks)")
    print("| | recall@1 | recall@3 | recall@5 |\n|---|---|---|---|")
    for name in ("kolo", "bm25"):
        print(f"| {name} | " + " | ".join(f"{res[name][k]:.3f}" for k in KS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
