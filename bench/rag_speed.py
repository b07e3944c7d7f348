"""RAG speed: (1) embedding throughput of `kolo rag build` vs a bare ``SentenceTransformer.encode`` of the same
chunks, (2) query latency p50/p99 over a 100k-chunk index after load (kolo's ``Retriever.retrieve``: encode the
question + FAISS search), flat vs HNSW, and (3) the peak RSS of a process holding a 100k-chunk index + the model.

(1) Both sides are a fresh child process (same interpreter start and imports): `python -m kolo_trainer rag-build`
over N synthetic documents, then a bare script that loads the same model folder and encodes the very texts kolo
wrote to documents.json. Throughput = chunks / wall-s of the whole process, and also of the encode call alone; the
two are alternated ``--repeats`` times and their medians compared (the load of a shared machine drifts).
(2)/(3) Embedding 100k real chunks takes too long on this machine, so the 100k index holds random unit vectors and
synthetic texts written by kolo's own ``store.write``; the questions are real and go through the real model.
Latency does not depend on what the vectors mean, only on their number and dimension.

    .venv/bin/python bench/rag_speed.py [--docs 600] [--big 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PY, clean_env, header, mib, run_measured  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORDS = ("policy leave laptop office travel budget report meeting garden river mountain engine planet market "
         "history music recipe network server storage window language theory bridge harbour forest").split()

BARE = r'''
import json, sys, time
from sentence_transformers import SentenceTransformer
docs = json.load(open(sys.argv[2]))
model = SentenceTransformer(sys.argv[1], device=None)
t = time.perf_counter()
model.encode(docs, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
print(json.dumps({"encode_s": time.perf_counter() - t, "chunks": len(docs)}))
'''

QUERY = r'''
import json, sys, time
from kolo_trainer.rag.retrieve import Retriever
from kolo_trainer.runfolder import DataRoot
qs = [json.loads(l)["question"] for l in open(sys.argv[3])]
r = Retriever(DataRoot(sys.argv[1]), sys.argv[2])
r.retrieve(qs[0], 5)  # warm-up
lat, cpu, search, default_threads = [], [], [], []
import numpy as np
import torch
from kolo_trainer.rag import embed
for i in range(200):
    q = qs[i % len(qs)]
    c, t = time.process_time(), time.perf_counter(); r.retrieve(q, 5)
    lat.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    v = embed.encode_query(r.model, q)
    t = time.perf_counter(); r.store.index.search(v, 5); search.append(time.perf_counter() - t)
    if i % 4 == 0:  # the encode as it was before encode_query: torch's default thread count
        t = time.perf_counter(); embed.encode(r.model, [q]); default_threads.append(time.perf_counter() - t)
p = lambda xs, q: float(np.percentile(np.array(xs) * 1000, q))
print(json.dumps({"p50_ms": p(lat, 50), "p99_ms": p(lat, 99), "cpu_p50_ms": p(cpu, 50), "cpu_p99_ms": p(cpu, 99),
                  "search_p50_ms": p(search, 50),
                  "search_p99_ms": p(search, 99), "type": type(r.store.index).__name__,
                  "default_threads_encode_p50_ms": p(default_threads, 50),
                  "default_threads_encode_p99_ms": p(default_threads, 99), "torch_threads": torch.get_num_threads()}))
'''


def synthetic_docs(root: Path, n: int) -> None:
    import random

    rnd = random.Random(0)
    d = root / "data" / "docs"
    d.mkdir(parents=True)
    for i in range(n):
        paras = ["Document %d, part %d: " % (i, j) + " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(40, 120)))
                 for j in range(rnd.randint(1, 3))]
        (d / f"doc{i:05d}.txt").write_text("\n\n".join(paras) + "\n")


def throughput(n_docs: int, repeats: int) -> dict:
    """kolo's build and the bare encode, alternated ``repeats`` times (a shared machine's load drifts over minutes;
    alternating spreads it over both sides); the medians are compared, and every pair is kept."""
    import statistics

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sub in ("models", "outputs"):
            (root / sub).mkdir()
        synthetic_docs(root, n_docs)
        env = clean_env(HF_HUB_OFFLINE="1")
        kolo, bare, pairs = [], [], []
        for i in range(repeats):
            k = run_measured([PY, "-m", "kolo_trainer", "rag-build", "--name=t", "--source=data/docs",
                              "--data-root", str(root), "--overwrite"], env=env)
            assert k.rc == 0, k.stderr[-2000:]
            rag = root / "outputs" / "t" / "rag"
            model = json.loads((rag / "rag_config.json").read_text())["embedding_model"]
            b = run_measured([PY, "-c", BARE, model, str(rag / "documents.json")], env=env)
            assert b.rc == 0, b.stderr[-2000:]
            kolo.append(k)
            bare.append((b, json.loads(b.stdout.strip().splitlines()[-1])))
            pairs.append((round(k.wall_s, 1), round(b.wall_s, 1), round(os.getloadavg()[0], 1)))
        n = bare[0][1]["chunks"]
        kw, bw = statistics.median(k.wall_s for k in kolo), statistics.median(b.wall_s for b, _ in bare)
        pair_ratio = statistics.median(b / k for k, b, _ in pairs)  # the two of a pair ran back to back
        return {"chunks": n, "kolo_wall_s": kw, "bare_wall_s": bw, "pair_ratio": pair_ratio,
                "bare_encode_s": statistics.median(x["encode_s"] for _, x in bare),
                "kolo_chunks_per_s": n / kw, "bare_chunks_per_s": n / bw, "ratio": bw / kw, "pairs": pairs,
                "kolo_rss": max(k.peak_rss_bytes for k in kolo), "bare_rss": max(b.peak_rss_bytes for b, _ in bare)}


def big_index(root: Path, n: int, hnsw: bool) -> None:
    import numpy as np

    from kolo_trainer.manifest import now
    from kolo_trainer.rag import embed, store
    from kolo_trainer.runfolder import DataRoot

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, 384)).astype("float32")
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = store.new_index(384, store.HNSW_ABOVE + 1 if hnsw else 1)  # flat: as kolo builds it below the threshold
    index.add(vecs)
    path = embed.default_model_path()
    st = store.Store(config={"embedding_model": str(path), "created": now()},
                     metadata={"model": "all-MiniLM-L6-v2", "sha256": embed.DEFAULT_SHA256, "dimension": 384},
                     documents=[f"synthetic chunk {i} " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(60))
                                for i in range(n)],
                     sources=[{"file": "data/x.txt", "line": i + 1, "sha256": str(i)} for i in range(n)], index=index)
    for sub in ("data", "models", "outputs"):
        (root / sub).mkdir(exist_ok=True)
    store.write(DataRoot(root).run("big"), st)


def latency(n: int, hnsw: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        big_index(Path(tmp), n, hnsw)
        q = run_measured([PY, "-c", QUERY, tmp, "big", str(REPO / "tests" / "fixtures" / "rag" / "questions.jsonl")],
                         env=clean_env(HF_HUB_OFFLINE="1"))
        assert q.rc == 0, q.stderr[-2000:]
        return {**json.loads(q.stdout.strip().splitlines()[-1]), "rss": q.peak_rss_bytes, "n": n}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3, help="build/bare pairs, alternated (medians compared)")
    ap.add_argument("--only", choices=("build", "query"), help="run one half")
    a = ap.parse_args(argv)
    print(header("bench/rag_speed.py"), flush=True)
    if a.only != "query":
        build_figures(a)
    if a.only != "build":
        query_figures(a)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def build_figures(a: argparse.Namespace) -> None:
    t = throughput(a.docs, a.repeats)
    print(f"build: {t['chunks']} chunks; medians of {a.repeats}: kolo rag-build {t['kolo_wall_s']:.1f} s "
          f"({t['kolo_chunks_per_s']:.1f} chunks/s, peak RSS {mib(t['kolo_rss'])}); bare encode process "
          f"{t['bare_wall_s']:.1f} s ({t['bare_chunks_per_s']:.1f} chunks/s, encode call alone "
          f"{t['bare_encode_s']:.1f} s, peak RSS {mib(t['bare_rss'])}); kolo/bare throughput {t['ratio']:.2f}x "
          f"(ratio of the medians), {t['pair_ratio']:.2f}x (median of the pairs' ratios); "
          f"pairs (kolo s, bare s, load): {t['pairs']}", flush=True)


def query_figures(a: argparse.Namespace) -> None:
    for hnsw in (False, True):
        r = latency(a.big, hnsw)
        print(f"query, {r['n']} chunks, {r['type']}: retrieve p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms "
              f"(process CPU time p50 {r['cpu_p50_ms']:.1f} ms, p99 {r['cpu_p99_ms']:.1f} ms) "
              f"(FAISS search alone p50 {r['search_p50_ms']:.2f} ms, p99 {r['search_p99_ms']:.2f} ms; the same "
              f"encode on torch's default {r['torch_threads']} threads p50 {r['default_threads_encode_p50_ms']:.1f} "
              f"ms, p99 {r['default_threads_encode_p99_ms']:.1f} ms); peak RSS (index + documents + model) "
              f"{mib(r['rss'])}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
