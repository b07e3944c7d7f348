"""The Training Manager's fixtures: a real `kolo serve` (uvicorn) on 127.0.0.1 and a free port, over a real data
root with its SQLite file, running real jobs on the tiny model with the local runtime.

* ``serve``: a factory ``serve(*extra_args) -> Server``; every server a test starts is stopped when it ends.
* ``root``: a data root holding the tiny model (``models/tiny``) and the Q/A file of the training tests.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("fastapi", reason="kolo serve needs the server extra (pip install -e 'host[server]')")

from server_helpers import Server  # noqa: E402
from train_helpers import setup_root  # noqa: E402


@pytest.fixture()
def serve(data_root: Path, kolo) -> Iterator:
    started: list[Server] = []

    def start(*args: str, root: Path | None = None) -> Server:
        srv = Server(kolo, root or data_root, list(args))
        started.append(srv)
        srv.start()
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture()
def root(data_root: Path, tiny_model: Path) -> Path:
    return setup_root(data_root, tiny_model)
