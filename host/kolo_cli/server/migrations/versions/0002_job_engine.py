"""job.engine: the Docker engine a job runs on (`kolo serve --engine`)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 11:05:00.000000
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing jobs ran on the server's own engine ("home"), the only one a server had before this revision.
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('engine', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.execute("UPDATE job SET engine = 'home' WHERE status != 'queued'")


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('engine')
