"""The fast paths of kolo_trainer.data (orjson, whole-chunk batches, several processes) give exactly the slow
reference's rows, problems, warnings and statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_helpers import conv, jsonl
from kolo_trainer import data
from kolo_trainer.data import consume, formats, readers
from kolo_trainer.data.results import Bad, Row, type_name


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
            problems.append((ln, readers.decode_error(e, raw), "not_utf8"))
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
            problems.append((ln, f"a row must be a JSON object, got {type_name(obj)}", "wrong_type"))
            continue
        try:
            msgs = formats.row_messages(obj, fmt)
        except Bad as b:
            problems.append((ln, b.reason, b.kind))
            continue
        key = (tuple(m["role"] for m in msgs), tuple(m["content"] for m in msgs))
        first = seen.setdefault(key, ln)
        if first != ln:
            warnings.append((ln, f"duplicate of line {first} (same conversation)", "duplicate"))
        if key[0][-1] == "user":
            warnings.append((ln, "ends with a user turn, which is not trained on", "trailing_user"))
        rows.append(Row(msgs, ln, name))
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
        # json accepts a lone surrogate, orjson does not; both paths must report it (escaped: ensure_ascii rows)
        43: lambda: row((u, "lone \ud800 surrogate"), (a, "fine")),
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
    assert any("lone surrogate" in r for _, r, _ in want_problems)
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
    for fast_parser in ([None, False] if readers.fast_parser() else [False]):  # None: orjson (when installed)
        for chunk in (consume.CHUNK, 5, 1):
            monkeypatch.setattr(readers, "_FAST_LOADS", fast_parser)
            monkeypatch.setattr(consume, "CHUNK", chunk)
            for f in ("auto", fmt):
                check(data.load(p, f, keep_rows=True), True)
                check(data.load(p, f, keep_rows=False), False)
    monkeypatch.setattr(readers, "_FAST_LOADS", None)
    monkeypatch.setenv("KOLO_DATA_WORKERS", "2")
    check(data.load(p, keep_rows=False), False)
