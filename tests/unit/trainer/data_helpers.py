"""Helpers of the kolo_trainer.data tests (a plain module: the test_data_*.py files import it by name)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


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


def run_check(*args, cwd=None, timeout=60):
    """``python -m kolo_trainer check ...`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "kolo_trainer", "check", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)


#: One row per kind of problem with the reason the file reports for it (None: a valid row).
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
    ('{"messages": [{"role": "user", "content": "a \\ud800 b"}, {"role": "assistant", "content": "c"}]}',
     'message 1 (user): contains a lone surrogate (invalid Unicode) at character 3, from a "\\ud800" escape '
     'without its pair; fix or remove it'),
]
