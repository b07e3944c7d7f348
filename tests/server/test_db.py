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
    assert version == "0002"
    db.open_db(tmp_path / "server" / "kolo.db")  # a second start upgrades nothing and keeps working


def test_an_older_database_upgrades_with_its_jobs(tmp_path: Path) -> None:
    """A server of revision 0001 had one engine: its finished jobs ran there ("home"); a queued one may go to any."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from kolo_cli.server import db

    path = tmp_path / "kolo.db"
    old = sa.create_engine(f"sqlite:///{path}")
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).with_name("migrations")))
    with old.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        for i, status in ((1, "completed"), (2, "queued")):
            conn.execute(sa.text("INSERT INTO job (id, name, description, training_type, options, output_dir, status,"
                                 " task, export_quantizations, cancel_requested, created) VALUES (:i, 'j', '', 'lora',"
                                 " '{}', :o, :s, 'train', '[]', 0, 'now')"), {"i": i, "o": f"job-{i}", "s": status})
    engine = db.open_db(path)
    assert [db.get_job(engine, i).engine for i in (1, 2)] == ["home", None]


def test_events_are_kept_in_order_per_job(tmp_path: Path) -> None:
    from kolo_cli.server import db

    engine = db.open_db(tmp_path / "kolo.db")
    ids = [db.add_event(engine, job, "progress", {"step": i}) for i, job in enumerate([1, 2, 1, 1])]
    got = db.events_after(engine, 1, ids[0])
    assert [e.id for e in got] == [ids[2], ids[3]]
