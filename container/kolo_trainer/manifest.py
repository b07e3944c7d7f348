"""The run manifest (``<run>/kolo.json``) and the atomic-file helpers every stage uses.

Stdlib only. Every write goes to a temporary name in the same folder and is renamed into place, so a crash leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

MANIFEST = "kolo.json"
#: Every temporary name kolo writes is ``.tmp-<pid>-<label>`` in the final file's folder: the pid says whose it is,
#: so a leftover is removed only once its writer is gone (:func:`clean_stale_tmp`).
TMP_PREFIX = ".tmp-"


def tmp_name(label: str) -> str:
    return f"{TMP_PREFIX}{os.getpid()}-{label}"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success rename it onto ``final``, on failure remove it.

    Works for files and for folders (``shutil.rmtree`` on failure; an existing final folder is replaced).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / tmp_name(final.name)
    _remove(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp} was not written")
        if final.is_dir() and not final.is_symlink():
            old = final.parent / tmp_name(f"old-{final.name}")
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _writer_pid(name: str) -> int | None:
    head = name[len(TMP_PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def clean_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Remove leftovers of crashed writes (``.tmp-<pid>-*``) in ``folder`` whose writer process is gone (a name
    without a pid, from older kolo versions, counts as a leftover); returns what was removed."""
    from .runlock import pid_alive

    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.glob(TMP_PREFIX + "*"):
            pid = _writer_pid(p.name)
            if pid is not None and (pid == os.getpid() or pid_alive(pid)):
                continue  # being written right now (by us, or by a kolo process that still runs)
            _remove(p)
            removed.append(p)
    return removed


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=tmp_name(""), dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of ``run_dir`` ({} when there is none)."""
    p = Path(run_dir) / MANIFEST
    if not p.exists():
        return {}
    return json.loads(p.read_text(encoding="utf-8"))


def update(run_dir: str | os.PathLike, *, last_resort: bool = False, **sections: Any) -> dict[str, Any]:
    """Merge top-level ``sections`` into the manifest (dict sections are merged one level deep) and save it.

    ``last_resort``: when the atomic write fails (a full disk has no room for a second copy), overwrite the file in
    place. Used only to record how a run ended: a manifest left saying "running" would be a lie forever."""
    data = load(run_dir)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    data.setdefault("created", now())
    data["updated"] = now()
    try:
        write_json_atomic(Path(run_dir) / MANIFEST, data)
    except OSError:
        if not last_resort:
            raise
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
        with open(Path(run_dir) / MANIFEST, "r+", encoding="utf-8") as f:  # r+: no truncation before the write
            f.write(text)
            f.truncate()
    return data


def add_artifacts(run_dir: str | os.PathLike, paths: list[str | os.PathLike]) -> None:
    """Record artifact paths (relative to ``run_dir``) in the manifest's ``artifacts`` list."""
    run_dir = Path(run_dir)
    data = load(run_dir)
    arts = list(data.get("artifacts", []))
    for p in paths:
        rel = os.path.relpath(Path(p), run_dir) if Path(p).is_absolute() else str(p)
        if rel not in arts:
            arts.append(rel)
    update(run_dir, artifacts=sorted(arts))
