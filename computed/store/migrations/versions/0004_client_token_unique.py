"""client token unique

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 10:12:41.518204

A client token names one request of its account: (owner, client_token, launch_index) is
unique. Launches that raced for one token before this (each made its own reservation)
keep their instances, but only one reservation (the lowest id) keeps the token.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text(
        "UPDATE instances SET client_token = NULL WHERE client_token IS NOT NULL AND EXISTS ("
        "SELECT 1 FROM instances AS other WHERE other.owner = instances.owner"
        " AND other.client_token = instances.client_token AND other.reservation_id < instances.reservation_id)"))
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_instances_client_token', ['owner', 'client_token', 'launch_index'])


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_constraint('uq_instances_client_token', type_='unique')
