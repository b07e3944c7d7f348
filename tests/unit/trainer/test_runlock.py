"""The run lock: refused while a live process holds it, taken over when its process is gone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kolo_trainer.errors import OutputExistsError
from kolo_trainer.runlock import RunLock, is_stale

HOLD = """
import sys, time
from kolo_trainer.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(run: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_acquire_writes_holder_and_release_removes_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    lock = RunLock(run).acquire()
    data = json.loads((run / ".lock").read_text())
    assert data["pid"] == os.getpid() and data["host"] == socket.gethostname() and data["started"]
    lock.release()
    assert not (run / ".lock").exists()


def test_second_holder_is_refused_with_pid_and_hint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    p = _holder(run)
    try:
        with pytest.raises(OutputExistsError) as e:
            RunLock(run, "outputs/run").acquire()
        assert f"pid {p.pid}" in e.value.message and "outputs/run" in e.value.message
        assert "--output-dir" in e.value.hint
    finally:
        p.kill()
        p.wait()
    # The holder died (SIGKILL: no clean-up ran): its lock file remains, naming a dead pid, and is taken over.
    assert json.loads((run / ".lock").read_text())["pid"] == p.pid
    lock = RunLock(run).acquire()
    assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_stale_lock_file_from_dead_pid_is_taken_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    dead = _dead_pid()
    (run / ".lock").write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "started": "x"}))
    assert is_stale(json.loads((run / ".lock").read_text()))
    with RunLock(run):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()


def test_lock_of_a_live_pid_is_respected_even_without_flock(tmp_path: Path) -> None:
    """A lock file naming a live process on this host is honoured even when nobody holds the flock (file systems
    where flock is a no-op): the JSON content is the fallback."""
    run = tmp_path / "run"
    run.mkdir()
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(json.dumps({"pid": p.pid, "host": socket.gethostname(), "started": "x"}))
        with pytest.raises(OutputExistsError):
            RunLock(run).acquire()
    finally:
        p.kill()
        p.wait()
    time.sleep(0.05)
    with RunLock(run):
        pass


def test_lock_from_another_host_cannot_be_judged_stale() -> None:
    assert not is_stale({"pid": 1, "host": socket.gethostname() + "-elsewhere", "started": "x"})
    assert is_stale(None) and is_stale({"pid": "garbage", "host": socket.gethostname()})


def test_a_zombie_or_a_reused_pid_does_not_hold_the_lock() -> None:
    """os.kill(pid, 0) succeeds for both, which left a crashed run's lock held forever in CI (an unreaped
    trainer) and after a container restart (pids start again from 1)."""
    import socket
    import subprocess
    import time

    from kolo_trainer import runlock as lock

    host = socket.gethostname()
    child = subprocess.Popen(["sleep", "0"])
    deadline = time.monotonic() + 10
    while lock._proc_stat(child.pid)[0] != "Z" and time.monotonic() < deadline:  # exited, not yet reaped
        time.sleep(0.05)
    try:
        assert lock._proc_stat(child.pid)[0] == "Z"
        assert lock.is_stale({"pid": child.pid, "host": host})
    finally:
        child.wait()
    live = subprocess.Popen(["sleep", "30"])
    try:
        real_start = lock._proc_stat(live.pid)[1]
        assert not lock.is_stale({"pid": live.pid, "host": host, "start": real_start})
        assert lock.is_stale({"pid": live.pid, "host": host, "start": str(int(real_start) + 1)}), \
            "a process that only reuses the pid was taken for the lock holder"
        assert not lock.is_stale({"pid": live.pid, "host": host}), "an old lock without a start time"
    finally:
        live.kill()
        live.wait()


def test_a_foreign_lock_is_honoured_unless_the_caller_hands_the_work_over(tmp_path):
    """A lock written in the container (another hostname, flock free as seen from here) is live for `kolo delete`
    on the host, and left to the trainer (which runs where its pid can be checked) before `docker exec`."""
    import json as _json

    from kolo_trainer.runlock import live_holder

    (tmp_path / ".lock").write_text(_json.dumps({"pid": 9, "host": "kolo-container-1", "start": "1"}))
    assert live_holder(tmp_path)["host"] == "kolo-container-1"
    assert live_holder(tmp_path, foreign_is_live=False) is None


def test_a_lock_naming_our_pid_with_another_start_time_is_a_predecessors(tmp_path):
    """A restarted container numbers processes from 1 again: the new trainer can get the pid its crashed
    predecessor wrote into the lock. The start time tells them apart (seen in CI: pid 8 both times)."""
    import json as _json
    import os as _os
    import socket as _socket

    from kolo_trainer.runlock import RunLock, live_holder

    (tmp_path / ".lock").write_text(_json.dumps({"pid": _os.getpid(), "host": _socket.gethostname(), "start": "1"}))
    assert live_holder(tmp_path) is None
    with RunLock(tmp_path):
        assert live_holder(tmp_path)["pid"] == _os.getpid()  # now it is really ours (and flocked)
