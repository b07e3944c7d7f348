"""kolo_trainer.data.formats: every input format, detection, and the one table every format list comes from."""

from __future__ import annotations

import csv
import json
import typing
from pathlib import Path

import pytest

from data_helpers import conv, jsonl, problems
from kolo_trainer import data, options
from kolo_trainer.data import formats
from kolo_trainer.data.results import Bad
from kolo_trainer.errors import OptionsError


def test_messages_multi_turn(tmp_path):
    rows = [{"messages": conv(("hi", "hello"), ("how?", "fine"), system="S")}, {"messages": conv(("a", "b"))}]
    res = data.load(jsonl(tmp_path, rows))
    assert res.format == "messages" and not res.problems and not res.warnings
    assert [r.messages for r in res.rows] == [rows[0]["messages"], rows[1]["messages"]]
    assert [r.line for r in res.rows] == [1, 2] and res.rows_total == res.rows_valid == 2


def test_sharegpt_from_value_and_role_aliases(tmp_path):
    row = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"},
                             {"from": "gpt", "value": "a"}, {"from": "User", "value": "q2"},
                             {"from": "assistant", "value": "a2"}]}
    res = data.load(jsonl(tmp_path, [row]))
    assert res.format == "sharegpt" and not res.problems
    assert res.rows[0].messages == [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"},
                                    {"role": "assistant", "content": "a2"}]


def test_alpaca_with_input_and_system(tmp_path):
    rows = [{"instruction": "Translate", "input": "chat", "output": "cat", "system": "S"},
            {"instruction": "Say hi", "input": "", "output": "hi"}]
    res = data.load(jsonl(tmp_path, rows))
    assert res.format == "alpaca" and not res.problems
    assert res.rows[0].messages == [{"role": "system", "content": "S"},
                                    {"role": "user", "content": "Translate\n\nchat"},
                                    {"role": "assistant", "content": "cat"}]
    assert res.rows[1].messages == [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]


