"""Global options shared by every verb (set by the root callback in cli.py; env vars give the defaults)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: Where the data root is mounted inside the container.
CONTAINER_DATA_ROOT = "/var/kolo_data"
DEFAULT_CONTAINER = "kolo"
DEFAULT_IMAGE = "kolo:latest"


@dataclass
class State:
    runtime: str = field(default_factory=lambda: os.environ.get("KOLO_RUNTIME", "docker"))
    data_root: Path = field(default_factory=lambda: Path(os.environ.get("KOLO_DATA", "./kolo_data")))
    container: str = field(default_factory=lambda: os.environ.get("KOLO_CONTAINER", DEFAULT_CONTAINER))
    image: str = field(default_factory=lambda: os.environ.get("KOLO_IMAGE", DEFAULT_IMAGE))
    debug: bool = False

    def root(self) -> Path:
        """The data root as an absolute path (bind mounts and the local trainer need one; cwd may change)."""
        return Path(os.path.abspath(os.path.expanduser(self.data_root)))


STATE = State()
