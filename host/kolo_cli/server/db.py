"""The server's state: one SQLite file in the data root (``<root>/server/kolo.db``), tables as SQLModel classes.

The schema is owned by the Alembic migrations in ``migrations/versions``; :func:`open_db` upgrades the file to the
newest revision before anything reads it, so an older server's database keeps working after an upgrade.
``tests/server/test_db.py`` checks that the migrations and these classes describe the same schema.

Why SQLite with WAL: one writer (the worker thread) and many readers (API requests, SSE streams) at once, in one
file the user already backs up with the data root.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import event
from sqlmodel import Field, Session, SQLModel, create_engine, select

#: Job states. ``interrupted``: the process died with the server (resumable), never set by a timer.
QUEUED, RUNNING, EXPORTING = "queued", "running", "exporting"
COMPLETED, FAILED, CANCELLED, INTERRUPTED = "completed", "failed", "cancelled", "interrupted"
ACTIVE = (QUEUED, RUNNING, EXPORTING)
FINAL = (COMPLETED, FAILED, CANCELLED, INTERRUPTED)
RESUMABLE = (INTERRUPTED, CANCELLED, FAILED)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Dataset(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str
    format: str
    kind: str  # csv, json or jsonl: the file type (format is the row shape: messages, alpaca, ...)
    rows: int
    size: int
    path: str  # relative to the data root: data/upload-<id>.<kind>; never the uploaded name
    stats: str = "{}"  # JSON
    preview: str = "[]"  # JSON: the first rows as messages
    created: str = Field(default_factory=now)


class Job(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str
    description: str = ""
    training_type: str
    dataset_id: Optional[int] = Field(default=None, index=True)
    options: str = "{}"  # JSON: the explicit TrainOptions values the trainer gets
    output_dir: str = ""
    status: str = Field(default=QUEUED, index=True)
    step: Optional[int] = None
    total_steps: Optional[int] = None
    loss: Optional[float] = None
    eval_loss: Optional[float] = None
    eta_s: Optional[float] = None
    error: Optional[str] = None
    exit_code: Optional[int] = None
    task: str = "train"  # what the worker runs next: train (train + export when asked), export, or rag (an index)
    export_quantizations: str = "[]"  # JSON, for task export
    cancel_requested: bool = False
    created: str = Field(default_factory=now)
    started: Optional[str] = None
    finished: Optional[str] = None
    engine: Optional[str] = None  # the engine that runs it (worker.Slot.engine); None until one claims it


class JobEvent(SQLModel, table=True):
    """Every progress event of a job and every state change, in order; the id is the SSE event id."""

    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(index=True)
    kind: str
    data: str  # JSON
    created: str = Field(default_factory=now)


def migrate(engine: Any) -> None:
    """Bring the database to the newest schema with Alembic (the migrations live in this package)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_db(path: Path) -> Any:
    """The engine of the server database at ``path``, created and migrated when needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    migrate(engine)
    return engine


def add_event(engine: Any, job_id: int, kind: str, data: dict[str, Any]) -> int:
    with Session(engine) as s:
        ev = JobEvent(job_id=job_id, kind=kind, data=json.dumps(data, default=str, ensure_ascii=False))
        s.add(ev)
        s.commit()
        return int(ev.id)


def events_after(engine: Any, job_id: int, after: int, limit: int = 500) -> list[JobEvent]:
    with Session(engine) as s:
        q = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after).order_by(JobEvent.id).limit(limit)
        return list(s.exec(q))


def get_job(engine: Any, job_id: int) -> Optional[Job]:
    with Session(engine) as s:
        return s.get(Job, job_id)


def update_job(engine: Any, job_id: int, **fields: Any) -> Job:
    with Session(engine) as s:
        job = s.get(Job, job_id)
        assert job is not None
        for k, v in fields.items():
            setattr(job, k, v)
        s.add(job)
        s.commit()
        s.refresh(job)
        return job
