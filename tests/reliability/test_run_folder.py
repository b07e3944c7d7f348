"""Issue 10: hostile file systems and careless input against the run folder and the error path, through the real
`kolo` console script (local runtime). Each case: the documented exit code, one clear line naming the thing and the
fix, no traceback, and nothing changed inside the data root, nor outside it (a victim folder a link points to is
hashed too).

The cases that need real training (full disk mid-run, a truncated checkpoint, --resume of an exported run) are in
test_run_folder_training.py.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import pytest

from rel_helpers import assert_clean_refusal, tree_digest

LOCAL = {"KOLO_RUNTIME": "local"}
TRAIN = ["train", "--base-model", "models/fake", "--train-data", "data/good.jsonl"]


def _victim(root: Path) -> Path:
    """A folder outside the data root with the user's files, that links will point at."""
    v = root.parent / "victim"
    v.mkdir(exist_ok=True)
    (v / "thesis.txt").write_text("years of work")
    (v / "sub").mkdir(exist_ok=True)
    (v / "sub" / "data.bin").write_bytes(b"\x01" * 100)
    return v


def link_run(root: Path) -> None:
    (root / "outputs" / "victim").symlink_to(_victim(root), target_is_directory=True)


def link_outputs(root: Path) -> None:
    v = _victim(root)
    (v / "done").mkdir(exist_ok=True)
    (v / "done" / "kolo.json").write_text(json.dumps({"status": "finished"}))
    (root / "outputs").rename(root / "outputs-real")
    (root / "outputs").symlink_to(v, target_is_directory=True)


def link_data(root: Path) -> None:
    _victim(root)
    (root / "data" / "link.jsonl").symlink_to(root.parent / "victim" / "thesis.txt")


def user_folder(root: Path) -> None:
    mine = root / "outputs" / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes")
    (mine / "adapter").mkdir()  # even a name kolo uses does not make it kolo's folder
    (mine / "adapter" / "weights.bin").write_bytes(b"\x02" * 64)


def file_as_run(root: Path) -> None:
    (root / "outputs" / "afile").write_text("not a folder")


def damaged_manifest(root: Path) -> None:
    (root / "outputs" / "done" / "kolo.json").write_text('{"status": "fini')


def other_host_lock(root: Path) -> None:
    (root / "outputs" / "done" / ".lock").write_text(json.dumps(
        {"pid": 1, "host": "kolo-container-4f2a", "started": "2026-11-30T00:00:00+00:00"}))


def write(rel: str, text: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root.parent / rel).write_text(text)
    return setup


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefghijkl", "bcdefghijklm"))

