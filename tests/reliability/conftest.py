"""Fixtures of the reliability suite (issue 7): bad input, kills, concurrency, secrets.

* Every test in this folder is marked ``reliability`` here (one place, so none can be forgotten).
* ``seeded_root``: a data root that already holds things a mistake could destroy: a valid dataset, a fake local
  model folder, a finished run (manifest + adapter) and an unfinished one. ``tree_digest`` hashes all of it.
* The Docker fixtures (real engine, busybox test image with the host's Python bind-mounted) are the Docker suite's
  own, imported from tests/docker/conftest.py rather than copied.
* ``dockerd_restart``: the test that restarts the Docker daemon runs after every other test of the session,
  because a restart stops every container on the engine (other suites' included).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from rel_helpers import GOOD_ROWS

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent

# The Docker suite's fixtures, bound into this conftest's namespace so pytest finds them for tests here too.
_spec = importlib.util.spec_from_file_location("kolo_docker_suite_fixtures", TESTS / "docker" / "conftest.py")
_docker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_docker)
docker_engine = _docker.docker_engine
test_image = _docker.test_image
container_name = _docker.container_name
docker_env = _docker.docker_env
running = _docker.running
ro_mounts = _docker.ro_mounts

# tests/e2e/train_helpers.py: the trainer tests' dataset and wait helpers (not a test module).
sys.path.insert(0, str(TESTS / "e2e"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "dockerd_restart: restarts the Docker daemon; always ordered last")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.reliability)
    # Stable partition: everything else keeps its order, the daemon restart goes last.
    items[:] = ([i for i in items if i.get_closest_marker("dockerd_restart") is None]
                + [i for i in items if i.get_closest_marker("dockerd_restart") is not None])


@pytest.fixture()
def seeded_root(data_root: Path) -> Path:
    """A data root with things worth protecting (see the module docstring)."""
    (data_root / "data" / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GOOD_ROWS))
    fake = data_root / "models" / "fake"
    fake.mkdir()
    # Enough for the trainer's option checks (a folder with config.json); never loaded by the bad-input cases.
    (fake / "config.json").write_text(json.dumps({"model_type": "llama"}))
    done = data_root / "outputs" / "done"
    (done / "adapter").mkdir(parents=True)
    (done / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    (done / "kolo.json").write_text(json.dumps({"status": "finished", "options": {"output_dir": "done"},
                                                "artifacts": ["adapter/adapter_model.safetensors"]}))
    half = data_root / "outputs" / "half"
    (half / "checkpoints").mkdir(parents=True)
    (half / "kolo.json").write_text(json.dumps({"status": "running", "options": {"output_dir": "half"}}))
    return data_root
