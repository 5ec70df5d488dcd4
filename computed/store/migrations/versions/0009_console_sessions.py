"""console sessions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 03:40:00

The web console's logins, one row each: logging out deletes it, which ends every copy of
its cookie at once.
"""
import sqlalchemy as sa
from alembic import op

import computed.store.models

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('console_sessions',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('access_key_id', sa.String(length=20), nullable=False),
    sa.Column('created_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['access_key_id'], ['access_keys.id'],
                            name=op.f('fk_console_sessions_access_key_id_access_keys'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_sessions'))
    )
    op.create_index(op.f('ix_console_sessions_access_key_id'), 'console_sessions', ['access_key_id'], unique=False)
    op.create_index(op.f('ix_console_sessions_expires_at'), 'console_sessions', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_console_sessions_expires_at'), table_name='console_sessions')
    op.drop_index(op.f('ix_console_sessions_access_key_id'), table_name='console_sessions')
    op.drop_table('console_sessions')