#: (id, argv, setup, env, exit code, pattern one output line must match)
CASES = [
    # --- links that lead out of the data root: refused before anything is written, on host and trainer side
    ("train-into-linked-run", [*TRAIN, "--output-dir", "victim"], link_run, LOCAL, 2, r"outputs/victim is a symbolic link"),
    ("train-resume-linked-run", [*TRAIN, "--output-dir", "victim", "--resume"], link_run, LOCAL, 2, r"symbolic link"),
    ("train-outputs-is-a-link", [*TRAIN, "--output-dir", "run"], link_outputs, LOCAL, 2,
     r"outputs.*leads outside the data root"),
    ("delete-through-linked-outputs", ["delete", "done", "--yes"], link_outputs, {}, 2, r"leads outside the data root"),
    ("delete-linked-run", ["delete", "victim", "--yes"], link_run, {}, 2, r"symbolic link"),
    ("train-data-link-outside", ["train", "--base-model", "models/fake", "--train-data", "data/link.jsonl"],
     link_data, LOCAL, 2, r"data/link\.jsonl.*leads outside the data root"),
    # --- a folder of the user's own files is not a run: never trained into, never deleted, --overwrite or not
    ("train-into-user-folder", [*TRAIN, "--output-dir", "mine"], user_folder, LOCAL, 4, r"outputs/mine.*not a kolo run"),
    ("overwrite-user-folder", [*TRAIN, "--output-dir", "mine", "--overwrite"], user_folder, LOCAL, 4,
     r"outputs/mine.*not a kolo run"),
    ("delete-user-folder", ["delete", "mine", "--yes"], user_folder, {}, 2, r"outputs/mine is not a kolo run"),
    ("train-into-a-file", [*TRAIN, "--output-dir", "afile"], file_as_run, LOCAL, 4, r"outputs/afile is a file"),
    # --- names no later stage could take
    ("train-300-char-name", [*TRAIN, "--output-dir", "r" * 300], None, LOCAL, 2, r"output.dir.*too long"),
    ("train-rtl-override-name", [*TRAIN, "--output-dir", "run\u202egguf.exe"], None, LOCAL, 2,
     r"output.dir.*invisible formatting character \(U\+202E"),
    ("data-add-long-name", ["data", "add", "../kolo_data/data/good.jsonl", "--as", "d" * 240 + ".jsonl"], None, {}, 2,
     r"too long"),
    ("empty-data-root", ["--data-root", "", "list"], None, {}, 2, r"--data-root is empty"),
    # --- a damaged kolo.json is one message, not a JSON traceback
    ("export-damaged-manifest", ["export", "done"], damaged_manifest, LOCAL, 1, r"outputs/done/kolo\.json is damaged"),
    ("resume-damaged-manifest", [*TRAIN, "--output-dir", "done", "--resume"], damaged_manifest, LOCAL, 1,
     r"outputs/done/kolo\.json is damaged"),
    # --- the lock of a process kolo cannot see (written inside the container) is honoured
    ("delete-run-locked-in-container", ["delete", "done", "--yes"], other_host_lock, {}, 4,
     r"outputs/done is in use .*kolo-container-4f2a"),
    # --- user text is never markup or emoji codes
    ("delete-markup-name", ["delete", "x[/]", "--yes"], None, {}, 2, r"'x\[/\]'"),
    ("delete-markup-italic", ["delete", "y[/i]", "--yes"], None, {}, 2, r"'y\[/i\]'"),
    ("ollama-name-emoji-code", ["ollama-install", "a:b:c", "--output-dir", "done"], None, {}, 2,
     r"model name 'a:b:c' is not a valid Ollama name"),
    # --- values that look like options stay values (the trainer never prints its usage and exits 0)
    ("base-model-dash-h", ["train", "--train-data", "data/good.jsonl", "--base-model=-h"], None, LOCAL, 2,
     r"--base-model.*-h"),
    # --- config files: bounded, regular files only
    ("config-alias-bomb", [*TRAIN, "--config", "bomb.yaml"], write("cwd/bomb.yaml", BOMB), LOCAL, 2,
     r"bomb\.yaml: \d+ YAML aliases"),
    ("config-dev-zero", [*TRAIN, "--config", "/dev/zero"], None, LOCAL, 2, r"/dev/zero: not a regular file"),
    ("config-huge-value", [*TRAIN, "--config", "big.yaml"], write("cwd/big.yaml", "epochs: " + "9" * 5000 + "x\n"),
     LOCAL, 2, r"--epochs: .*\.\.\."),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_case(case, kolo, seeded_root: Path) -> None:
    _, argv, setup, env, code, pattern = case
    if setup is not None:
        setup(seeded_root)
    outside = seeded_root.parent / "victim"
    before = (tree_digest(seeded_root), tree_digest(outside) if outside.exists() else None)
    r = kolo(*argv, env=env, timeout=120)
    assert_clean_refusal(r, code, pattern)
    after = (tree_digest(seeded_root), tree_digest(outside) if outside.exists() else None)
    assert after == before, "something changed in or outside the data root"


def test_case_count() -> None:
    assert len({c[0] for c in CASES}) == len(CASES) >= 20


# ---------------------------------------------------------------------------------------------- cases with outcomes
def test_delete_removes_only_what_kolo_wrote(kolo, seeded_root: Path) -> None:
    done = seeded_root / "outputs" / "done"
    (done / "my-notes.txt").write_text("keep me")
    r = kolo("delete", "done", "--yes")
    assert r.returncode == 0, r.stderr
    assert "kept 1 entry kolo did not write: my-notes.txt" in r.stdout
    assert sorted(p.name for p in done.iterdir()) == ["my-notes.txt"]


def test_delete_takes_over_a_stale_lock(kolo, seeded_root: Path) -> None:
    """A lock of this host whose process is gone (or is a zombie, or a reused pid) does not block delete: the one
    liveness rule of kolo_trainer.runlock, the same the trainer applies."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (seeded_root / "outputs" / "done" / ".lock").write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "start": "1"}))
    r = kolo("delete", "done", "--yes")
    assert r.returncode == 0, r.stderr
    assert not (seeded_root / "outputs" / "done").exists()


def test_list_survives_a_damaged_manifest_and_a_server_that_is_not_ollama(kolo, seeded_root: Path) -> None:
    damaged_manifest(seeded_root)

    class NotOllama(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"<html><body>a web page, not Ollama</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotOllama)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = kolo("list", "--json", "--ollama", f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    runs = {row["name"]: row for row in doc["runs"]}
    assert runs["done"]["status"] == "damaged kolo.json" and runs["done"]["ollama"] == "unknown"
    assert runs["half"]["status"] == "interrupted"  # says "running", but no process holds it
    assert "does not answer like Ollama" in doc["ollama_error"]


def test_user_text_is_printed_literally(kolo, tmp_path: Path) -> None:
    root = tmp_path / "exports [v2] a:b:c"
    (root / "outputs").mkdir(parents=True)
    r = kolo("--data-root", str(root), "list", "--ollama", "http://127.0.0.1:9")
    assert r.returncode == 0, r.stderr
    assert "exports [v2] a:b:c" in r.stdout.replace("\n", "")


def test_killed_data_add_leftover_is_cleaned(kolo, seeded_root: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = seeded_root / "data" / f".tmp-{dead.pid}-chats.jsonl"
    stale.write_text("half a file")
    live = seeded_root / "data" / f".tmp-{os.getpid()}-other.jsonl"  # a writer that still runs: left alone
    live.write_text("being written")
    src = tmp_path / "chats.jsonl"
    src.write_text((seeded_root / "data" / "good.jsonl").read_text())
    r = kolo("data", "add", str(src))
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and live.exists() and (seeded_root / "data" / "chats.jsonl").is_file()


def _mount_tmpfs(where: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)


def test_read_only_data_root_is_one_message(kolo, tmp_path: Path) -> None:
    root = tmp_path / "ro"
    _mount_tmpfs(root, "4m")
    try:
        for sub in ("data", "models/fake", "outputs"):
            (root / sub).mkdir(parents=True)
        (root / "models/fake/config.json").write_text("{}")
        (root / "data/good.jsonl").write_text(json.dumps({"messages": [
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        before = tree_digest(root)
        for argv in ([*TRAIN, "--output-dir", "run"], ["data", "add", str(root / "data/good.jsonl"), "--as", "x.jsonl"]):
            r = kolo("--data-root", str(root), *argv, env=LOCAL)
            out = r.stdout + r.stderr
            assert r.returncode == 1 and "Traceback" not in out, out
            assert "read-only file system" in out.lower() and "hint:" in out, out
        assert tree_digest(root) == before
    finally:
        subprocess.run(["umount", str(root)], check=False)


def test_option_like_values_reach_the_trainer_as_values(kolo, seeded_root: Path) -> None:
    """`--sample-prompt=--help` and `--output-dir=-x` are values: the trainer gets past its argument parser (no
    usage text, no exit 0 having trained nothing) and stops only where models/fake cannot be loaded."""
    before = tree_digest(seeded_root)
    r = kolo(*TRAIN, "--sample-prompt=--help", "--output-dir=-x", env=LOCAL)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "usage:" not in out.lower() and "Traceback" not in out, out[-2000:]
    assert "[data] rows = 4" in out and "models/fake" in out, out[-2000:]  # parsed, checked, data loaded
    assert tree_digest(seeded_root) == before
    r = kolo("export", "done", "--system=--help", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "--system=--help" in r.stdout.split()
