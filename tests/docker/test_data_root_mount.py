"""The data root is a host folder bind-mounted at /var/kolo_data: what the container writes, the host sees.

Against a REAL Docker engine, with the container made by `kolo up` from the suite's test image (conftest.py).
A file written inside the container through `docker exec` (an argv list, run by the container's own Python)
appears under the host data root; the host-side verbs (`kolo list`, `kolo lmstudio-install`, `kolo delete`) then
work on it; and `kolo down` leaves it in place. The image's HEALTHCHECK command runs in such a container too.
"""

from __future__ import annotations

import json
import subprocess

import pytest

pytestmark = pytest.mark.docker

WRITER = """
import json, os, sys
run = os.path.join(os.environ["KOLO_DATA"], "outputs", sys.argv[1])
os.makedirs(os.path.join(run, "gguf"), exist_ok=True)
with open(os.path.join(run, "gguf", sys.argv[1] + "-Q4_K_M.gguf"), "wb") as f:
    f.write(b"GGUF" + b"written in the container")
with open(os.path.join(run, "kolo.json"), "w") as f:
    json.dump({"status": "finished", "written_by": os.uname().nodename}, f)
"""


def _exec(name: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", name, *argv], capture_output=True, text=True, timeout=60)


def test_container_writes_are_visible_on_the_host(kolo, running, container_name, data_root, tmp_path):
    # python inside the test image is this venv's (mounted read-only); KOLO_DATA=/var/kolo_data comes from `kolo up`
    r = _exec(container_name, "python", "-c", WRITER, "from-container")
    assert r.returncode == 0, r.stderr
    host_run = data_root / "outputs" / "from-container"
    gguf = host_run / "gguf" / "from-container-Q4_K_M.gguf"
    assert gguf.read_bytes() == b"GGUF" + b"written in the container"
    assert json.loads((host_run / "kolo.json").read_text())["written_by"] != ""

    # and the other way: the host drops a file, the container reads it at /var/kolo_data
    (data_root / "data" / "drop.jsonl").write_text('{"messages": []}\n')
    r = _exec(container_name, "cat", "/var/kolo_data/data/drop.jsonl")
    assert r.returncode == 0 and r.stdout == '{"messages": []}\n'

    # the host-side verbs see the run the container wrote
    r = kolo("list", "--json", "--ollama", "http://127.0.0.1:9")
    assert r.returncode == 0, r.stderr
    runs = {x["name"]: x for x in json.loads(r.stdout)["runs"]}
    assert runs["from-container"]["quantizations"] == ["Q4_K_M"]
    assert runs["from-container"]["ollama"] == "unknown"
    r = kolo("lmstudio-install", "from-container", "--models-dir", str(tmp_path / "lms"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "lms" / "kolo" / "from-container" / "from-container-Q4_K_M.gguf").read_bytes() == \
        gguf.read_bytes()

    # `kolo down` removes the container, never the data
    r = kolo("down")
    assert r.returncode == 0, r.stderr
    assert gguf.exists()
    r = kolo("delete", "from-container", "--yes")
    assert r.returncode == 0, r.stderr
    assert not host_run.exists()


def test_image_healthcheck_passes_in_a_kolo_container(running, container_name):
    """The Dockerfile's HEALTHCHECK command, run for real inside a container made by `kolo up`."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    cmd = json.loads(text.split("HEALTHCHECK", 1)[1].split("CMD", 1)[1].splitlines()[0].strip())
    r = _exec(container_name, *cmd)
    assert r.returncode == 0, r.stdout + r.stderr
    # and it fails on a folder that is not writable (/usr is a read-only mount in the test container)
    broken = [a.replace("test -w /var/kolo_data", "test -w /usr") for a in cmd]
    assert broken != cmd and _exec(container_name, *broken).returncode != 0
