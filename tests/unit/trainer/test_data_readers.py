"""kolo_trainer.data.readers: files that are not data (missing, folders, FIFOs, devices, binary, not UTF-8,
a huge line), blank lines, CRLF, byte-order marks, and lines crossing the reader's block boundaries."""

from __future__ import annotations

import json
import os
import threading

import pytest

from data_helpers import conv, jsonl, problems
from kolo_trainer import data
from kolo_trainer.data import readers
from kolo_trainer.errors import DataError


def test_blank_lines_crlf_and_bom(tmp_path):
    p = tmp_path / "d.jsonl"
    line = json.dumps({"messages": conv(("q", "a"))})
    p.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\r\n\r\n   \n" + line.replace('"q"', '"q2"').encode())
    res = data.load(p)
    assert not res.problems and [r.line for r in res.rows] == [1, 4]


def test_a_null_row_is_a_problem_not_a_blank_line(tmp_path):
    res = data.load(jsonl(tmp_path, ["null", json.dumps({"messages": conv(("q", "a"))})]))
    assert problems(res) == ["1: a row must be a JSON object, got null"] and res.rows_total == 2


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


def test_a_fifo_is_refused_without_blocking(tmp_path):
    """Opening a FIFO for reading blocks until something writes to it: load must refuse it before (and no
    matter how long nothing writes). Run in a thread, so that a hang fails the test instead of stalling it."""
    fifo = tmp_path / "x.jsonl"
    os.mkfifo(fifo)
    got = []
    t = threading.Thread(target=lambda: got.append(data.load(fifo, display_name="data/x.jsonl")), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock the reader so the thread can end, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("data.load blocked on a FIFO")
    assert [str(p) for p in got[0].problems] == [
        "data/x.jsonl:1: not a regular file (a FIFO); give a JSONL, JSON or CSV file"]
    assert got[0].problems[0].kind == "file"


def test_a_device_is_refused():
    """/dev/zero would be read forever (it never ends, and has no newline to split at)."""
    res = data.load("/dev/zero")
    assert problems(res) == ["1: not a regular file (a character device); give a JSONL, JSON or CSV file"]
    assert data.file_problem("/dev/zero") == res.problems[0].reason


def test_a_file_swapped_for_a_fifo_after_the_look_cannot_block(tmp_path, monkeypatch):
    """The check looks (stat), then opens: a FIFO put in place between the two is still caught, without
    blocking, because the open is non-blocking and what was opened is judged again."""
    fifo = tmp_path / "x.jsonl"
    os.mkfifo(fifo)
    monkeypatch.setattr(readers, "file_problem", lambda path: None)  # the first look saw a regular file
    got = []
    t = threading.Thread(target=lambda: got.append(data.load(fifo)), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():
        with open(fifo, "wb"):
            pass
        pytest.fail("data.load blocked on a FIFO")
    assert [p.reason for p in got[0].problems] == ["not a regular file (a FIFO); give a JSONL, JSON or CSV file"]


def test_a_symlink_to_a_regular_file_is_read(tmp_path):
    real = jsonl(tmp_path, [{"messages": conv(("q", "a"))}], name="real.jsonl")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    assert data.load(link).rows_valid == 1 and data.file_problem(link) is None
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "gone.jsonl")
    assert problems(data.load(tmp_path / "dangling.jsonl")) == ["1: file not found"]


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


def test_unsupported_extension(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("hello\n")
    assert problems(data.load(p)) == ["1: unsupported file type '.txt'; use .jsonl, .json or .csv"]


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
    monkeypatch.setattr(readers, "MAX_ROW_BYTES", 400)
    want = data.load(p)
    monkeypatch.setattr(readers, "BLOCK", block)
    got = data.load(p)
    assert [(r.line, r.messages) for r in got.rows] == [(r.line, r.messages) for r in want.rows]
    assert [str(x) for x in got.problems] == [str(x) for x in want.problems]
    lines = {p.line: p.kind for p in want.problems}
    assert {ln for ln, k in lines.items() if k == "too_long"} == {i + 1 for i in range(40) if i % 9 == 4}
    assert {ln for ln, k in lines.items() if k == "invalid_json"} == {i + 1 for i in range(40) if i % 7 == 3 and i % 9 != 4}
    assert [r.line for r in want.rows] == [i + 1 for i in range(40) if i % 9 != 4 and i % 7 != 3 and i % 5 != 2]
