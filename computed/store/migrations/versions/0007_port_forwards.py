"""port forwards

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:50:00

Guest TCP ports forwarded from a port of the instance's host address, besides SSH: one
instance's at a time per address and port, released at terminate.
"""
from alembic import op
import sqlalchemy as sa

import computed.store.models


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('port_forwards',
    sa.Column('instance_id', sa.String(length=19), nullable=False),
    sa.Column('host_port', sa.Integer(), nullable=False),
    sa.Column('host_address', sa.String(length=255), nullable=False),
    sa.Column('guest_port', sa.Integer(), nullable=False),
    sa.Column('protocol', sa.String(length=3), nullable=False),
    sa.Column('created_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_port_forwards_instance_id_instances'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('instance_id', 'host_port', name=op.f('pk_port_forwards')),
    sa.UniqueConstraint('host_address', 'host_port', 'protocol', name='uq_port_forwards_host_port'),
    sa.UniqueConstraint('instance_id', 'guest_port', 'protocol', name='uq_port_forwards_guest_port')
    )


def downgrade() -> None:
    op.drop_table('port_forwards')
