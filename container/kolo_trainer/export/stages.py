"""The export's stage runner, and what every stage shares: the run context, input fingerprints, atomic outputs.

A stage (:class:`Stage`) is a name, its key in the manifest's ``export.stages``, the fingerprint of its inputs,
the final paths it writes, and one function that writes them. :func:`run` is the only place that decides whether
a stage runs:

* it is **skipped** when ``export.stages[key]`` holds the same input fingerprint as now AND every output it
  recorded is still there with the size and mtime it had when the stage finished (``--force`` redoes it);
* otherwise the function writes every output under a temporary name in the same folder (``.tmp-<pid>-<label>``)
  and the runner renames them into place only when it returned: a crash, Ctrl-C or an exception never leaves a
  partial file under a final name (a SIGKILL leaves ``.tmp-*`` leftovers, which the next export removes);
* the stage is **recorded** in the manifest right after it finished (fingerprint, outputs, seconds, whatever the
  function returned), so a crash in a later stage does not redo it; a failed stage records nothing;
* the runner emits the ``stage`` start / done / skip events and times the stage.

Fingerprints are size + mtime_ns of the input files (plus the options that change the output), not a hash:
hashing a multi-GB model on every re-run would cost as much as the conversion it is meant to skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

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


def _files(p: Path) -> list[Path]:
    """A file output is itself; a folder output is every file in it (what the record compares later)."""
    if p.is_dir() and not p.is_symlink():
        return [f for f in sorted(p.rglob("*")) if f.is_file()]
    return [p]


@dataclass
class Context:
    """One export of one run: where things are, the options, the manifest as read at the start."""

    root: Path
    run_dir: Path
    name: str
    opts: Any  # ExportOptions
    data: dict  # the manifest, as read before the export started
    stages: dict = field(default_factory=dict)  # export.stages, updated as stages finish

    @property
    def gguf_dir(self) -> Path:
        return self.run_dir / "gguf"

    def rel(self, p: Path) -> str:
        return os.path.relpath(p, self.run_dir)

    def up_to_date(self, key: str, fingerprint: Any) -> bool:
        if self.opts.force:
            return False
        rec = self.stages.get(key)
        if not rec or rec.get("fingerprint") != _jsonish(fingerprint):
            return False
        for rel, sig in (rec.get("outputs") or {}).items():
            try:
                if file_sig(self.run_dir / rel) != sig:
                    return False
            except OSError:
                return False
        return True

    def record(self, key: str, fingerprint: Any, outputs: Sequence[Path], **extra: Any) -> dict:
        """Remember that stage ``key`` produced ``outputs`` from ``fingerprint`` (saved in the manifest now, so a
        crash in a later stage does not redo this one)."""
        self.stages[key] = {"fingerprint": _jsonish(fingerprint),
                            "outputs": {self.rel(f): file_sig(f) for p in outputs for f in _files(p)},
                            **_jsonish(extra)}
        self.save(stages=self.stages)
        return self.stages[key]

    def save(self, **export_fields: Any) -> None:
        manifest.update(self.run_dir, export=export_fields)


def _jsonish(obj: Any) -> Any:
    """Fingerprints are compared after a JSON round trip (tuples become lists)."""
    return json.loads(json.dumps(obj, default=str))


@dataclass
class Stage:
    """One export stage. ``write(*temporary_paths)`` writes ``outputs`` (one temporary path per output, in the
    same order, none of them existing yet) and may return a dict, which is recorded with the stage (its ``detail``
    goes to the done event instead). ``keep``, when
    given, must also accept the previous record for the stage to be skipped (verification: only a passed one)."""

    name: str
    key: str
    fingerprint: Any
    outputs: Sequence[Path]
    write: Callable[..., Any]
    detail: Optional[str] = None
    keep: Optional[Callable[[dict], bool]] = None

    @property
    def label(self) -> str:
        """The temporary names' tail: from the key, never from the run name (the llama.cpp converter treats its
        ``--outfile`` as a ``str.format`` template, so a ``{`` must never reach it)."""
        return "".join(c if c.isalnum() or c in "_-" else "-" for c in self.key)


def run(ctx: Context, st: Stage) -> dict:
    """Run ``st`` unless it is up to date; returns its record (the new one, or the one that made it skip)."""
    progress.emit("stage", stage=st.name, status="start", detail=st.detail)
    rec = ctx.stages.get(st.key)
    if ctx.up_to_date(st.key, st.fingerprint) and (st.keep is None or st.keep(rec or {})):
        shown = ", ".join(ctx.rel(p) for p in st.outputs) or st.key
        progress.emit("stage", stage=st.name, status="skip", detail=f"{shown}: up to date")
        return rec or {}
    t0 = time.monotonic()
    with atomic_outputs(list(st.outputs), st.label) as tmps:
        returned = st.write(*tmps)
    extra = dict(returned) if isinstance(returned, dict) else {}
    seconds = round(time.monotonic() - t0, 3)
    detail = extra.pop("detail", None)  # for the event only
    rec = ctx.record(st.key, st.fingerprint, st.outputs, seconds=seconds, **extra)
    progress.emit("stage", stage=st.name, status="done", detail=detail or f"{seconds:.1f}s")
    return rec


def skipped(name: str, why: str) -> None:
    """A stage this export does not need at all (e.g. merge for a full fine-tune)."""
    progress.emit("stage", stage=name, status="skip", detail=why)


def _tmp_names(finals: list[Path], label: str) -> list[Path]:
    if len(finals) == 1:
        return [finals[0].parent / manifest.tmp_name(f"{label}{finals[0].suffix}")]
    return [p.parent / manifest.tmp_name(f"{label}-{i}{p.suffix}") for i, p in enumerate(finals)]


@contextlib.contextmanager
def atomic_outputs(finals: list[Path], label: str) -> Iterator[list[Path]]:
    """Temporary paths next to ``finals`` (files or folders), renamed onto them only when the block succeeds.

    Every temporary path is removed first (a leftover of ours) and again on failure. A folder output replaces
    the old folder by two renames (old -> ``.tmp-``, new -> final), so no reader sees a half-merged folder."""
    tmps = _tmp_names(finals, label)
    for tmp in tmps:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        _remove(tmp)
    try:
        yield tmps
        for tmp in tmps:
            if not tmp.exists():
                raise FileNotFoundError(f"{tmp} was not written")
            for f in _files(tmp):
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        for tmp, final in zip(tmps, finals):
            _replace(tmp, final)
    except BaseException:
        for tmp in tmps:
            _remove(tmp)
        raise


def _replace(tmp: Path, final: Path) -> None:
    if final.is_dir() and not final.is_symlink():
        old = tmp.parent / f"{tmp.name}-old"
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
