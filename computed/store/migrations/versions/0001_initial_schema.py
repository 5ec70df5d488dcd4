"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 00:06:28.148359
"""
from alembic import op
import sqlalchemy as sa

import computed.store.models


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('instances',
    sa.Column('id', sa.String(length=19), nullable=False),
    sa.Column('reservation_id', sa.String(length=19), nullable=False),
    sa.Column('launch_index', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('state_reason_code', sa.String(length=64), nullable=True),
    sa.Column('state_reason_message', sa.Text(), nullable=True),
    sa.Column('state_changed_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('size', sa.String(length=64), nullable=False),
    sa.Column('vcpus', sa.Integer(), nullable=False),
    sa.Column('memory_mib', sa.Integer(), nullable=False),
    sa.Column('disk_gib', sa.Integer(), nullable=False),
    sa.Column('price_per_hour', sa.String(length=32), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('image', sa.String(length=64), nullable=False),
    sa.Column('image_version', sa.String(length=32), nullable=False),
    sa.Column('image_path', sa.Text(), nullable=False),
    sa.Column('key_name', sa.String(length=255), nullable=True),
    sa.Column('public_key', sa.Text(), nullable=True),
    sa.Column('user_data', sa.LargeBinary(), nullable=True),
    sa.Column('client_token', sa.String(length=64), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=True),
    sa.Column('host_uri', sa.String(length=255), nullable=False),
    sa.Column('domain_name', sa.String(length=64), nullable=False),
    sa.Column('ssh_host', sa.String(length=255), nullable=True),
    sa.Column('ssh_port', sa.Integer(), nullable=True),
    sa.Column('ready_ssh', sa.Boolean(), nullable=False),
    sa.Column('ready_engine', sa.Boolean(), nullable=False),
    sa.Column('launch_time', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('terminated_at', computed.store.models.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_instances')),
    sa.UniqueConstraint('host_uri', 'ssh_host', 'ssh_port', name='uq_instances_ssh_endpoint')
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instances_client_token'), ['client_token'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_image'), ['image'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_key_name'), ['key_name'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_reservation_id'), ['reservation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_size'), ['size'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_terminated_at'), ['terminated_at'], unique=False)

    op.create_table('key_pairs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('key_type', sa.String(length=40), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=100), nullable=False),
    sa.Column('created_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_key_pairs')),
    sa.UniqueConstraint('name', name=op.f('uq_key_pairs_name'))
    )
    op.create_table('tags',
    sa.Column('instance_id', sa.String(length=19), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('value', sa.String(length=256), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_tags_instance_id_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('instance_id', 'key', name=op.f('pk_tags'))
    )



def downgrade() -> None:

    op.drop_table('tags')
    op.drop_table('key_pairs')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_terminated_at'))
        batch_op.drop_index(batch_op.f('ix_instances_state'))
        batch_op.drop_index(batch_op.f('ix_instances_size'))
        batch_op.drop_index(batch_op.f('ix_instances_reservation_id'))
        batch_op.drop_index(batch_op.f('ix_instances_key_name'))
        batch_op.drop_index(batch_op.f('ix_instances_image'))
        batch_op.drop_index(batch_op.f('ix_instances_client_token'))

    op.drop_table('instances')