def test_prompt_completion_strings_and_conversational(tmp_path):
    rows = [{"prompt": "2+2?", "completion": "4"},
            {"prompt": [{"role": "user", "content": "3+3?"}], "completion": [{"role": "assistant", "content": "6"}]}]
    res = data.load(jsonl(tmp_path, rows))
    assert res.format == "prompt_completion" and not res.problems
    assert res.rows[1].messages == [{"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]


def test_text_rows_become_one_text_message(tmp_path):
    res = data.load(jsonl(tmp_path, [{"text": "Once upon a time."}, {"text": "  "}]))
    assert res.format == "text"
    assert res.rows[0].messages == [{"role": "text", "content": "Once upon a time."}]
    assert problems(res) == ["2: 'text' is empty"]


def test_json_list_with_line_numbers(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[\n  {"messages": %s},\n\n  {"messages": [{"role": "user", "content": "x"}]},\n  42\n]\n'
                 % json.dumps(conv(("q", "a"))))
    res = data.load(p)
    assert [r.line for r in res.rows] == [2]
    assert problems(res) == ["4: no assistant turn (nothing to train on)", "5: a row must be a JSON object, got a number"]


def test_json_that_is_really_jsonl_or_a_single_object(tmp_path):
    p = jsonl(tmp_path, [{"messages": conv(("q", "a"))}, {"messages": conv(("q2", "a2"))}], name="d.json")
    assert data.load(p).rows_valid == 2
    p.write_text(json.dumps({"data": [{"messages": conv(("q", "a"))}]}))
    assert "must hold a list of rows" in problems(data.load(p))[0]


def test_csv_columns_and_multiline_cells(tmp_path):
    p = tmp_path / "d.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "input", "output"])
        w.writerow(["Write a haiku", "", "line one\nline two\nline three"])
        w.writerow(["Empty output", "", ""])
    res = data.load(p)
    assert res.format == "alpaca" and res.rows[0].messages[1]["content"] == "line one\nline two\nline three"
    assert problems(res) == ["5: 'output' is empty"]  # the record starts on line 5 (the cell above spans 2-4)
    q = tmp_path / "m.csv"
    q.write_text('messages\n"[{""role"": ""user"", ""content"": ""q""}, {""role"": ""assistant"", ""content"": ""a""}]"\n')
    assert data.load(q).rows[0].messages == conv(("q", "a"))


def test_format_override_and_wrong_rows(tmp_path):
    p = jsonl(tmp_path, [{"instruction": "i", "output": "o"}, {"messages": conv(("q", "a"))}])
    res = data.load(p, fmt="alpaca")
    assert res.format == "alpaca" and problems(res)[0].startswith("2: row is not in alpaca format (keys: messages)")


def test_unknown_format_is_a_bad_option_naming_the_choices(tmp_path):
    p = jsonl(tmp_path, [{"messages": conv(("q", "a"))}])
    with pytest.raises(OptionsError) as exc:
        data.load(p, fmt="yaml")
    assert exc.value.exit_code == 2 and "unknown data format 'yaml'" in exc.value.message
    assert "auto, messages, sharegpt, alpaca, prompt_completion, text" in exc.value.message
    assert data.check_format("text") == "text"


def test_unrecognised_rows(tmp_path):
    res = data.load(jsonl(tmp_path, [{"question": "q", "answer": "a"}]))
    assert problems(res) == ["1: unrecognised row (keys: question, answer); expected messages (OpenAI), "
                             "conversations (ShareGPT), instruction/output (Alpaca), prompt/completion or text, "
                             "or pass --format"]


@pytest.mark.parametrize("row,fmt", [
    ({"messages": conv(("q", "a"))}, "messages"),
    ({"messages": [{"from": "human", "value": "q"}]}, "sharegpt"),  # ShareGPT's from/value under "messages"
    ({"conversations": [], "instruction": "i", "output": "o"}, "sharegpt"),  # the table's order decides
    ({"messages": conv(("q", "a")), "conversations": []}, "messages"),
    ({"instruction": "i", "output": "o", "text": "t"}, "alpaca"),
    ({"prompt": "p", "completion": "c"}, "prompt_completion"),
    ({"text": "t"}, "text"),
    ({"instruction": "only"}, None),
    (["not", "an object"], None),
])
def test_detect_follows_the_table_order(row, fmt):
    assert data.detect(row) == fmt


def test_every_format_list_comes_from_the_one_table():
    names = tuple(f.name for f in formats.TABLE)
    assert data.FORMATS == ("auto", *names)
    assert options.DATA_FORMATS == data.FORMATS
    # The option model's Literal must offer exactly the same choices (a second list would drift).
    assert typing.get_args(options.TrainOptions.model_fields["data_format"].annotation) == data.FORMATS
    assert all(f.name in formats.help_text() and f.fields in formats.FIELD_HINT for f in formats.TABLE)


def test_no_format_is_named_outside_the_table():
    """Adding a format is one entry in formats.TABLE: no other module of the package (nor the host's data
    verbs) spells a format's name, so none needs a change."""
    pkg = Path(formats.__file__).parent
    others = [p for p in pkg.glob("*.py") if p.name != "formats.py"]
    others.append(Path(__file__).parents[3] / "host" / "kolo_cli" / "commands" / "data.py")
    # "messages" and "text" are also the names of fields in rows (and of OpenAI's text content parts)
    only_formats = [f.name for f in formats.TABLE if f.name not in ("messages", "text")]
    assert len(only_formats) >= 3
    for name in only_formats:
        for p in others:
            text = p.read_text(encoding="utf-8")
            assert f'"{name}"' not in text and f"'{name}'" not in text, f"{p.name} names format {name!r}"


def test_row_messages_raises_bad_with_the_reason():
    with pytest.raises(Bad, match="missing 'output'|row is not in alpaca format"):
        formats.row_messages({"instruction": "i"}, "alpaca")
