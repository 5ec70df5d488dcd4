"""service processes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 20:30:00

The service processes sharing the store, with their heartbeats, and the process that
handles each instance's work: reconciliation in one process leaves another's work alone
while that process lives.
"""
from alembic import op
import sqlalchemy as sa

import computed.store.models


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('service_processes',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_service_processes'))
    )
    with op.batch_alter_table('service_processes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_service_processes_heartbeat_at'), ['heartbeat_at'], unique=False)
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('handled_by', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('handled_by')
    with op.batch_alter_table('service_processes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_service_processes_heartbeat_at'))
    op.drop_table('service_processes')
