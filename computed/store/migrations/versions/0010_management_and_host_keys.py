"""management keys per host, guests' host keys

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 02:00:00

Each host gets management keys of its own (public halves here, private halves in 0600
files under the state directory), rotatable; each instance records the management key
its seed holds and the public half of the SSH host key the service made for it.
Instances from before keep NULL in both: the service's one old key, and the host key it
first sees from them.
"""
import sqlalchemy as sa
from alembic import op

import computed.store.models

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('management_keys',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('host', sa.String(length=64), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=100), nullable=False),
    sa.Column('created_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('retired_at', computed.store.models.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_management_keys'))
    )
    op.create_index(op.f('ix_management_keys_host'), 'management_keys', ['host'], unique=False)
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ssh_host_key', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('management_key_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_instances_management_key_id'), ['management_key_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_management_key_id'))
        batch_op.drop_column('management_key_id')
        batch_op.drop_column('ssh_host_key')
    op.drop_index(op.f('ix_management_keys_host'), table_name='management_keys')
    op.drop_table('management_keys')
