"""The argv builder, the local transport (real subprocesses, real signals) and the renderer."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kolo_cli.render import PlainRenderer, metrics_text
from kolo_cli.transport import DockerTransport, LocalTransport, trainer_argv
from kolo_trainer.options import ExportOptions, TrainOptions

DRIVER = Path(__file__).resolve().parents[2] / "transport_driver.py"


def test_one_builder_two_transports(tmp_path):
    explicit = {"epochs": 3, "weight_decay": 0.0, "output_dir": "it's a test"}
    docker = DockerTransport("kolo", run_id="r1")
    local = LocalTransport(tmp_path)
    d_argv = trainer_argv("train", TrainOptions, explicit, docker.data_root)
    l_argv = trainer_argv("train", TrainOptions, explicit, local.data_root)
    assert d_argv[1:-1] == l_argv[1:-1]  # the same trainer argv; only the data root differs
    assert d_argv[-1] == "/var/kolo_data" and l_argv[-1] == str(tmp_path.resolve())
    cmd = docker.command(d_argv)
    assert cmd[:2] == ["docker", "exec"] and cmd[cmd.index("kolo") + 1:] == d_argv
    assert "KOLO_RUN_ID=r1" in cmd and "-it" not in cmd and "-i" not in cmd
    assert local.command(l_argv) == [sys.executable] + l_argv[1:]
    assert trainer_argv("export", ExportOptions, {"output_dir": "r"}, "/d", extra=["--x"]) == [
        "python", "-m", "kolo_trainer", "export", "--output-dir=r", "--x", "--data-root", "/d"]


def _drive(tmp_path, *argv, **kw):
    return subprocess.Popen([sys.executable, str(DRIVER), "local", "-", str(tmp_path), "--", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_local_streams_events_and_returns_exit_code(tmp_path):
    prog = ("import sys, time; print('log line', flush=True); "
            "print('@@kolo {\"event\": \"stage\", \"stage\": \"convert\", \"status\": \"start\"}', flush=True); "
            "time.sleep(2); print('oops', file=sys.stderr); sys.exit(4)")
    p = _drive(tmp_path, "python", "-c", prog)
    assert p.stdout.readline() == "log line\n"
    t_first = time.monotonic()
    assert p.stdout.readline() == "[convert] start\n"
    out, err = p.communicate(timeout=30)
    assert time.monotonic() - t_first > 1.5  # the lines came live, 2 s before the process ended
    assert p.returncode == 4 and err == "oops\n"


def test_local_ctrl_c_stops_child_and_reports(tmp_path):
    marker = tmp_path / "child.pid"
    # 'up' is printed inside the try, so the SIGINT cannot arrive before the handler is in place
    prog = ("import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid()))\n"
            "try:\n    print('up', flush=True); time.sleep(600)\nexcept KeyboardInterrupt:\n"
            "    print('child got SIGINT', flush=True); sys.exit(130)")
    p = _drive(tmp_path, "python", "-c", prog, str(marker))
    assert p.stdout.readline() == "up\n"
    child = int(marker.read_text())
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130
    assert "child got SIGINT" in out
    assert "interrupted: stopped the trainer process" in err and "Traceback" not in err
    assert not Path(f"/proc/{child}").exists()


def test_plain_renderer_lines():
    out, err = io.StringIO(), io.StringIO()
    r = PlainRenderer(out, err)
    r.event({"event": "stage", "stage": "train", "status": "start"})
    r.event({"event": "progress", "stage": "train", "step": 3, "total": 10, "loss": 1.23456, "eval_loss": 1.5,
             "learning_rate": 1e-4, "tokens_per_s": 1234.5, "eta_s": 75})
    r.event({"event": "warning", "message": "low disk"})
    r.event({"event": "future-kind", "x": 1})  # ignored, not a crash
    r.log("plain", "stdout")
    assert out.getvalue().splitlines() == [
        "[train] start",
        "[train] step 3/10  loss 1.235  eval 1.5  lr 1.00e-04  1,234 tok/s  eta 1:15",
        "plain",
    ]
    assert err.getvalue() == "warning: low disk\n"


def test_metrics_text_handles_missing_fields():
    assert metrics_text({}) == ""
    assert metrics_text({"loss": 0.5, "epoch": 1.5}) == "loss 0.5  epoch 1.5"


def test_rich_renderer_runs_without_a_terminal():
    from kolo_cli.render import RichRenderer

    with RichRenderer() as r:
        r.event({"event": "stage", "stage": "train", "status": "start"})
        r.event({"event": "progress", "stage": "train", "step": 1, "total": 2, "loss": 2.0})
        r.log("[not markup] line")
        r.event({"event": "stage", "stage": "train", "status": "done"})
        r.event({"event": "stage", "stage": "verify", "status": "skip"})
        tasks = {t.description: t for t in r.progress.tasks}
    assert tasks["train"].completed == 2 and tasks["verify"].completed == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_local_child_dies_when_kolo_is_killed(tmp_path):
    """kolo SIGKILLed (OOM, a closed terminal): the trainer it started in a session of its own must not live on
    holding the run lock; it gets SIGTERM (which the real trainer answers with a checkpoint)."""
    marker = tmp_path / "child.pid"
    prog = ("import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid()))\n"
            "print('up', flush=True); time.sleep(600)")
    p = _drive(tmp_path, "python", "-c", prog, str(marker), start_new_session=True)
    assert p.stdout.readline() == "up\n"
    child = int(marker.read_text())
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)

    def running() -> bool:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")  # a zombie has died; nobody may be left to reap it here

    deadline = time.monotonic() + 20
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not running(), "the child outlived kolo"
    finally:
        if running():
            os.kill(child, signal.SIGKILL)
