"""The Alembic migrations and the SQLModel classes describe the same schema, and a database made by them works."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.server]


def test_migrations_match_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from kolo_cli.server import db

    engine = db.open_db(tmp_path / "server" / "kolo.db")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        version = MigrationContext.configure(conn).get_current_revision()
    assert diff == []
    assert version == "0001"
    db.open_db(tmp_path / "server" / "kolo.db")  # a second start upgrades nothing and keeps working


def test_events_are_kept_in_order_per_job(tmp_path: Path) -> None:
    from kolo_cli.server import db

    engine = db.open_db(tmp_path / "kolo.db")
    ids = [db.add_event(engine, job, "progress", {"step": i}) for i, job in enumerate([1, 2, 1, 1])]
    got = db.events_after(engine, 1, ids[0])
    assert [e.id for e in got] == [ids[2], ids[3]]
