"""The Docker suite's fixtures: a real engine, a locally built test image, one container per test.

No image can be pulled here, so the test image is made on the spot: a busybox rootfs (`docker import` of Debian's
static busybox) with the host's own Python environment bind-mounted read-only (/usr, /etc, the Python prefix,
the venv and this checkout, all at their host paths). `python -m kolo_trainer` then runs inside a real container
through real `docker exec`, with the real trainer code, without a registry. The container is created by `kolo up`
itself (with --image and read-only mounts), so the lifecycle code under test is the one users run.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUSYBOX_APPLETS = ("sh", "sleep", "ps", "cat", "ls", "kill", "which", "env", "true", "echo", "pgrep")


def docker_available() -> tuple[bool, str]:
    if shutil.which("docker") is None:
        return False, "the docker CLI is not installed"
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                           timeout=20)
    except subprocess.TimeoutExpired:
        return False, "`docker info` timed out"
    if r.returncode != 0:
        return False, "no Docker daemon answers (`docker info`: " + (r.stderr.strip().splitlines() or ["?"])[-1] + ")"
    return True, r.stdout.strip()


def ro_mounts() -> list[str]:
    """Host paths the test container needs read-only, at the same paths."""
    paths = ["/usr", "/etc", sys.base_prefix, sys.prefix, str(REPO)]
    for p in ("/lib", "/lib64"):
        if os.path.isdir(p) and not os.path.islink(p):
            paths.append(p)
    out: list[str] = []
    for p in paths:
        p = os.path.realpath(p)
        # a path inside another mounted path comes along with it
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out = [q for q in out if not q.startswith(p.rstrip("/") + "/")] + [p]
    return out


def _rootfs_tar(busybox: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode = tarfile.DIRTYPE, mode
            tar.addfile(ti)

        def add_link(name: str, target: str) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tar.addfile(ti)

        for d in ("bin", "tmp", "var", "root", "proc", "sys", "dev", "etc", "usr", "var/kolo_data"):
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        tar.add(busybox, arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            add_link(f"bin/{applet}", "busybox")
        # Where the host's /lib and /lib64 are symlinks into /usr (merged /usr), the image gets the same links.
        for p in ("lib", "lib64"):
            if os.path.islink("/" + p):
                add_link(p, os.readlink("/" + p).lstrip("/"))
    return buf.getvalue()


@pytest.fixture(scope="session")
def docker_engine() -> str:
    ok, detail = docker_available()
    if not ok:
        pytest.skip(f"Docker suite skipped: {detail}. Start dockerd (see docs/design.md) to run it.")
    return detail


@pytest.fixture(scope="session")
def test_image(docker_engine: str) -> str:
    """A busybox image whose PATH finds this venv's python (built once; tagged by content)."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        pytest.skip("busybox is not installed (apt-get install busybox-static)")
    tar = _rootfs_tar(busybox)
    path = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    tag = "kolo-test:" + hashlib.sha256(tar + path.encode()).hexdigest()[:12]
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode != 0:
        r = subprocess.run(
            ["docker", "import", "--change", f"ENV PATH={path}", "--change", "ENV HOME=/root",
             "--change", 'CMD ["/bin/sleep", "2147483647"]', "-", tag],
            input=tar, capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr.decode()
    return tag


@pytest.fixture()
def container_name() -> str:
    name = f"kolo-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)


@pytest.fixture()
def docker_env(test_image: str, container_name: str) -> dict[str, str]:
    """Environment for `kolo` that targets this test's container and image."""
    return {"KOLO_CONTAINER": container_name, "KOLO_IMAGE": test_image, "KOLO_NETWORK": "none",
            "KOLO_MOUNTS_RO": ",".join(ro_mounts()), "KOLO_RUNTIME": "docker", "KOLO_GPUS": "auto"}


@pytest.fixture()
def running(kolo, docker_env: dict[str, str]) -> dict[str, str]:
    """A running test container made by `kolo up`; returns the env that targets it."""
    kolo.env.update(docker_env)
    r = kolo("up")
    assert r.returncode == 0, r.stdout + r.stderr
    return docker_env
