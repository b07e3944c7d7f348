"""The host CLI against a REAL Docker engine: lifecycle, exec streaming, exit codes, Ctrl-C, error messages.

Every container here is created by `kolo up` (the test image from conftest.py: busybox + the host's Python,
read-only) and removed afterwards. Nothing is faked: real dockerd, real `docker exec`, real signals.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

DRIVER = Path(__file__).resolve().parents[1] / "transport_driver.py"


def _inspect(name: str) -> dict | None:
    r = subprocess.run(["docker", "inspect", name], capture_output=True, text=True)
    return json.loads(r.stdout)[0] if r.returncode == 0 else None


def _ps(name: str) -> str:
    return subprocess.run(["docker", "exec", name, "ps", "-o", "pid,args"], capture_output=True, text=True).stdout


def _has_nvidia_runtime() -> bool:
    r = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True)
    return "nvidia" in json.loads(r.stdout or "{}")


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), r.stderr
    return r.stderr


# ---------------------------------------------------------------------------------------------- lifecycle


def test_up_status_stop_start_down(kolo, docker_env, container_name, data_root):
    kolo.env.update(docker_env)
    (data_root / "data" / "keep.jsonl").write_text('{"keep": 1}\n')

    r = kolo("up")
    assert r.returncode == 0, r.stderr
    assert "created and started" in r.stdout
    info = _inspect(container_name)
    assert info["State"]["Running"]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/var/kolo_data"]["Source"] == str(data_root) and mounts["/var/kolo_data"]["RW"]
    assert all(not m["RW"] for d, m in mounts.items() if d != "/var/kolo_data")
    assert info["HostConfig"]["NetworkMode"] == "none"
    # GPUs are requested exactly when the engine has an NVIDIA runtime (--gpus auto)
    assert bool(info["HostConfig"].get("DeviceRequests")) == _has_nvidia_runtime()

    assert "already running" in kolo("up").stdout  # idempotent

    st = json.loads(kolo("status", "--json").stdout)
    assert st["daemon"] and st["exists"] and st["state"] == "running"
    assert st["image"] == docker_env["KOLO_IMAGE"]
    assert st["mounted_data_root"] == str(data_root)
    if not _has_nvidia_runtime():
        assert st["gpu"] is False and "nvidia-smi" in st["gpu_detail"]
    human = kolo("status")
    assert human.returncode == 0 and "running" in human.stdout and container_name in human.stdout

    r = kolo("stop")
    assert r.returncode == 0 and "stopped" in r.stdout
    assert _inspect(container_name)["State"]["Status"] == "exited"
    assert json.loads(kolo("status", "--json").stdout)["state"] == "exited"

    r = kolo("start")
    assert r.returncode == 0 and _inspect(container_name)["State"]["Running"]

    r = kolo("down")
    assert r.returncode == 0 and "removed" in r.stdout
    assert _inspect(container_name) is None
    assert (data_root / "data" / "keep.jsonl").read_text() == '{"keep": 1}\n'  # never the data
    assert json.loads(kolo("status", "--json").stdout)["exists"] is False


def test_exact_name_lookup_never_substring(kolo, docker_env, container_name):
    """A container named '<name>_old' must not be taken for '<name>' (Kolo's substring bug)."""
    kolo.env.update(docker_env)
    decoy = container_name + "_old"
    r = kolo("up", env={"KOLO_CONTAINER": decoy})
    try:
        assert r.returncode == 0, r.stderr
        st = json.loads(kolo("status", "--json").stdout)
        assert st["container"] == container_name and st["exists"] is False
        r = kolo("stop")
        assert r.returncode == 7 and "does not exist" in r.stderr and "kolo up" in r.stderr
        assert _inspect(decoy)["State"]["Running"]  # the decoy was not touched
    finally:
        subprocess.run(["docker", "rm", "-f", decoy], capture_output=True)


def test_up_with_missing_image_names_kolo_build(kolo, docker_env):
    kolo.env.update(docker_env)
    r = kolo("up", "--image", "kolo-test:does-not-exist")
    assert r.returncode == 7
    assert "does not exist" in _one_line_error(r) and "kolo build" in r.stderr


# ---------------------------------------------------------------------------------------------- exec transport


def _driver(kolo, container: str, data_root: Path, *argv: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(DRIVER), "docker", container, str(data_root), "--", *argv],
                            env=kolo._env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


STREAMER = """
import sys, time
print("first line", flush=True)
print('@@kolo {"event": "progress", "stage": "train", "step": 1, "total": 2, "loss": 2.5}', flush=True)
time.sleep(3)
print("to stderr", file=sys.stderr, flush=True)
print("last line", flush=True)
sys.exit(int(sys.argv[1]))
"""


def test_exec_streams_live_and_propagates_exit_code(kolo, running, data_root):
    p = _driver(kolo, running["KOLO_CONTAINER"], data_root, "python", "-c", STREAMER, "5")
    first = p.stdout.readline()
    t_first = time.monotonic()
    assert first == "first line\n"
    assert p.stdout.readline() == "[train] step 1/2  loss 2.5\n"  # a progress event, rendered
    out, err = p.communicate(timeout=30)
    # The process sleeps 3 s after its first lines: they must have arrived while it was still running
    # (measured from their arrival, so a slow container start cannot make this flaky).
    assert time.monotonic() - t_first > 2.5, "output was buffered until the process ended"
    assert p.returncode == 5  # the in-container exit code is the host exit code
    assert out == "last line\n" and err == "to stderr\n"


def test_argv_is_data_not_shell(kolo, running, data_root):
    weird = "it's a \"test\"; touch /tmp/pwned $(id) `id`"
    p = _driver(kolo, running["KOLO_CONTAINER"], data_root, "python", "-c",
                "import sys, os; print(repr(sys.argv[1])); print(os.path.exists('/tmp/pwned'))", weird)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert out.splitlines() == [repr(weird), "False"]


def test_secrets_pass_by_name_not_in_argv(kolo, running, data_root, monkeypatch):
    p = subprocess.run(
        [sys.executable, str(DRIVER), "docker", running["KOLO_CONTAINER"], str(data_root), "--", "python", "-c",
         "import os; print(os.environ.get('HF_TOKEN'))"],
        env={**kolo._env(None), "HF_TOKEN": "hf_secret_value_123"}, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == "hf_secret_value_123"
    from kolo_cli.transport import DockerTransport

    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    cmd = DockerTransport(running["KOLO_CONTAINER"]).command(["python", "-m", "kolo_trainer", "train"])
    assert "HF_TOKEN" in cmd and not any("hf_secret_value_123" in a for a in cmd)


SLEEPER = """
import time, sys
try:  # printed inside the try, so the SIGINT cannot arrive before the handler is in place
    print("trainer started", flush=True)
    time.sleep(600)
except KeyboardInterrupt:
    print("trainer got SIGINT", flush=True)
    sys.exit(130)
"""


def test_ctrl_c_stops_the_process_inside_the_container(kolo, running, data_root):
    name = running["KOLO_CONTAINER"]
    p = _driver(kolo, name, data_root, "python", "-c", SLEEPER)
    assert p.stdout.readline() == "trainer started\n"
    assert "time.sleep(600)" in _ps(name)
    p.send_signal(signal.SIGINT)  # what a terminal Ctrl-C delivers to kolo
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert "trainer got SIGINT" in out  # it was interrupted, not killed: it could save its state
    assert "stopped 1 process(es) inside container" in err and "Traceback" not in err
    assert "time.sleep(600)" not in _ps(name)  # nothing left running (and holding the GPU)


def test_ctrl_c_kills_a_trainer_that_ignores_sigint(kolo, running, data_root):
    name = running["KOLO_CONTAINER"]
    stubborn = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); " \
               "time.sleep(600)"
    p = subprocess.Popen([sys.executable, str(DRIVER), "docker", name, str(data_root), "--", "python", "-c", stubborn],
                         env={**kolo._env(None), "KOLO_STOP_GRACE_S": "1"}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "up\n"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert "killed after 1s" in err
    assert "time.sleep(600)" not in _ps(name)


# ---------------------------------------------------------------------------------------------- error messages


def test_not_running_and_missing_messages(kolo, running, data_root):
    name = running["KOLO_CONTAINER"]
    (data_root / "data" / "data.jsonl").write_text("{}\n")
    assert kolo("stop").returncode == 0
    r = kolo("train", "--epochs", "1")
    assert r.returncode == 7
    assert f"container '{name}' is not running" in _one_line_error(r) and "kolo start" in r.stderr
    assert kolo("down").returncode == 0
    r = kolo("train", "--epochs", "1")
    assert r.returncode == 7
    assert f"container '{name}' does not exist" in _one_line_error(r) and "kolo up" in r.stderr
    r = kolo("shell")
    assert r.returncode == 7 and "kolo up" in r.stderr


def test_options_are_validated_before_the_container_is_touched(kolo, docker_env):
    """No container exists at all: bad options must still be reported as option problems, all at once."""
    kolo.env.update(docker_env)
    r = kolo("train", "--lora-rank", "0", "--learning-rate", "-1", "--train-data", "data/missing.jsonl")
    assert r.returncode == 2
    err = _one_line_error(r)
    assert "3 problems" in err and "--lora-rank" in err and "--learning-rate" in err and "missing.jsonl" in err
    assert "container" not in err


def test_daemon_down_message(kolo, tmp_path, docker_env):
    kolo.env.update(docker_env)
    dead = f"unix://{tmp_path}/no-such-docker.sock"
    for args in (("status",), ("up",), ("stop",), ("logs",)):
        r = kolo(*args, env={"DOCKER_HOST": dead}, timeout=60)
        if args == ("status",):
            assert r.returncode == 0
            assert "unreachable" in r.stdout
            continue
        assert r.returncode == 7, (args, r.stderr)
        err = _one_line_error(r)
        assert "cannot reach the Docker daemon" in err and "start Docker Desktop / dockerd" in err
    r = kolo("--debug", "stop", env={"DOCKER_HOST": dead}, timeout=60)
    assert "Traceback" in r.stderr  # --debug shows one


def test_doctor_reports_each_check_with_its_fix(kolo, running):
    r = kolo("doctor", env={"KOLO_MIN_FREE_GIB": "0"})
    rows = {line for line in r.stdout.splitlines() if "NVIDIA container runtime" in line}
    assert rows, r.stdout
    if _has_nvidia_runtime():
        assert all("✓" in row for row in rows), r.stdout
    else:
        assert r.returncode == 1  # any ✗ fails the command
        assert "✓" in r.stdout and "✗" in r.stdout
        assert "NVIDIA Container Toolkit" in r.stdout  # the exact fix for the ✗
    r = kolo("doctor", "--no-gpu", env={"KOLO_MIN_FREE_GIB": "0"})
    # Without the GPU checks only the ports can fail on a busy machine; each ✗ still names a fix.
    assert ("✗" not in r.stdout) == (r.returncode == 0), r.stdout
    assert "Docker daemon reachable" in r.stdout and "NVIDIA" not in r.stdout
    r = kolo("doctor", "--no-gpu", env={"KOLO_MIN_FREE_GIB": "1000000"})
    assert r.returncode == 1 and "free at least 1e+06 GiB" in r.stdout


def test_logs(kolo, running):
    r = kolo("logs", "--tail", "5")
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------------------- the real trainer


def test_trainer_entry_point_runs_inside_the_container(kolo, running, data_root):
    """`python -m kolo_trainer` itself, from the bind-mounted checkout, through the transport."""
    p = _driver(kolo, running["KOLO_CONTAINER"], data_root, "python", "-m", "kolo_trainer", "--help")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "verbs:" in out and "train" in out


def test_kolo_train_runtime_docker_reaches_the_trainer(kolo, running, data_root):
    """A valid `kolo train --runtime docker`: the argv arrives intact in the container's trainer, which
    validates it with its own parser. --help there proves the entry point; a bad value smuggled past the host
    (the trainer's own validation) is refused in the container with exit 2."""
    from kolo_cli.transport import DockerTransport, trainer_argv
    from kolo_trainer.options import TrainOptions

    name = running["KOLO_CONTAINER"]
    t = DockerTransport(name, host_data_root=data_root)
    argv = trainer_argv("train", TrainOptions, {}, t.data_root, extra=["--help"])
    p = _driver(kolo, name, data_root, *argv)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "--lora-rank" in out and "--weight-decay" in out
    argv = trainer_argv("train", TrainOptions, {}, t.data_root, extra=["--lora-rank", "0"])
    p = _driver(kolo, name, data_root, *argv)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, out + err
    assert "lora-rank" in err and "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_on_a_real_kolo_train_in_the_container(kolo, running, data_root, tiny_model):
    """The whole path users take: `kolo train` (runtime docker) with the real trainer on the tiny model, SIGINT to
    the host kolo process mid-training. The trainer inside the container must see it (checkpoint + manifest
    'interrupted'), kolo must exit 130 saying it stopped the process, and nothing may be left running."""
    import shutil

    shutil.copytree(tiny_model, data_root / "models" / "tiny")
    shutil.copy(Path(__file__).resolve().parents[2] / "container" / "kolo_trainer" / "assets" / "example.jsonl",
                data_root / "data" / "example.jsonl")
    p = kolo.popen("train", "--base-model", "models/tiny", "--train-data", "data/example.jsonl",
                   "--max-steps", "5000", "--save-steps", "4000", "--output-dir", "ctrl c run",
                   stderr=subprocess.STDOUT)
    seen = []
    deadline = time.monotonic() + 240
    for line in p.stdout:
        seen.append(line)
        if line.startswith("[train] step 2/"):
            break
        assert time.monotonic() < deadline, "".join(seen)
    else:
        pytest.fail("training never reached step 2:\n" + "".join(seen))
    assert "kolo_trainer train" in _ps(running["KOLO_CONTAINER"])  # it really runs in the container
    p.send_signal(signal.SIGINT)
    rest, _ = p.communicate(timeout=180)
    assert p.returncode == 130, rest
    assert "stopped 1 process(es) inside container" in rest and "Traceback" not in rest
    assert "kolo_trainer" not in _ps(running["KOLO_CONTAINER"])
    manifest = json.loads((data_root / "outputs" / "ctrl c run" / "kolo.json").read_text())
    assert manifest["status"] == "interrupted"


def test_shell_runs_an_interactive_shell_in_the_container(kolo, running):
    r = kolo("shell", input="echo hi-from-$(hostname)-in-$PWD; exit 3\n")
    assert r.returncode == 3, r.stderr
    assert "hi-from-" in r.stdout and "-in-/var/kolo_data" in r.stdout


def test_build_streams_and_propagates_failure(kolo, test_image, tmp_path):
    """`kolo build` with --context/--image (no registry here: FROM the local test image, no RUN step)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    tag = f"kolo-test-build:{uuid.uuid4().hex[:8]}"
    (ctx / "Dockerfile").write_text(f"FROM {test_image}\nLABEL org.kolo.test=build\n")
    try:
        r = kolo("build", "--context", str(ctx), "--image", tag, "--no-compose", timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("$ ") and "docker build -t " + tag in r.stdout.splitlines()[0]
        labels = json.loads(subprocess.run(["docker", "image", "inspect", tag, "--format", "{{json .Config.Labels}}"],
                                           capture_output=True, text=True).stdout)
        assert labels["org.kolo.test"] == "build"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
    (ctx / "Dockerfile").write_text("FROM kolo-test-no-such-base:never\n")
    r = kolo("build", "--context", str(ctx), "--image", tag, "--no-compose", timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    r = kolo("build", "--context", str(tmp_path / "nowhere"))
    assert r.returncode == 7 and "no Dockerfile" in r.stderr


def test_train_refuses_a_data_root_the_container_does_not_mount(kolo, running, tmp_path):
    """Host-side checks looked at one folder; the container would read another: refuse, naming both."""
    other = tmp_path / "other_root"
    (other / "data").mkdir(parents=True)
    (other / "data" / "data.jsonl").write_text("{}\n")
    r = kolo("--data-root", str(other), "train", "--epochs", "1")
    assert r.returncode == 7
    err = _one_line_error(r)
    assert str(other) in err and str(kolo.data_root) in err and "kolo down && kolo up" in err
