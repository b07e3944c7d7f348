"""`kolo serve`'s own options: the first-start key step of the compose service (--init-key), each worker pinned to
a GPU of its own (--workers, --gpus: CUDA_VISIBLE_DEVICES through the transport of either runtime), and doctor
telling the user's own Training Manager on a compose port from a stranger.

This machine has no GPU: where a GPU listing is needed, a stand-in `nvidia-smi` prints the real tool's `-L`
format (said where it is used); everything else is the real code (real subprocesses, real argv, a real server).
"""

from __future__ import annotations

import http.server
import os
import stat
import threading
from pathlib import Path

import pytest

from kolo_cli.server import db
from kolo_cli.server.worker import Worker, assign_gpus, detect_gpus, gpu_ids
from kolo_trainer.errors import OptionsError

pytestmark = [pytest.mark.server]

#: `nvidia-smi -L` as the real tool prints it on a two-GPU machine.
SMI_LIST = ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5f1c1e2a-0000-0000-0000-000000000000)\n"
            "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-5f1c1e2a-0000-0000-0000-000000000001)\n")


# ------------------------------------------------------------------------------------------ --init-key
def test_init_key_creates_the_key_once_and_never_replaces_it(kolo, data_root: Path) -> None:
    first = kolo("serve", "--init-key")
    assert first.returncode == 0, first.stderr
    key_file = data_root / "server" / "api_key"
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and key in first.stdout
    again = kolo("serve", "--init-key")
    assert again.returncode == 0 and key not in again.stdout and "exists" in again.stdout
    assert key_file.read_text().strip() == key
    assert kolo("serve", "--show-key").stdout.strip() == key


# ------------------------------------------------------------------------------------------ GPU pinning
def test_gpu_ids_read_nvidia_smi_and_doctor_formats() -> None:
    assert gpu_ids(SMI_LIST) == ["0", "1"]
    assert gpu_ids("GPU 0: A (UUID: x); GPU 1: B (UUID: y)") == ["0", "1"]  # docker_ctl.gpu_visible's detail
    assert gpu_ids("No devices were found") == []


def test_each_worker_gets_gpus_of_its_own() -> None:
    assert assign_gpus([], 3) == [None, None, None]  # no GPU: unpinned, on the CPU
    assert assign_gpus(["0", "1"], 2) == ["0", "1"]
    assert assign_gpus(["2", "3"], 1) == ["2,3"]  # one worker: every GPU, for a multi-process (--nproc) job
    assert assign_gpus(["0", "1", "2", "3", "4"], 2) == ["0,1,2", "3,4"]
    with pytest.raises(OptionsError) as e:
        assign_gpus(["0", "1"], 3)
    assert e.value.exit_code == 2 and "--workers 3: only 2 GPU(s) (0, 1)" in e.value.message
    assert "--gpus none" in e.value.hint


def test_local_detection_keeps_the_users_choice_then_asks_nvidia_smi(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert detect_gpus("local", "kolo")[0] == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert detect_gpus("local", "kolo")[0] == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus("local", "kolo") == ([], "no nvidia-smi on this machine")
    # the stand-in nvidia-smi (no GPU here): prints what the real one prints for `-L`
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] && printf '%s' '{SMI_LIST}'\n")
    smi.chmod(0o755)
    assert detect_gpus("local", "kolo")[0] == ["0", "1"]


def test_the_pin_reaches_the_trainer_through_either_transport(tmp_path: Path) -> None:
    engine = db.open_db(tmp_path / "kolo.db")
    local = Worker(engine, tmp_path, "local", "kolo", workers=2, gpus=["0", "1"])
    seen: list[str] = []

    class Lines:  # a renderer that keeps the trainer's output lines
        def event(self, ev: dict) -> None:
            pass

        def log(self, line: str, stream: str) -> None:
            seen.append(line)

        def close(self) -> None:
            pass

    # a real subprocess through LocalTransport.run, the call a job makes: it sees worker 1's GPU
    argv = ["python", "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))"]
    assert local.transport(1).run(argv, Lines()) == 0 and seen == ["1"]
    assert Worker(engine, tmp_path, "local", "kolo").transport(0).run(argv, Lines()) == 0
    assert seen[-1] == os.environ.get("CUDA_VISIBLE_DEVICES", "None")  # unpinned: the server's own environment

    docker = Worker(engine, tmp_path, "docker", "kolo-x", workers=2, gpus=["0", "3"])
    cmd = docker.transport(1).command(["python", "-m", "kolo_trainer", "train"])
    at = cmd.index("kolo-x")
    assert cmd[at + 1:] == ["python", "-m", "kolo_trainer", "train"]
    assert [cmd[i + 1] for i in range(at) if cmd[i] == "-e" and cmd[i + 1].startswith("CUDA_")] == [
        "CUDA_VISIBLE_DEVICES=3"]
    unpinned = Worker(engine, tmp_path, "docker", "kolo-x").transport(0).command(["python"])
    assert not [a for a in unpinned if a.startswith("CUDA_VISIBLE_DEVICES")]


