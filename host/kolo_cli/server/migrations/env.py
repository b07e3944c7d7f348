"""Alembic environment: the server passes its open connection in ``config.attributes["connection"]``
(``db.migrate``), so migrations run on the very database the server uses, with no alembic.ini."""

from alembic import context
from sqlmodel import SQLModel

from kolo_cli.server import db  # noqa: F401  (registers the tables on SQLModel.metadata)

target_metadata = SQLModel.metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("kolo's migrations run from the server (kolo serve), which passes its connection")
# render_as_batch: SQLite cannot ALTER most things; batch mode recreates the table instead.
context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
