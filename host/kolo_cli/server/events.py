"""Live job events: the worker thread records each event in SQLite, then wakes the SSE streams of that job.

The database is the one source of the stream: a stream sends the rows after the last id it sent (the SSE event id
is the row id), so a client reconnecting with ``Last-Event-ID`` gets exactly what it missed, and a server restart
loses nothing. The wake-up only saves the streams from polling: the worker thread calls :meth:`Broker.publish`,
which sets an asyncio.Event on the server's loop for every stream waiting on that job.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, AsyncIterator

from . import db

#: A stream with nothing to send still wakes this often, to notice a job that ended without an event.
IDLE_CHECK_S = 5.0


class Broker:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()
        self.waiters: dict[int, set[asyncio.Event]] = {}

    def bind(self) -> None:
        self.loop = asyncio.get_running_loop()

    def publish(self, job_id: int) -> None:
        """Thread-safe: wake every stream of ``job_id``."""
        with self.lock:
            waiting = list(self.waiters.get(job_id, ()))
        if self.loop is not None:
            for ev in waiting:
                self.loop.call_soon_threadsafe(ev.set)

    def subscribe(self, job_id: int) -> asyncio.Event:
        ev = asyncio.Event()
        with self.lock:
            self.waiters.setdefault(job_id, set()).add(ev)
        return ev

    def unsubscribe(self, job_id: int, ev: asyncio.Event) -> None:
        with self.lock:
            self.waiters.get(job_id, set()).discard(ev)


async def stream(engine: Any, broker: Broker, job_id: int, last_id: int) -> AsyncIterator[dict[str, Any]]:
    """SSE messages (``id``, ``event``, ``data``) of a job after ``last_id``; ends once the job is in a final state
    and everything up to that state was sent (the last message is the final ``status`` event)."""
    wake = broker.subscribe(job_id)
    try:
        while True:
            wake.clear()
            rows = await asyncio.to_thread(db.events_after, engine, job_id, last_id)
            for row in rows:
                last_id = int(row.id)
                yield {"id": str(row.id), "event": row.kind, "data": row.data}
            if rows:
                continue
            job = await asyncio.to_thread(db.get_job, engine, job_id)
            if job is None or (job.status in db.FINAL and _ended(engine, job_id, last_id)):
                return
            try:
                await asyncio.wait_for(wake.wait(), IDLE_CHECK_S)
            except asyncio.TimeoutError:
                pass
    finally:
        broker.unsubscribe(job_id, wake)


def _ended(engine: Any, job_id: int, last_id: int) -> bool:
    """The last event sent is the job's final status (a job resumed meanwhile has newer events)."""
    rows = db.events_after(engine, job_id, last_id - 1, limit=1)
    return bool(rows) and rows[0].kind == "status" and json.loads(rows[0].data).get("status") in db.FINAL