def test_serve_refuses_more_workers_than_gpus_before_writing_anything(kolo, data_root: Path) -> None:
    r = kolo("--runtime", "local", "serve", "--workers", "3", "--gpus", "0,1", "--port", "1")
    assert r.returncode == 2 and "only 2 GPU(s)" in r.stderr and "Traceback" not in r.stderr
    r = kolo("--runtime", "local", "serve", "--gpus", "0,0", "--port", "1")
    assert r.returncode == 2 and "--gpus '0,0'" in r.stderr
    assert not (data_root / "server").exists()


def test_serve_tells_which_worker_has_which_gpu(serve) -> None:
    srv = serve("--workers", "2", "--gpus", "0,1")
    assert "worker 0 -> CUDA_VISIBLE_DEVICES=0, worker 1 -> CUDA_VISIBLE_DEVICES=1 (--gpus)" in srv.output()


# ------------------------------------------------------------------------------------------ doctor
def test_doctor_knows_a_kolo_serve_from_another_program(serve) -> None:
    from kolo_cli.commands.lifecycle import _kolo_serve_answers
    from server_helpers import free_port

    assert _kolo_serve_answers(serve().port)
    assert not _kolo_serve_answers(free_port())
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        assert not _kolo_serve_answers(other.server_address[1])
    finally:
        other.shutdown()


# ------------------------------------------------------------------------------------------ --engine
def test_each_worker_takes_only_the_jobs_its_engine_may_run(tmp_path: Path) -> None:
    """A job tied to an engine (its run is there: resume, export) goes to that engine's workers only; a new one
    goes to the first free worker, which records its engine; a RAG build stays home."""
    from kolo_cli.docker_ctl import Endpoint
    from kolo_cli.server.worker import HOME, Slot

    engine = db.open_db(tmp_path / "kolo.db")
    box = Endpoint("ssh://me@gpu-box", via="--engine ssh://me@gpu-box")
    w = Worker(engine, tmp_path, "local", "kolo", slots=[Slot(HOME), Slot("ssh://me@gpu-box", "0", box, True)])
    assert w.workers == 2 and w.engines() == [HOME, "ssh://me@gpu-box"]
    with db.Session(engine) as s:
        for task, on in (("train", None), ("rag", None), ("export", "ssh://me@gpu-box"), ("train", HOME)):
            s.add(db.Job(name=f"{task} on {on}", training_type="lora", task=task, engine=on))
        s.commit()
    assert w._claim(1) == 1 and db.get_job(engine, 1).engine == "ssh://me@gpu-box"
    assert w._claim(1) == 3 and db.get_job(engine, 3).status == db.EXPORTING
    assert w._claim(1) is None  # the RAG build and the job of home are not the box's
    assert (w._claim(0), w._claim(0), w._claim(0)) == (2, 4, None)
    assert db.get_job(engine, 2).engine == HOME
    # the box's worker runs the trainer through `docker exec` on the box's engine, pinned to its GPU
    t = w.transport(1)
    assert t.engine is box and t.host_data_root is None  # its data root is the box's own
    assert t.popen_kwargs()["env"]["DOCKER_HOST"] == "ssh://me@gpu-box"
    cmd = t.command(["python", "-m", "kolo_trainer", "train"])
    assert "CUDA_VISIBLE_DEVICES=0" in cmd and cmd[:2] == ["docker", "exec"]


def test_serve_refuses_a_bad_engine_before_writing_anything(kolo, data_root: Path) -> None:
    r = kolo("--runtime", "local", "serve", "--engine", "home", "--engine", "gpu://x", "--port", "1")
    assert r.returncode == 2 and "'home': that is the name of the server's own engine" in r.stderr, r.stderr
    r = kolo("--runtime", "local", "serve", "--engine", "gpu://x", "--port", "1")
    assert r.returncode == 2 and "--engine 'gpu://x' is not a Docker engine URL" in r.stderr, r.stderr
    gone = f"unix://{data_root.parent}/no-engine.sock"
    r = kolo("--runtime", "local", "serve", "--engine", gone, "--port", "1")
    assert r.returncode == 7 and r.stderr.startswith(f"error: --engine {gone}: "), r.stderr
    assert "Traceback" not in r.stderr
    assert not (data_root / "server").exists()
