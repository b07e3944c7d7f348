"""Shared fixtures and the "a required suite must not skip" rule.

* ``data_root``: a fresh data root (data/ models/ outputs/) in a temp folder.
* ``kolo``: runs the real `kolo` command in a subprocess (the console script of this venv) with that data root,
  returning a CompletedProcess; ``kolo.popen(...)`` starts one without waiting.
* ``tiny_model``: the tiny demo model from ``kolo_trainer.tiny``, built once per session.

Skips that hide a missing prerequisite are fine on a laptop and wrong in CI: with ``KOLO_REQUIRE_DOCKER=1`` a
skipped test marked ``docker`` fails instead, and with ``KOLO_REQUIRE_E2E=1`` a skipped ``e2e`` test fails. This is
done once, here, for every suite (``pytest_runtest_makereport``), so individual tests just call ``pytest.skip``
with a clear reason. ``.ci/run`` sets both.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
KOLO = shutil.which("kolo", path=str(VENV_BIN)) or shutil.which("kolo")

# The Ctrl-C tests send SIGINT to kolo processes that pytest starts, as a user's terminal would. A shell without
# job control starts background commands (`bash .ci/run &`, nohup, some CI runners) with SIGINT *ignored*; an
# ignored signal stays ignored across exec, and Python then installs no KeyboardInterrupt handler, so every kolo
# started by the tests would silently ignore Ctrl-C. Give this process a real handler: on exec the children get
# the default disposition back, i.e. the environment of an interactive user.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: marker -> the environment variable that turns its skips into failures
REQUIRED_SUITES = {"docker": "KOLO_REQUIRE_DOCKER", "e2e": "KOLO_REQUIRE_E2E", "browser": "KOLO_REQUIRE_BROWSER"}


def required_markers(item: pytest.Item) -> list[str]:
    return [m for m, env in REQUIRED_SUITES.items()
            if os.environ.get(env) == "1" and item.get_closest_marker(m) is not None]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    if not report.skipped:
        return
    required = required_markers(item)
    if not required:
        return
    if hasattr(report, "wasxfail"):
        return  # an expected failure is not a hidden one
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    envs = ", ".join(f"{REQUIRED_SUITES[m]}=1" for m in required)
    report.outcome = "failed"
    report.longrepr = f"skipped, but {envs} requires the {'/'.join(required)} suite to run: {reason}"


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "kolo_data"
    for sub in ("data", "models", "outputs"):
        (root / sub).mkdir(parents=True)
    return root


class KoloRunner:
    """Runs the installed `kolo` console script in a subprocess, the way a user does."""

    def __init__(self, data_root: Path, cwd: Path):
        self.data_root = data_root
        self.cwd = cwd
        self.env: dict[str, str] = {}

    def _env(self, env: dict[str, str] | None) -> dict[str, str]:
        e = dict(os.environ)
        # A developer's own settings must not leak into tests; each test states what it needs.
        for k in ("KOLO_RUNTIME", "KOLO_CONTAINER", "KOLO_IMAGE", "KOLO_MOUNTS_RO", "KOLO_NETWORK", "KOLO_DEBUG"):
            e.pop(k, None)
        e.update(KOLO_DATA=str(self.data_root), NO_COLOR="1", COLUMNS="200", TERM="dumb")
        e.update(self.env)
        e.update(env or {})
        return e

    def argv(self, *args: str) -> list[str]:
        assert KOLO, "the kolo console script is not installed in this environment"
        return [KOLO, *map(str, args)]

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
                 input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), cwd=self.cwd, env=self._env(env), capture_output=True, text=True,
                              timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL)

    def popen(self, *args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.argv(*args), cwd=self.cwd, env=self._env(env), text=True, **kw)


@pytest.fixture(scope="session")
def make_kolo() -> type[KoloRunner]:
    """KoloRunner itself, for module-scoped fixtures with a data root of their own. (A test module cannot import it:
    with one conftest.py per suite folder, ``import conftest`` gives whichever was collected first.)"""
    return KoloRunner


@pytest.fixture()
def kolo(data_root: Path, tmp_path: Path) -> KoloRunner:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return KoloRunner(data_root, cwd)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama + SentencePiece demo model (built once; copy it into a data root's models/ to use it)."""
    pytest.importorskip("torch", reason="the tiny model needs torch (pip install -e 'container[train]')")
    from kolo_trainer import tiny

    return tiny.build(tmp_path_factory.mktemp("models") / "tiny")
