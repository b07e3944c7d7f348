"""Global options shared by every verb (set by the root callback in cli.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: Where the data root is mounted inside the container.
CONTAINER_DATA_ROOT = "/var/kolo_data"


@dataclass
class State:
    runtime: str = field(default_factory=lambda: os.environ.get("KOLO_RUNTIME", "docker"))
    data_root: Path = field(default_factory=lambda: Path(os.environ.get("KOLO_DATA", "./kolo_data")))
    container: str = field(default_factory=lambda: os.environ.get("KOLO_CONTAINER", "kolo"))
    debug: bool = False


STATE = State()
