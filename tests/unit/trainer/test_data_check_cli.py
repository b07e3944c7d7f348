"""``python -m kolo_trainer check`` (kolo_trainer.data.cli) in a fresh process, and the package's lightness."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from data_helpers import BAD, conv, jsonl, run_check


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


def test_check_a_fifo_exits_3_at_once_without_the_skip_invalid_hint(tmp_path):
    fifo = tmp_path / "x.jsonl"
    os.mkfifo(fifo)
    r = run_check(fifo, timeout=30)  # a hang is a TimeoutExpired: the test fails
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert f"{fifo}:1: not a regular file (a FIFO); give a JSONL, JSON or CSV file" in r.stderr
    assert "--skip-invalid" not in r.stderr  # no row can be skipped: the file itself is unusable


def test_check_bad_format_is_a_bad_option(tmp_path):
    p = jsonl(tmp_path, [{"messages": conv(("q", "a"))}])
    r = run_check(p, "--format", "yaml")
    assert r.returncode == 2 and "yaml" in r.stderr and "sharegpt" in r.stderr and "Traceback" not in r.stderr


def test_check_refuses_escaping_names(tmp_path):
    r = run_check("../x.jsonl", "--data-root", tmp_path)
    assert r.returncode == 2 and "'..'" in r.stderr and "Traceback" not in r.stderr


def test_data_package_is_light():
    code = ("import sys, kolo_trainer.data; "
            "print(sorted(m for m in ('jinja2', 'torch', 'transformers', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_check_help_describes_every_format_from_the_table():
    from kolo_trainer.data import formats

    r = run_check("--help")
    assert r.returncode == 0
    for f in formats.TABLE:
        assert f"  {f.name}: {f.help}" in r.stdout
