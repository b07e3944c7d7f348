"""kolo delete and kolo lmstudio-install: real files in a temp data root, nothing faked."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kolo_cli.cli import main
from kolo_cli.commands import ollama as cmd


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    for run in ("run-a", "run-b"):
        g = data / "outputs" / run / "gguf"
        g.mkdir(parents=True)
        (g / f"{run}-Q4_K_M.gguf").write_bytes(b"GGUF" + run.encode() * 100)
        (data / "outputs" / run / "kolo.json").write_text('{"status": "finished"}')
    (data / "data").mkdir()
    (data / "data" / "train.jsonl").write_text('{"messages": []}\n')
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("precious")
    return data


def run_kolo(root: Path, *args: str) -> int:
    return main(["--data-root", str(root), *args])


# ------------------------------------------------------------------------------------------------ delete
def test_delete_with_yes(root, capsys):
    assert run_kolo(root, "delete", "run-a", "--yes") == 0
    assert not (root / "outputs/run-a").exists()
    assert (root / "outputs/run-b/kolo.json").exists()
    assert [p.name for p in (root / "outputs").iterdir()] == ["run-b"]  # no .tmp- leftovers


def test_delete_asks_for_the_name(root, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("run-b\n"))
    assert run_kolo(root, "delete", "run-a") == 1
    assert "nothing was deleted" in capsys.readouterr().err
    assert (root / "outputs/run-a/kolo.json").exists()
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("run-a\n"))
    assert run_kolo(root, "delete", "run-a") == 0
    assert not (root / "outputs/run-a").exists()


@pytest.mark.parametrize("name", ["..", "../data", "/etc", "run-a/gguf", "", "a\nb", "missing"])
def test_delete_never_leaves_outputs(root, name, capsys):
    before = _tree_hash(root.parent)
    assert run_kolo(root, "delete", name, "--yes") != 0
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    assert _tree_hash(root.parent) == before


def test_delete_refuses_a_symlinked_run(root, capsys):
    (root / "outputs" / "link").symlink_to(root.parent / "outside", target_is_directory=True)
    assert run_kolo(root, "delete", "link", "--yes") == 2  # a link is never a run name kolo accepts
    assert "symbolic link" in capsys.readouterr().err
    assert (root.parent / "outside" / "keep.txt").read_text() == "precious"


def test_delete_refuses_a_run_in_use(root, capsys):
    import json
    import socket

    (root / "outputs/run-a/.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    assert run_kolo(root, "delete", "run-a", "--yes") == 4  # like any output held by another process
    assert "is in use" in capsys.readouterr().err
    assert (root / "outputs/run-a/kolo.json").exists()


# -------------------------------------------------------------------------------------- lmstudio-install
def test_lmstudio_install_hard_links(root, tmp_path, capsys):
    models = tmp_path / "lms"
    assert run_kolo(root, "lmstudio-install", "run-a", "--quantization", "q4_k_m", "--models-dir", str(models)) == 0
    dest = models / "kolo" / "run-a" / "run-a-Q4_K_M.gguf"
    src = root / "outputs/run-a/gguf/run-a-Q4_K_M.gguf"
    assert os.path.samefile(src, dest) and "linked" in capsys.readouterr().out
    assert run_kolo(root, "lmstudio-install", "run-a", "--models-dir", str(models)) == 0
    assert "already there" in capsys.readouterr().out


def test_lmstudio_install_env_default_and_copy_fallback(root, tmp_path, monkeypatch, capsys):
    models = tmp_path / "lms-env"
    monkeypatch.setenv("LMSTUDIO_MODELS_DIR", str(models))

    def no_link(*a, **k):
        raise OSError(18, "Invalid cross-device link")  # what os.link says across filesystems

    monkeypatch.setattr(os, "link", no_link)
    assert run_kolo(root, "lmstudio-install", "run-b", "--publisher", "me") == 0
    dest = models / "me" / "run-b" / "run-b-Q4_K_M.gguf"
    assert dest.read_bytes() == (root / "outputs/run-b/gguf/run-b-Q4_K_M.gguf").read_bytes()
    assert not os.path.samefile(dest, root / "outputs/run-b/gguf/run-b-Q4_K_M.gguf")
    assert "copied" in capsys.readouterr().out
    assert [p.name for p in dest.parent.iterdir()] == ["run-b-Q4_K_M.gguf"]  # no temp file left


def test_lmstudio_install_errors(root, tmp_path, capsys):
    models = tmp_path / "lms"
    assert run_kolo(root, "lmstudio-install", "run-a", "--quantization", "Q8_0", "--models-dir", str(models)) == 1
    err = capsys.readouterr().err
    assert "has no Q8_0 GGUF" in err and "exported: Q4_K_M" in err
    assert run_kolo(root, "lmstudio-install", "run-a", "--publisher", "../up", "--models-dir", str(models)) == 2
    assert run_kolo(root, "lmstudio-install", "../outside", "--models-dir", str(models)) != 0
    assert not models.exists()


def test_place_file_replaces_atomically(tmp_path):
    src = tmp_path / "a.gguf"
    src.write_bytes(b"new")
    dest = tmp_path / "x" / "a.gguf"
    dest.parent.mkdir()
    dest.write_bytes(b"old")
    assert cmd.place_file(src, dest) == "linked"
    assert dest.read_bytes() == b"new"
