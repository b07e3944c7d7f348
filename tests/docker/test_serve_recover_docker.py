"""A `kolo serve --runtime docker` that dies mid-job (SIGKILL, as the OOM killer would) leaves its trainer running
in the container: the engine keeps a `docker exec`'d process when its client dies, and that trainer would hold the
GPU and the run's lock. The next start finds it by the job's own run id (``Worker.run_id``, the same across
restarts) and stops it as a cancel does (SIGINT: it saves a checkpoint), then marks the job interrupted.

Real parts: the suite's container (`kolo up`, conftest.py), the real trainer through `docker exec`, a real server
killed with SIGKILL and started again on the same data root.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "e2e"))
sys.path.insert(0, str(TESTS / "server"))
import train_helpers as th  # noqa: E402
from server_helpers import FAST, Server  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.server]

#: Runs in the container: pids of live trainers (`python -m kolo_trainer train`). The name is put together so that
#: this script's own argv does not match.
IN_CONTAINER = r"""
import os
name = b"kolo_" + b"trainer"
for d in os.listdir("/proc"):
    try:
        argv = open("/proc/%s/cmdline" % d, "rb").read().split(b"\0")
        state = open("/proc/%s/stat" % d, "rb").read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        continue
    if d.isdigit() and state != b"Z" and name in argv and b"train" in argv:
        print(d)
"""


def _trainers(container: str) -> list[int]:
    r = subprocess.run(["docker", "exec", container, "python", "-c", IN_CONTAINER], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return sorted(int(p) for p in r.stdout.split())


def _wait_step(client, job_id: int, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (st := client.get_status(job_id))["status"] in ("queued", "running") and (st["step"] or 0) < step:
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    assert st["status"] == "running", st


def test_a_restarted_server_stops_the_trainer_its_killed_predecessor_left(kolo, running, data_root: Path,
                                                                          tiny_model: Path) -> None:
    th.setup_root(data_root, tiny_model)
    container = running["KOLO_CONTAINER"]
    srv = Server(kolo, data_root, [], runtime="docker").start(timeout=120)
    c = srv.client()
    ds = c.upload_dataset(data_root / "data" / "qa.jsonl", name="qa")["id"]
    job = c.create_job(name="orphan", dataset_id=ds, epochs=1000, max_steps=2000, save_steps=5, **FAST)
    _wait_step(c, job["id"], 6)
    srv.kill()
    time.sleep(2)
    left = _trainers(container)
    assert left, "no trainer outlived the killed server: this test no longer shows the orphan it is about"

    again = Server(kolo, data_root, [], runtime="docker").start(timeout=120)
    try:
        c = again.client()
        final = c.wait(job["id"], timeout=120, poll_s=0.5)
        assert final["status"] == "interrupted", final
        assert _trainers(container) == [], "the orphan trainer is still running in the container"
        log = c.logs(job["id"])
        assert "kolo serve started again: stopped 1 process(es)" in log, log[-2000:]
        run = data_root / "outputs" / f"job-{job['id']}"
        manifest = json.loads((run / "kolo.json").read_text())
        assert manifest["status"] == "interrupted", manifest.get("status")  # the trainer ended cleanly on SIGINT
        step = manifest["train"]["global_step"]
        assert (run / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    finally:
        again.stop()
