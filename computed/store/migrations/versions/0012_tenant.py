"""the detail of an instance's state reason

Revision ID: 0012_tenant
Revises: 0009
Create Date: 2026-12-08 02:10:00

A failure's raw text (libvirt's or qemu-img's words, with the host's paths) is kept apart
from the state reason's message, which tenants see: admins only see the detail.
"""
import sqlalchemy as sa
from alembic import op

revision = '0012_tenant'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances') as batch:
        batch.add_column(sa.Column('state_reason_detail', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances') as batch:
        batch.drop_column('state_reason_detail')
