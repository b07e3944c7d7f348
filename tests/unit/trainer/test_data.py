"""kolo_trainer.data: every input format, every validation error with its line, stats, and the check verb."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kolo_trainer import data
from kolo_trainer.errors import DataError


def conv(*pairs, system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    for u, a in pairs:
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return msgs


def jsonl(tmp_path: Path, rows, name="d.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return p


def problems(res) -> list[str]:
    return [f"{p.line}: {p.reason}" for p in res.problems]


# ---------------------------------------------------------------------------------------------- formats

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
    with pytest.raises(DataError, match="unknown data format"):
        data.load(p, fmt="yaml")


def test_unrecognised_rows(tmp_path):
    res = data.load(jsonl(tmp_path, [{"question": "q", "answer": "a"}]))
    assert problems(res) == ["1: unrecognised row (keys: question, answer); expected messages (OpenAI), "
                             "conversations (ShareGPT), instruction/output (Alpaca), prompt/completion or text, "
                             "or pass --format"]


# ---------------------------------------------------------------------------------------------- validation

BAD = [
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}', None),
    ("{not json", "invalid JSON (Expecting property name enclosed in double quotes at column 2)"),
    ('["a list"]', "a row must be a JSON object, got a list"),
    ('{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
     "message 1: unknown role 'robot' (use system, user or assistant)"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, '
     '{"role": "assistant", "content": "c"}]}', "messages 1 and 2: two user turns in a row"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, '
     '{"role": "assistant", "content": "c"}]}', "messages 2 and 3: two assistant turns in a row"),
    ('{"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "b"}]}',
     "message 1 (user): empty content"),
    ('{"messages": [{"role": "user", "content": "a"}]}', "no assistant turn (nothing to train on)"),
    ('{"messages": [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "b"}]}',
     "message 1 (user): only text content parts are supported, got a string"),
    ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "b"}]}',
     "message 1 (user): content must be a string, got a number"),
    ('{"messages": [{"role": 1, "content": "a"}]}', "message 1: role must be a string, got a number"),
    ('{"messages": "hello"}', "'messages' must be a list of messages, got a string"),
    ('{"messages": []}', "'messages' is empty"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, '
     '{"role": "assistant", "content": "b"}]}', "message 2: a system message must come first (and only once)"),
    ('{"messages": [{"role": "assistant", "content": "b"}]}', "message 1: assistant turn before any user turn"),
    ('{"messages": [{"content": "a"}]}', "message 1 has no 'role' (or 'from')"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]} x',
     "invalid JSON (Extra data at column 89)"),
    ('{"messages": [{"role": "user", "content": "a"}', "invalid JSON (Expecting ',' delimiter at column 47)"),
]


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


def test_blank_lines_crlf_and_bom(tmp_path):
    p = tmp_path / "d.jsonl"
    line = json.dumps({"messages": conv(("q", "a"))})
    p.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\r\n\r\n   \n" + line.replace('"q"', '"q2"').encode())
    res = data.load(p)
    assert not res.problems and [r.line for r in res.rows] == [1, 4]


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


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file (no rows)"),
    (b"\n\n  \n", "empty file (no rows)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file (contains NUL bytes)"),
])
def test_unusable_files(tmp_path, content, reason):
    p = tmp_path / "d.jsonl"
    p.write_bytes(content)
    res = data.load(p)
    assert len(res.problems) == 1 and res.problems[0].reason.startswith(reason) and res.problems[0].kind == "file"
    with pytest.raises(DataError, match="problem"):
        data.raise_if_invalid(res, skip_invalid=True)  # nothing to skip to


def test_missing_file_and_folder(tmp_path):
    assert problems(data.load(tmp_path / "nope.jsonl")) == ["1: file not found"]
    assert problems(data.load(tmp_path)) == ["1: is a folder, not a data file"]


def test_undecodable_line_is_reported_not_raised(tmp_path):
    p = tmp_path / "d.jsonl"
    good = json.dumps({"messages": conv(("q", "a"))}).encode()
    p.write_bytes(good + b"\n" + b'{"messages": "caf\xe9"}\n' + good.replace(b'"a"', b'"b"') + b"\n")
    res = data.load(p)
    assert problems(res) == ["2: not valid UTF-8 text (byte 0xe9 at column 18); save the file as UTF-8"]
    assert res.rows_valid == 2


def test_latin1_json_file(tmp_path):
    p = tmp_path / "d.json"
    p.write_bytes(b'[\n{"text": "caf\xe9"}]')
    assert problems(data.load(p)) == ["2: not valid UTF-8 text; save the file as UTF-8"]


def test_huge_single_line_is_refused_without_loading_it(tmp_path):
    """A 50 MB line: reported as too long, the next line still read, memory stays bounded."""
    import tracemalloc

    p = tmp_path / "d.jsonl"
    good = json.dumps({"messages": conv(("q", "a"))}).encode()
    with open(p, "wb") as f:
        f.write(good + b"\n" + b'{"text": "' + b"x" * (50 * 1024 * 1024) + b'"}\n' + good.replace(b'"a"', b'"b"') + b"\n")
    tracemalloc.start()
    res = data.load(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert problems(res) == ["2: line is longer than 16 MiB; one row may not be that large"]
    assert [r.line for r in res.rows] == [1, 3]
    assert peak < 45 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"


# ---------------------------------------------------------------------------------------------- raise_if_invalid

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


# ---------------------------------------------------------------------------------------------- stats

def test_stats(tmp_path):
    rows = [{"messages": conv(("one two", "three four five"), system="Be brief.")},
            {"messages": conv(("a", "b"), ("c", "d e"), system="Be brief.")}]
    res = data.load(jsonl(tmp_path, rows))
    st = data.stats(res.rows)
    assert st["rows"] == 2 and st["turns"] == 6
    assert st["roles"] == {"assistant": 3, "system": 2, "user": 3}
    assert st["shared_system_prompt"] == "Be brief." and st["rows_with_system"] == 2
    assert st["words"] == {"min": 7, "mean": 7.0, "max": 7, "p50": 7, "p95": 7}  # 2+2+3 and 2+1+1+1+2
    assert (st["chars"]["min"], st["chars"]["max"]) == (len("Be brief.abcd e"), len("Be brief.one twothree four five"))
    assert st["turns_per_row"] == {"min": 2, "mean": 3.0, "max": 4, "p50": 2, "p95": 4}
    # The streaming path computes the same numbers.
    assert data.load(jsonl(tmp_path, rows), keep_rows=False).stats == st
    rows[1]["messages"][0]["content"] = "Other."
    assert data.stats(data.load(jsonl(tmp_path, rows)).rows)["shared_system_prompt"] is None


def test_percentiles_are_nearest_rank():
    s = data._summary(data.array("q", range(1, 101)))
    assert (s["p50"], s["p95"], s["min"], s["max"], s["mean"]) == (50, 95, 1, 100, 50.5)


# ---------------------------------------------------------------------------------------------- check verb

def run_check(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kolo_trainer", "check", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=60)


def test_check_ok_and_json(tmp_path):
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    jsonl(root / "data", [{"messages": conv(("q", "a"), system="S")}] * 2, name="x.jsonl")
    r = run_check("data/x.jsonl", "--data-root", root)
    assert r.returncode == 0, r.stderr
    assert "data/x.jsonl: format messages, 2 row(s), 2 valid, 0 problem(s), 1 warning(s)" in r.stdout
    assert "warning: data/x.jsonl:2: duplicate of line 1" in r.stdout and "shared system prompt: 'S'" in r.stdout
    doc = json.loads(run_check("data/x.jsonl", "--data-root", root, "--json").stdout)
    assert doc["rows_valid"] == 2 and doc["stats"]["shared_system_prompt"] == "S" and doc["problems"] == []


def test_check_bad_file_exits_3_with_file_line_reasons(tmp_path):
    p = jsonl(tmp_path, [row for row, _ in BAD])
    r = run_check(p)
    assert r.returncode == 3
    assert f"{p}:2: invalid JSON" in r.stderr and "Traceback" not in r.stderr
    assert "hint: fix them, or pass --skip-invalid" in r.stderr
    r = run_check(p, "--json")
    assert r.returncode == 3 and len(json.loads(r.stdout)["problems"]) == len(BAD) - 1


def test_check_refuses_escaping_names(tmp_path):
    r = run_check("../x.jsonl", "--data-root", tmp_path)
    assert r.returncode == 2 and "'..'" in r.stderr and "Traceback" not in r.stderr


def test_data_module_is_light():
    code = "import sys, kolo_trainer.data; print(sorted(m for m in ('jinja2', 'torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("block", [1, 7, 64, 301])
def test_block_boundaries_do_not_change_anything(tmp_path, monkeypatch, block):
    """Lines crossing the reader's block boundaries (and over-long ones) give the same rows, lines and problems."""
    rows = []
    for i in range(40):
        if i % 9 == 4:
            rows.append('{"text": "' + "y" * 500 + '"}')  # longer than the (patched) row limit below
        elif i % 7 == 3:
            rows.append("{broken")
        elif i % 5 == 2:
            rows.append("")
        else:
            rows.append(json.dumps({"text": "z" * (i * 13 % 97 + 1) + f" row {i}"}))
    p = tmp_path / "d.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode())  # BOM, and no final newline
    monkeypatch.setattr(data, "MAX_ROW_BYTES", 400)
    want = data.load(p)
    monkeypatch.setattr(data, "_BLOCK", block)
    got = data.load(p)
    assert [(r.line, r.messages) for r in got.rows] == [(r.line, r.messages) for r in want.rows]
    assert [str(x) for x in got.problems] == [str(x) for x in want.problems]
    lines = {p.line: p.kind for p in want.problems}
    assert {ln for ln, k in lines.items() if k == "too_long"} == {i + 1 for i in range(40) if i % 9 == 4}
    assert {ln for ln, k in lines.items() if k == "invalid_json"} == {i + 1 for i in range(40) if i % 7 == 3 and i % 9 != 4}
    assert [r.line for r in want.rows] == [i + 1 for i in range(40) if i % 9 != 4 and i % 7 != 3 and i % 5 != 2]


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_parallel_check_equals_sequential(tmp_path, monkeypatch, workers):
    """Big files are checked by several processes; the result (lines, problems, duplicates across ranges,
    stats) must be exactly the sequential one."""
    rows = []
    for i in range(300):
        if i % 37 == 5:
            rows.append("{oops")
        elif i % 11 == 0:
            rows.append(json.dumps({"messages": conv(("same question", "same answer"), system="S")}))  # dups
        elif i % 29 == 3:
            rows.append(json.dumps({"messages": [{"role": "user", "content": "no reply"}]}))
        else:
            rows.append(json.dumps({"messages": conv((f"q{i}", "a " * (i % 13 + 1)), system="S" if i % 2 else None)}))
    p = jsonl(tmp_path, rows)
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())  # with a byte-order mark, which only range 1 may skip
    monkeypatch.setenv("KOLO_DATA_WORKERS", "1")
    want = data.load(p, keep_rows=False)
    monkeypatch.setenv("KOLO_DATA_WORKERS", str(workers))
    got = data.load(p, keep_rows=False)
    assert got.rows_total == want.rows_total == 300 and got.rows_valid == want.rows_valid
    assert [str(x) for x in got.problems] == [str(x) for x in want.problems]
    assert [str(x) for x in got.warnings] == [str(x) for x in want.warnings]
    assert got.stats == want.stats and got.format == want.format == "messages"
    assert sum(1 for w in want.warnings if w.kind == "duplicate") == len(range(0, 300, 11)) - 1 - 1  # row 264 is broken


