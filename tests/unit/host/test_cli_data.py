"""`kolo data add | check | list` through the real console script, on real files in a temp data root."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

GOOD = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
BAD = GOOD + "not json\n" + '{"messages": [{"role": "assistant", "content": "x"}]}\n'


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_add_copies_and_names_the_train_flag(kolo, data_root, tmp_path):
    src = tmp_path / "chats.jsonl"
    src.write_text(GOOD * 3)
    r = kolo("data", "add", str(src))
    assert r.returncode == 0, r.stderr
    assert (data_root / "data" / "chats.jsonl").read_text() == GOOD * 3
    assert "--train-data data/chats.jsonl" in r.stdout
    assert not [p for p in (data_root / "data").iterdir() if p.name.startswith(".tmp")]  # no leftovers
    r = kolo("data", "list")
    assert r.returncode == 0 and "data/chats.jsonl" in r.stdout


def test_add_never_overwrites_without_force(kolo, data_root, tmp_path):
    (data_root / "data" / "chats.jsonl").write_text(GOOD)
    src = tmp_path / "other.jsonl"
    src.write_text(GOOD * 2)
    before = _tree(data_root)
    r = kolo("data", "add", str(src), "--as", "chats.jsonl")
    assert r.returncode == 4 and "already exists" in r.stderr and "--force" in r.stderr
    assert _tree(data_root) == before
    r = kolo("data", "add", str(src), "--as", "chats.jsonl", "--force")
    assert r.returncode == 0 and (data_root / "data" / "chats.jsonl").read_text() == GOOD * 2


def test_add_refuses_invalid_data_and_bad_names(kolo, data_root, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(BAD)
    before = _tree(data_root)
    r = kolo("data", "add", str(src))
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert f"{src}:2: invalid JSON" in r.stderr and f"{src}:3:" in r.stderr
    for name in ("../escape.jsonl", "a/b.jsonl", "x\ny.jsonl"):
        r = kolo("data", "add", str(tmp_path / "bad.jsonl"), "--as", name)
        assert r.returncode == 2 and "--as" in r.stderr, (name, r.stderr)
    r = kolo("data", "add", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 3 and "file not found" in r.stderr
    assert _tree(data_root) == before
    r = kolo("data", "add", str(src), "--skip-invalid")
    assert r.returncode == 0 and "--skip-invalid" in r.stdout and "warning:" in r.stderr


def test_check_reports_every_problem_with_file_line(kolo, tmp_path, data_root):
    src = tmp_path / "bad.jsonl"
    src.write_text(BAD)
    r = kolo("data", "check", str(src))
    assert r.returncode == 3
    assert f"{src}:2:" in r.stderr and f"{src}:3:" in r.stderr and "Traceback" not in r.stderr
    (data_root / "data" / "ok.jsonl").write_text(GOOD * 4)
    r = kolo("data", "check", "data/ok.jsonl", "--json")  # relative to the data root
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["rows_valid"] == 4 and doc["problems"] == []
    assert doc["warnings"]  # exact duplicate rows are reported


def test_check_names_a_data_root_file_as_given_and_applies_the_root_rules(kolo, data_root, tmp_path):
    (data_root / "data" / "ok.jsonl").write_text("{oops\n")
    r = kolo("data", "check", "data/ok.jsonl")
    assert r.returncode == 3 and "data/ok.jsonl:1: invalid JSON" in r.stderr  # not the absolute path
    (tmp_path / "elsewhere.jsonl").write_text(GOOD)
    (data_root / "data" / "link.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    r = kolo("data", "check", "data/link.jsonl")
    assert r.returncode == 2 and "leads outside the data root" in r.stderr and "Traceback" not in r.stderr


def test_format_choices_come_from_the_format_table(kolo):
    from kolo_trainer.data.formats import FORMATS

    for verb in ("check", "add"):
        r = kolo("data", verb, "--help")
        assert r.returncode == 0 and "|".join(FORMATS) in r.stdout, r.stdout


def test_list_names_a_folder_it_cannot_read_and_goes_on(data_root, monkeypatch):
    """A folder kolo may not read (permission denied) is a note, not the end of the listing. Faked with a patched
    os.scandir: these tests run as root, for whom no permission bit denies reading."""
    import os

    from kolo_cli.commands import data as cmd

    (data_root / "data" / "locked").mkdir()
    (data_root / "data" / "ok.jsonl").write_text(GOOD)
    real = os.scandir

    def scandir(path):
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(cmd.os, "scandir", scandir)
    got = {e.rel: e.note for e in cmd._entries(data_root, data_root / "data")}
    assert got == {"data/ok.jsonl": "", "data/locked": "cannot read this folder: Permission denied"}
