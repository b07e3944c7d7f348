"""The pieces of a remote engine's data root that need no daemon: the container-side program (run here, for real,
against a local data root: it is the same `python -c` program `docker exec` runs in the container), the upload's
tar stream, and the download's streaming tar reader. The daemon end to end is tests/docker/test_remote_engine.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from kolo_cli import remote_data
from kolo_trainer.errors import KoloError


def script(root: Path, op: str, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", remote_data.REMOTE_SCRIPT, str(root), op, *args], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_stat_sizes_and_hashes_inside_the_data_root_only(data_root: Path, tmp_path: Path) -> None:
    (data_root / "data" / "a.jsonl").write_bytes(b"abc\n")
    res = script(data_root, "stat", "data/a.jsonl", "data/none.jsonl", "data")
    assert res["files"] == {"data/a.jsonl": {"kind": "file", "size": 4, "sha256": sha(b"abc\n")},
                            "data/none.jsonl": None, "data": {"kind": "a folder"}}
    assert (res["uid"], res["gid"]) == (os.getuid(), os.getgid())  # the owner an upload's tar entries get
    (tmp_path / "outside.jsonl").write_text("x")
    (data_root / "data" / "out.jsonl").symlink_to(tmp_path / "outside.jsonl")
    res = script(data_root, "stat", "data/out.jsonl")
    assert res["exit_code"] == 2 and "leads outside the data root" in res["error"]
    assert script(data_root, "stat", "../x")["exit_code"] == 2


def test_commit_renames_only_what_arrived_whole(data_root: Path) -> None:
    folder = data_root / "data"
    (folder / ".tmp-1-a.jsonl").write_bytes(b"damaged")
    res = script(data_root, "commit", "data/.tmp-1-a.jsonl", "data/a.jsonl", sha(b"whole"), "3600")
    assert "arrived damaged" in res["error"] and not (folder / "a.jsonl").exists()
    assert not (folder / ".tmp-1-a.jsonl").exists()
    old = folder / ".tmp-999-left.jsonl"  # a killed upload's leftover: its pid means nothing in the container
    old.write_bytes(b"half")
    os.utime(old, (time.time() - 7200,) * 2)
    fresh = folder / ".tmp-998-other.jsonl"  # another upload, still arriving
    fresh.write_bytes(b"half")
    (folder / ".tmp-2-a.jsonl").write_bytes(b"whole")
    assert script(data_root, "commit", "data/.tmp-2-a.jsonl", "data/a.jsonl", sha(b"whole"), "3600") == {"ok": True}
    assert (folder / "a.jsonl").read_bytes() == b"whole"
    assert not old.exists() and fresh.exists()


def _run(root: Path, name: str, status: str, quants: list[str]) -> Path:
    run = root / "outputs" / name
    (run / "gguf").mkdir(parents=True)
    (run / "kolo.json").write_text(json.dumps({"status": status}))
    for q in quants:
        (run / "gguf" / f"{name}-{q}.gguf").write_bytes(b"GGUF" + q.encode())
        (run / "gguf" / f"Modelfile.{q}").write_text(f"FROM ./{name}-{q}.gguf\n")
    return run


def test_run_lists_what_pull_brings_with_kolo_json_last(data_root: Path) -> None:
    _run(data_root, "r", "finished", ["Q8_0", "F16"])
    res = script(data_root, "run", "r")
    rels = [rel for rel, _ in res["files"]]
    assert rels == ["gguf/r-F16.gguf", "gguf/Modelfile.F16", "gguf/r-Q8_0.gguf", "gguf/Modelfile.Q8_0", "kolo.json"]
    assert res["files"][0][1] == {"kind": "file", "size": 7, "sha256": sha(b"GGUFF16")}
    assert [rel for rel, _ in script(data_root, "run", "r", "Q8_0")["files"]] == [
        "gguf/r-Q8_0.gguf", "gguf/Modelfile.Q8_0", "kolo.json"]
    res = script(data_root, "run", "r", "Q4_K_M")
    assert res["exit_code"] == 2 and "has no Q4_K_M GGUF (exported: F16, Q8_0)" in res["error"]


def test_run_brings_the_lora_gguf_an_adapter_only_modelfile_names(data_root: Path) -> None:
    run = _run(data_root, "r", "finished", ["F16"])
    (run / "gguf" / "r-lora-F16.gguf").write_bytes(b"GGUFlora")
    (run / "gguf" / "Modelfile.F16").write_text("FROM ./r-F16.gguf\nADAPTER ./r-lora-F16.gguf\n")
    assert [rel for rel, _ in script(data_root, "run", "r")["files"]] == [
        "gguf/r-F16.gguf", "gguf/r-lora-F16.gguf", "gguf/Modelfile.F16", "kolo.json"]


@pytest.mark.parametrize("status, quants, message", [
    ("finished", [], "has no exported GGUF to pull"),
    ("running", ["F16"], "its training did not finish"),
    (None, [], "no run 'r'"),
])
def test_run_refuses_what_cannot_be_pulled(data_root: Path, status, quants, message) -> None:
    if status is not None:
        _run(data_root, "r", status, quants)
    res = script(data_root, "run", "r")
    assert message in res["error"], res


def test_the_upload_stream_is_a_tar_owned_by_the_trainer(tmp_path: Path) -> None:
    src = tmp_path / "chats.jsonl"
    src.write_bytes(os.urandom(remote_data.CHUNK + 777))  # more than one chunk, not a multiple of 512
    body = b"".join(remote_data._tar_stream(src, "data/.tmp-5-chats.jsonl", src.stat().st_size, ["data"], 1000, 20))
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = tar.getmembers()
        assert [(m.name, m.isdir(), m.uid, m.gid) for m in members] == [
            ("data", True, 1000, 20), ("data/.tmp-5-chats.jsonl", False, 1000, 20)]
        assert members[1].mode == 0o644 and tar.extractfile(members[1]).read() == src.read_bytes()
    # the file shrank after its size was taken: the stream refuses instead of sending a short file
    with pytest.raises(KoloError, match="changed while it was being uploaded"):
        b"".join(remote_data._tar_stream(src, "x", src.stat().st_size + 10, [], 0, 0))


class _Engine:
    """Stands in for a container's get_archive (a tar stream in chunks, as the engine sends it); the real engine
    is in tests/docker/test_remote_engine.py."""

    def __init__(self, payload: bytes, name: str = "m.gguf"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            ti = tarfile.TarInfo(name)
            ti.size = len(payload)
            tar.addfile(ti, io.BytesIO(payload))
        self.archive = buf.getvalue()

    def get_archive(self, path: str, chunk_size: int) -> tuple:
        chunks = (self.archive[i:i + 1000] for i in range(0, len(self.archive), 1000))  # odd sizes on purpose
        return chunks, {"name": os.path.basename(path)}


def test_fetch_streams_and_checks_the_file(tmp_path: Path) -> None:
    payload = os.urandom(3 * remote_data.CHUNK + 5)
    dest = tmp_path / "m.gguf"
    remote_data.fetch(_Engine(payload), "outputs/r/gguf/m.gguf", dest, len(payload), sha(payload))
    assert dest.read_bytes() == payload
    with pytest.raises(KoloError, match="changed on the engine while it was pulled"):
        remote_data.fetch(_Engine(payload[:-1]), "outputs/r/gguf/m.gguf", tmp_path / "b", len(payload), sha(payload))


def test_a_failing_container_side_program_is_one_docker_error() -> None:
    container = SimpleNamespace(name="kolo", exec_run=lambda *a, **k: SimpleNamespace(
        exit_code=126, output=b'OCI runtime exec failed: exec: "python": executable file not found in $PATH'))
    with pytest.raises(KoloError) as e:
        remote_data.stat(container, ["data/x"])
    assert e.value.exit_code == 7 and "python" in e.value.message and "kolo image" in e.value.hint
