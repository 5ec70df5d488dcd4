"""hosts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:00:00

Libvirt hosts and the images copied to them; every instance names the host it was placed
on. Instances made before hosts existed get theirs when the service starts (it knows the
URI of its first host from its settings: ``Hosts.adopt``).
"""
from alembic import op
import sqlalchemy as sa

import computed.store.models


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hosts',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('uri', sa.String(length=255), nullable=False),
    sa.Column('address', sa.String(length=255), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('image_mode', sa.String(length=16), nullable=False),
    sa.Column('storage_dir', sa.Text(), nullable=True),
    sa.Column('vcpus', sa.Integer(), nullable=True),
    sa.Column('memory_mib', sa.Integer(), nullable=True),
    sa.Column('reachable', sa.Boolean(), nullable=False),
    sa.Column('checked_at', computed.store.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_hosts')),
    sa.UniqueConstraint('uri', name=op.f('uq_hosts_uri'))
    )
    op.create_table('host_images',
    sa.Column('host', sa.String(length=64), nullable=False),
    sa.Column('disk_sha256', sa.String(length=80), nullable=False),
    sa.Column('image', sa.String(length=64), nullable=False),
    sa.Column('image_version', sa.String(length=32), nullable=False),
    sa.Column('verified_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['host'], ['hosts.name'], name=op.f('fk_host_images_host_hosts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('host', 'disk_sha256', name=op.f('pk_host_images'))
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('host', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_instances_host'), ['host'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_host'))
        batch_op.drop_column('host')
    op.drop_table('host_images')
    op.drop_table('hosts')
