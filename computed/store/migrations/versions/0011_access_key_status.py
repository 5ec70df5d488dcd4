"""access keys: status and last use

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 01:50:00

An access key can be deactivated (status Inactive) and reactivated, and shows when it last
authenticated a request and through what (rest, ec2, console). The limit of two keys per
account is the code's (computed/accounts/access_keys.py), not the schema's. Console
sessions already name their key (0009), whose deletion deletes them.
"""
import sqlalchemy as sa
from alembic import op

import computed.store.models

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('access_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=8), server_default='Active', nullable=False))
        batch_op.add_column(sa.Column('last_used_at', computed.store.models.UtcDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('last_used_service', sa.String(length=16), nullable=True))


def downgrade() -> None:
    # an inactive key must not come back to life on the older schema, which has no status;
    # every console login ends (SQLite rebuilds access_keys, which would delete them anyway)
    op.execute("DELETE FROM console_sessions")
    op.execute("DELETE FROM access_keys WHERE status <> 'Active'")
    with op.batch_alter_table('access_keys', schema=None) as batch_op:
        batch_op.drop_column('last_used_service')
        batch_op.drop_column('last_used_at')
        batch_op.drop_column('status')
