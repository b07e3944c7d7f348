"""kolo_trainer.data.checks: every validation error with its line, duplicates, warnings, raise_if_invalid."""

from __future__ import annotations

import json

import pytest

from data_helpers import BAD, conv, jsonl, problems
from kolo_trainer import data
from kolo_trainer.errors import DataError


def test_every_bad_row_is_reported_with_its_line(tmp_path):
    p = jsonl(tmp_path, [row for row, _ in BAD])
    res = data.load(p, display_name="data/chats.jsonl")
    want = [f"data/chats.jsonl:{i}: {reason}" for i, (_, reason) in enumerate(BAD, 1) if reason]
    assert [str(x) for x in res.problems] == want
    assert res.rows_total == len(BAD) and res.rows_valid == 1


def test_all_reasons_of_one_row_are_given(tmp_path):
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": ""}]}
    assert problems(data.load(jsonl(tmp_path, [row]))) == [
        "1: message 2 (user): empty content; messages 1 and 2: two user turns in a row; "
        "no assistant turn (nothing to train on)"]


LONE = "lone \ud800 surrogate"


@pytest.mark.parametrize("row,reason", [
    ({"messages": conv(("q", "fine"), ("again", LONE))},
     "message 4 (assistant): contains a lone surrogate (invalid Unicode) at character 6"),
    ({"conversations": [{"from": "human", "value": "\udc00 first"}, {"from": "gpt", "value": "a"}]},
     "message 1 (user): contains a lone surrogate (invalid Unicode) at character 1"),
    ({"instruction": "i", "input": LONE, "output": "o"}, "'input' contains a lone surrogate (invalid Unicode)"),
    ({"prompt": LONE, "completion": "c"}, "'prompt' contains a lone surrogate (invalid Unicode)"),
    ({"text": LONE}, "'text' contains a lone surrogate (invalid Unicode)"),
])
def test_a_lone_surrogate_is_a_problem_in_every_format(tmp_path, row, reason):
    """JSON's "\\ud800" escape parses (json.loads accepts it) but is not Unicode: the tokenizer would crash on
    it after the check passed. Every format reports it, on its line, and the row is not kept."""
    good = {"messages": conv(("q", "a"))} if "messages" in row else None
    rows = [r for r in (good, row) if r is not None]
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))  # ensure_ascii: the escape, as users' files have it
    assert "\\ud" in p.read_text()
    for keep_rows in (True, False):
        res = data.load(p, keep_rows=keep_rows)
        assert len(res.problems) == 1 and res.problems[0].line == len(rows), problems(res)
        assert res.problems[0].reason.startswith(reason) and "fix or remove it" in res.problems[0].reason
        assert res.rows_valid == len(rows) - 1
        for r in res.rows:
            for m in r.messages:
                m["content"].encode("utf-8")  # what is kept is valid Unicode


def test_surrogate_pairs_are_fine(tmp_path):
    p = jsonl(tmp_path, [{"messages": conv(("emoji \U0001f642 and \u6771\u4eac", "ok"))}] * 1)
    assert "\\ud83d\\ude42" in p.read_text()  # the escaped pair
    res = data.load(p)
    assert not res.problems and res.rows[0].messages[0]["content"] == "emoji \U0001f642 and \u6771\u4eac"


def test_duplicates_are_warnings_naming_both_lines(tmp_path):
    a, b = {"messages": conv(("q", "a"))}, {"messages": conv(("q", "b"))}
    res = data.load(jsonl(tmp_path, [a, b, a, '{"messages": [{"role": "user", "content": "q"}, '
                                                 '{"role": "assistant",   "content": "a"}]}']))
    assert [str(w) for w in res.warnings] == [f"{res.file}:3: duplicate of line 1 (same conversation)",
                                              f"{res.file}:4: duplicate of line 1 (same conversation)"]
    assert res.rows_valid == 4 and not res.problems


def test_trailing_user_turn_is_a_warning(tmp_path):
    row = {"messages": conv(("q", "a")) + [{"role": "user", "content": "more?"}]}
    res = data.load(jsonl(tmp_path, [row]))
    assert not res.problems and "ends with a user turn" in str(res.warnings[0])


def test_raise_if_invalid_lists_everything_with_the_hint(tmp_path):
    p = jsonl(tmp_path, [row for row, _ in BAD])
    res = data.load(p, display_name="data/x.jsonl")
    with pytest.raises(DataError) as exc:
        data.raise_if_invalid(res, skip_invalid=False)
    assert len(exc.value.problems) == len(BAD) - 1 and "--skip-invalid" in exc.value.hint
    assert exc.value.problems[0] == "data/x.jsonl:2: " + BAD[1][1]
    report = data.raise_if_invalid(res, skip_invalid=True)
    assert report.count == len(BAD) - 1 and report.by_kind["invalid_json"] == 3
    assert report.dropped[0] == {"line": 2, "reason": BAD[1][1]}
    assert report.summary().startswith(f"dropped {len(BAD) - 1} invalid row(s) (")


def test_skip_invalid_with_nothing_valid_still_fails(tmp_path):
    res = data.load(jsonl(tmp_path, ["{bad", '{"messages": []}']))
    with pytest.raises(DataError, match="no valid rows"):
        data.raise_if_invalid(res, skip_invalid=True)


def test_valid_file_passes(tmp_path):
    res = data.load(jsonl(tmp_path, [{"messages": conv(("q", "a"))}]))
    assert data.raise_if_invalid(res, skip_invalid=False).count == 0
