"""What every export stage shares: the run context, input fingerprints, "is this stage up to date", atomic files.

A stage is up to date when the manifest's ``export.stages[key]`` holds the same input fingerprint as now AND
every output it recorded is still there with the size and mtime it had when the stage finished. Fingerprints are
size + mtime_ns of the input files (plus the options that change the output), not a hash: hashing a multi-GB model
on every re-run would cost as much as the conversion it is meant to skip. ``--force`` ignores them.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .. import manifest, progress


def file_sig(p: Path) -> list:
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def tree_sig(root: Path) -> dict[str, list]:
    """size + mtime of every file under ``root`` (relative names), skipping our own temporary leftovers."""
    out: dict[str, list] = {}
    if root.is_file():
        return {root.name: file_sig(root)}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith(manifest.TMP_PREFIX):
            out[str(p.relative_to(root))] = file_sig(p)
    return out


@dataclass
class Context:
    """One export of one run: where things are, the options, the manifest as read at the start."""

    root: Path
    run_dir: Path
    name: str
    opts: Any  # ExportOptions
    data: dict  # the manifest
    stages: dict = field(default_factory=dict)  # export.stages, updated as stages finish
    timings: dict = field(default_factory=dict)

    @property
    def gguf_dir(self) -> Path:
        return self.run_dir / "gguf"

    def rel(self, p: Path) -> str:
        return os.path.relpath(p, self.run_dir)

    def gguf_path(self, quant: str) -> Path:
        return self.gguf_dir / f"{self.name}-{quant}.gguf"

    def up_to_date(self, key: str, fingerprint: Any) -> bool:
        if self.opts.force:
            return False
        rec = self.stages.get(key)
        if not rec or rec.get("fingerprint") != _jsonish(fingerprint):
            return False
        for rel, sig in (rec.get("outputs") or {}).items():
            p = self.run_dir / rel
            try:
                if file_sig(p) != sig:
                    return False
            except OSError:
                return False
        return True

    def record(self, key: str, fingerprint: Any, outputs: list[Path], **extra: Any) -> None:
        """Remember that stage ``key`` produced ``outputs`` from ``fingerprint`` (saved in the manifest now, so a
        crash in a later stage does not redo this one)."""
        self.stages[key] = {"fingerprint": _jsonish(fingerprint),
                            "outputs": {self.rel(p): file_sig(p) for p in outputs}, **extra}
        self.save(stages=self.stages)

    def save(self, **export_fields: Any) -> None:
        manifest.update(self.run_dir, export=export_fields)


def _jsonish(obj: Any) -> Any:
    """Fingerprints are compared after a JSON round trip (tuples become lists)."""
    import json

    return json.loads(json.dumps(obj, default=str))


@contextlib.contextmanager
def stage(name: str, detail: str | None = None) -> Iterator[dict]:
    """Emit stage start/done events around a block; the block may put ``skip`` or ``detail`` into the dict."""
    info: dict = {}
    t0 = time.monotonic()
    progress.emit("stage", stage=name, status="start", detail=detail)
    yield info
    info.setdefault("seconds", round(time.monotonic() - t0, 3))
    progress.emit("stage", stage=name, status="skip" if info.get("skip") else "done", detail=info.get("detail"))


def skipped(name: str, why: str) -> None:
    progress.emit("stage", stage=name, status="skip", detail=why)


@contextlib.contextmanager
def atomic_file(final: Path, label: str) -> Iterator[Path]:
    """A temporary path next to ``final`` (``.tmp-<pid>-<label>``), renamed onto ``final`` only on success.

    Unlike ``manifest.atomic_path`` the temporary name does not contain the final name: the llama.cpp converter
    treats its ``--outfile`` as a ``str.format`` template, so a run name with ``{`` in it must never reach it.
    A SIGKILL leaves only the ``.tmp-*`` file, which the next run removes (``manifest.clean_stale_tmp``).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{manifest.TMP_PREFIX}{os.getpid()}-{label}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{tmp} was not written")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