# ---------------------------------------------------------------------------------------------- fast path = reference


def _reference_load(path: Path, fmt: str) -> tuple:
    """The semantics spelt out slowly: each line through the stdlib and the exact per-row validator, duplicates
    by comparing real (roles, contents) tuples. ``load`` (orjson, whole-chunk batches, several processes) must
    give exactly this."""
    name = str(path)
    problems, warnings, rows, seen = [], [], [], {}
    total = 0
    for ln, raw in enumerate(path.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n"), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            total += 1
            problems.append((ln, data._decode_error(e, raw), "not_utf8"))
            continue
        if not text.strip():
            continue
        total += 1
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append((ln, f"invalid JSON ({e.msg} at column {e.colno})", "invalid_json"))
            continue
        if type(obj) is not dict:
            problems.append((ln, f"a row must be a JSON object, got {data._type_name(obj)}", "wrong_type"))
            continue
        try:
            msgs = data._row_messages(obj, fmt)
        except data._Bad as b:
            problems.append((ln, b.reason, b.kind))
            continue
        key = (tuple(m["role"] for m in msgs), tuple(m["content"] for m in msgs))
        first = seen.setdefault(key, ln)
        if first != ln:
            warnings.append((ln, f"duplicate of line {first} (same conversation)", "duplicate"))
        if key[0][-1] == "user":
            warnings.append((ln, "ends with a user turn, which is not trained on", "trailing_user"))
        rows.append(data.Row(msgs, ln, name))
    return total, problems, warnings, data.stats(rows), [(r.line, r.messages) for r in rows]


def _every_kind_of_row(i: int, sharegpt: bool) -> str:
    """Mostly valid rows (so that whole chunks take the batched path), and every kind of problem and warning."""
    key, rk, ck = ("conversations", "from", "value") if sharegpt else ("messages", "role", "content")
    u, a = ("human", "gpt") if sharegpt else ("user", "assistant")

    def row(*msgs, **extra):
        return json.dumps({key: [{rk: r, ck: c} for r, c in msgs], **extra}, ensure_ascii=i % 2 == 0)

    bad = {
        7: lambda: "{broken", 11: lambda: "[1, 2]", 13: lambda: "", 17: lambda: "   \r",
        19: lambda: row((u, "q"), (u, "again"), (a, "")),  # two user turns, an empty content
        23: lambda: row(("robot", "x"), (a, "y")),  # unknown role
        29: lambda: row((u, 5), (a, "y")),  # not a string
        31: lambda: row((a, "first"), (u, "then")),  # assistant before user, ends with the user
        37: lambda: row((u, "only the question")),  # no assistant turn
        41: lambda: '{"messages": NaN}' if not sharegpt else '{"conversations": 123456789012345678901234567890}',
        43: lambda: row((u, "lone \ud800 surrogate"), (a, "fine")),  # json accepts it, orjson does not
        47: lambda: '{"' + key + '": [{"' + rk + '": "' + u + '", "' + ck + '": "caf\xff"}]}',  # not UTF-8
        53: lambda: row((u, "trailing data"), (a, "x")) + " x",
        59: lambda: json.dumps({"other": 1}),
        61: lambda: row((u, "dup"), (a, "licate"), ("system", "late")),  # system not first
        67: lambda: row((u, "q"), (a, "a"), (u, "unanswered")),  # valid, but ends with a user turn
        71: lambda: json.dumps({key: []}),
        73: lambda: json.dumps({key: [{rk: u, ck: [{"type": "text", "text": "parts"}]}, {rk: a, ck: "x"}]}),
        79: lambda: json.dumps({key: [{rk: u, ck: [{"type": "image"}]}, {rk: a, ck: "x"}]}),
        83: lambda: json.dumps({key: ["not an object"]}),
    }
    if i % 89 in bad:
        return bad[i % 89]()
    if i % 10 == 3:  # the same conversation again (differently spaced: still a duplicate)
        return json.dumps(json.loads(row(("system", "S"), (u, "same question"), (a, "same answer"))),
                          separators=(",", ":"))
    system = (("system", "S"),) if i % 3 else ()
    return row(*system, (u, f"question {i % 400}"), (a, "an answer\nwith  words " * (i % 7 + 1)))


@pytest.mark.parametrize("sharegpt", [False, True])
def test_fast_paths_equal_the_reference(tmp_path, monkeypatch, sharegpt):
    """Every path of ``load`` (orjson or stdlib parser, whole-chunk batches or row by row, several processes)
    gives exactly the reference's problems, warnings, rows and statistics, on a file with every kind of problem."""
    fmt = "sharegpt" if sharegpt else "messages"
    p = tmp_path / "d.jsonl"
    p.write_bytes(b"\n".join(_every_kind_of_row(i, sharegpt).encode("utf-8", "surrogatepass").replace(b"\\xff", b"\xff")
                             for i in range(1500)) + b"\n")
    total, want_problems, want_warnings, want_stats, want_rows = _reference_load(p, fmt)
    assert {k for _, _, k in want_problems} >= {"invalid_json", "not_utf8", "wrong_type", "wrong_format", "invalid",
                                                "empty"}
    assert {k for _, _, k in want_warnings} == {"duplicate", "trailing_user"}
    assert want_stats["shared_system_prompt"] is None and want_stats["rows"] > 1000

    def check(res, keep_rows):
        assert (res.format, res.rows_total, res.rows_valid) == (fmt, total, len(want_rows))
        assert [(x.line, x.reason, x.kind) for x in res.problems] == want_problems
        assert [(x.line, x.reason, x.kind) for x in res.warnings] == want_warnings
        if keep_rows:
            assert [(r.line, r.messages) for r in res.rows] == want_rows
        else:
            assert res.stats == want_stats and not res.rows

    monkeypatch.setenv("KOLO_DATA_WORKERS", "1")
    for fast_parser in ([None, False] if data._fast_parser() else [False]):  # None: orjson (when installed)
        for chunk in (data._CHUNK, 5, 1):
            monkeypatch.setattr(data, "_FAST_LOADS", fast_parser)
            monkeypatch.setattr(data, "_CHUNK", chunk)
            for f in ("auto", fmt):
                check(data.load(p, f, keep_rows=True), True)
                check(data.load(p, f, keep_rows=False), False)
    monkeypatch.setattr(data, "_FAST_LOADS", None)
    monkeypatch.setenv("KOLO_DATA_WORKERS", "2")
    check(data.load(p, keep_rows=False), False)
