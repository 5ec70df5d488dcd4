"""usage events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 00:58:06.975788
"""
from alembic import op
import sqlalchemy as sa

import computed.store.models


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('usage_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('instance_id', sa.String(length=19), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=False),
    sa.Column('size', sa.String(length=64), nullable=False),
    sa.Column('image', sa.String(length=64), nullable=False),
    sa.Column('price_per_hour', sa.String(length=32), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('tags', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_events'))
    )
    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_usage_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_usage_events_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_usage_events_owner'), ['owner'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_usage_events_owner'))
        batch_op.drop_index(batch_op.f('ix_usage_events_instance_id'))
        batch_op.drop_index(batch_op.f('ix_usage_events_at'))

    op.drop_table('usage_events')

