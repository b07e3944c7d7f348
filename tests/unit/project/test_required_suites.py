"""The CI rule: with KOLO_REQUIRE_DOCKER=1 a skipped docker test is a failure (and likewise for e2e).

Runs pytest itself in a subprocess on the real Docker suite, pointed at a dead Docker socket so that its session
fixture skips: without the variable the run passes with a skip, with it the same run fails and says why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _pytest(tmp_path, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("KOLO_REQUIRE")}
    e.update(DOCKER_HOST=f"unix://{tmp_path}/dead.sock", **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/docker/test_docker_suite.py::test_logs"],
                          cwd=REPO, env=e, capture_output=True, text=True, timeout=300)


def test_docker_skip_is_a_skip_locally_and_a_failure_when_required(tmp_path):
    r = _pytest(tmp_path)
    assert r.returncode == 0, r.stdout[-2000:]
    assert "1 skipped" in r.stdout and "no Docker daemon answers" in r.stdout
    r = _pytest(tmp_path, KOLO_REQUIRE_DOCKER="1")
    assert r.returncode == 1, r.stdout[-2000:]
    assert "KOLO_REQUIRE_DOCKER=1 requires the docker suite" in r.stdout
    r = _pytest(tmp_path, KOLO_REQUIRE_E2E="1")  # the e2e rule does not touch docker tests
    assert r.returncode == 0, r.stdout[-2000:]


def test_a_hang_fails_its_test(pytestconfig) -> None:
    """pytest-timeout is active with a per-test limit, so a hung test fails instead of stalling CI."""
    assert pytestconfig.pluginmanager.hasplugin("timeout"), "pytest-timeout is not installed (scripts/install.sh --dev)"
    assert 0 < float(pytestconfig.getini("timeout")) <= 1800


def test_test_module_names_are_unique() -> None:
    """pytest's default import mode imports test modules by basename: two test_x.py files stop the whole run."""
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert not {n for n in names if names.count(n) > 1}
