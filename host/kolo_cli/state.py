"""Global options shared by every verb (set by the root callback in cli.py; env vars give the defaults)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kolo_trainer.runfolder import DataRoot

#: Where the data root is mounted inside the container.
CONTAINER_DATA_ROOT = "/var/kolo_data"
DEFAULT_CONTAINER = "kolo"
DEFAULT_IMAGE = "kolo:latest"


@dataclass
class State:
    runtime: str = field(default_factory=lambda: os.environ.get("KOLO_RUNTIME", "docker"))
    # An empty KOLO_DATA counts as unset (shell convention), never as "the current folder".
    data_root: Path = field(default_factory=lambda: Path(os.environ.get("KOLO_DATA") or "./kolo_data"))
    container: str = field(default_factory=lambda: os.environ.get("KOLO_CONTAINER", DEFAULT_CONTAINER))
    image: str = field(default_factory=lambda: os.environ.get("KOLO_IMAGE", DEFAULT_IMAGE))
    debug: bool = False
    _data: "DataRoot | None" = field(default=None, repr=False)
    _data_for: "Path | None" = field(default=None, repr=False)

    def root(self) -> Path:
        """The data root as an absolute path (bind mounts and the local trainer need one; cwd may change)."""
        return self.data().path

    def data(self) -> "DataRoot":
        """The data root, resolved once (``kolo_trainer.runfolder``: links, runs, the lock, the manifest)."""
        from kolo_trainer.runfolder import DataRoot

        if self._data is None or self._data_for != self.data_root:
            self._data, self._data_for = DataRoot(self.data_root, display=str(self.data_root)), self.data_root
        return self._data


STATE = State()
