"""``/api/v1/datasets``: upload (validated by kolo's own data check before anything is kept), list, one, delete.

The uploaded file name is only ever shown (and its extension read): on disk a dataset is
``data/upload-<id>.<csv|json|jsonl>`` under the data root, the path jobs train from.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session, select

from . import db, uploads
from .app import ApiError
from .db import Dataset, Job

router = APIRouter(tags=["datasets"])
KINDS = ("csv", "json", "jsonl")
#: Files up to this size are read once more for a preview of their first rows.
PREVIEW_MAX_BYTES = 64 << 20


def dataset_dict(d: Dataset, full: bool = False) -> dict[str, Any]:
    out = {"id": d.id, "name": d.name, "format": d.format, "kind": d.kind, "rows": d.rows, "size": d.size,
           "path": d.path, "created": d.created}
    if full:
        out["stats"] = json.loads(d.stats)
        out["preview"] = json.loads(d.preview)
    return out


def _kind(filename: str | None) -> str:
    from kolo_trainer import names

    if not filename:
        raise ApiError(422, "the file part has no file name; send it as a file (curl -F file=@data.jsonl)")
    try:
        names.check_plain(filename)
    except ValueError as e:
        raise ApiError(422, f"file name {filename!r}: {e}; send a plain file name such as data.jsonl") from None
    kind = Path(filename).suffix.lower().lstrip(".")
    if kind not in KINDS:
        raise ApiError(415, f"unsupported file type {filename!r}: upload a .csv, .json or .jsonl file")
    return kind


def _display_name(upload: uploads.Upload) -> str:
    from kolo_trainer import names

    name = (upload.fields.get("name") or Path(upload.filename or "dataset").stem).strip()
    try:
        names.check_text(name)
    except ValueError as e:
        raise ApiError(422, f"name {name!r}: {e}") from None
    if not name or len(name) > 200:
        raise ApiError(422, "name: give 1 to 200 characters")
    return name


def _validate(path: Path, shown: str) -> dict[str, Any]:
    """kolo's data check (the same as ``kolo data check``); problems -> 422 listing every one. A big file is
    checked in a process of its own (``checkfile``): the check's memory grows with the file, and the server's
    must not (bench/serve_perf.py measured 2 GiB for a 1 GiB file of repeated rows checked in-process)."""
    from kolo_trainer import data

    if path.stat().st_size > PREVIEW_MAX_BYTES:
        return _validate_apart(path, shown)
    res = data.load(path, "auto", display_name=shown, keep_rows=True)
    if res.problems:
        problems = [str(p) for p in res.problems]
        raise ApiError(422, f"{shown}: {len(problems)} problem(s); nothing was stored", problems)
    stats = data.stats(res.rows)
    preview = [r.messages for r in res.rows[:5]]
    return {"format": res.format, "rows": int(stats.get("rows", res.rows_valid)), "stats": stats, "preview": preview}


def _validate_apart(path: Path, shown: str) -> dict[str, Any]:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "kolo_cli.server.checkfile", str(path), shown], capture_output=True,
                       text=True, stdin=subprocess.DEVNULL)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        raise ApiError(422, f"{shown}: the data check failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}") \
            from None
    problems, more = doc["problems"], doc["problem_count"] - len(doc["problems"])
    if problems:
        raise ApiError(422, f"{shown}: {doc['problem_count']} problem(s); nothing was stored",
                       problems + ([f"... and {more} more"] if more else []))
    return {"format": doc["format"], "rows": int(doc["rows"]), "stats": doc["stats"], "preview": []}


@router.post("/datasets", status_code=201)
async def upload_dataset(request: Request) -> dict[str, Any]:
    """Multipart upload: field ``file`` (.csv, .json, .jsonl), optional ``name``. Refused with every problem."""
    cfg = request.app.state.cfg
    tmpdir = cfg.server_dir / "uploads"
    tmpdir.mkdir(parents=True, exist_ok=True)
    part = tmpdir / f"{secrets.token_hex(8)}.part"
    try:
        up = await uploads.receive(request, part, cfg.max_upload)
    except uploads.UploadError as e:
        raise ApiError(e.status, e.message) from None
    try:
        kind = _kind(up.filename)
        name = _display_name(up)
        typed = part.with_suffix("." + kind)
        os.replace(part, typed)
        part = typed
        checked = await run_in_threadpool(_validate, part, up.filename)
        return await run_in_threadpool(_store, request.app.state.engine, cfg.data_root, part, name, kind, up.size,
                                       checked)
    finally:
        uploads.remove(part)


def _store(engine: Any, root: Path, part: Path, name: str, kind: str, size: int, checked: dict) -> dict:
    with Session(engine) as s:
        d = Dataset(name=name, format=checked["format"], kind=kind, rows=checked["rows"], size=size, path="",
                    stats=json.dumps(checked["stats"], default=str), preview=json.dumps(checked["preview"]))
        s.add(d)
        s.flush()
        d.path = f"data/upload-{d.id}.{kind}"
        (root / "data").mkdir(parents=True, exist_ok=True)
        os.replace(part, root / d.path)
        s.add(d)
        s.commit()
        s.refresh(d)
        return dataset_dict(d, full=True)


def get_dataset(engine: Any, dataset_id: int) -> Dataset:
    with Session(engine) as s:
        d = s.get(Dataset, dataset_id)
    if d is None:
        raise ApiError(404, f"no dataset {dataset_id}; see GET /api/v1/datasets")
    return d


@router.get("/datasets")
def list_datasets(request: Request) -> list[dict[str, Any]]:
    with Session(request.app.state.engine) as s:
        return [dataset_dict(d) for d in s.exec(select(Dataset).order_by(Dataset.id))]


@router.get("/datasets/{dataset_id}")
def one_dataset(dataset_id: int, request: Request) -> dict[str, Any]:
    return dataset_dict(get_dataset(request.app.state.engine, dataset_id), full=True)


@router.delete("/datasets/{dataset_id}")
def delete_dataset(dataset_id: int, request: Request) -> dict[str, Any]:
    engine, root = request.app.state.engine, request.app.state.cfg.data_root
    d = get_dataset(engine, dataset_id)
    with Session(engine) as s:
        users = [j.id for j in s.exec(select(Job).where(Job.dataset_id == dataset_id, Job.status.in_(db.ACTIVE)))]
        if users:
            raise ApiError(409, f"dataset {dataset_id} is used by job(s) {', '.join(map(str, users))}; "
                                "cancel them or wait for them to finish")
        s.delete(s.get(Dataset, dataset_id))
        s.commit()
    uploads.remove(root / d.path)
    return {"deleted": dataset_id}
