"""accounts and owners

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 02:05:02.906356

Accounts and their access keys; instances and key pairs get an owner (what existed
before is owned by "default", which admins see); key pair names are unique per owner.
"""
from alembic import op
import sqlalchemy as sa

import computed.store.models


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('id', sa.String(length=12), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('admin', sa.Boolean(), nullable=False),
    sa.Column('created_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts')),
    sa.UniqueConstraint('name', name=op.f('uq_accounts_name'))
    )
    op.create_table('access_keys',
    sa.Column('id', sa.String(length=20), nullable=False),
    sa.Column('account_id', sa.String(length=12), nullable=False),
    sa.Column('sealed_secret', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_access_keys_account_id_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_access_keys'))
    )
    with op.batch_alter_table('access_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_access_keys_account_id'), ['account_id'], unique=False)

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=64), server_default='default', nullable=False))
        batch_op.create_index(batch_op.f('ix_instances_owner'), ['owner'], unique=False)

    with op.batch_alter_table('key_pairs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=64), server_default='default', nullable=False))
        batch_op.drop_constraint(batch_op.f('uq_key_pairs_name'), type_='unique')
        batch_op.create_index(batch_op.f('ix_key_pairs_owner'), ['owner'], unique=False)
        batch_op.create_unique_constraint('uq_key_pairs_owner_name', ['owner', 'name'])



def downgrade() -> None:
    with op.batch_alter_table('key_pairs', schema=None) as batch_op:
        batch_op.drop_constraint('uq_key_pairs_owner_name', type_='unique')
        batch_op.drop_index(batch_op.f('ix_key_pairs_owner'))
        batch_op.create_unique_constraint(batch_op.f('uq_key_pairs_name'), ['name'])
        batch_op.drop_column('owner')

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_owner'))
        batch_op.drop_column('owner')

    with op.batch_alter_table('access_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_access_keys_account_id'))

    op.drop_table('access_keys')
    op.drop_table('accounts')
