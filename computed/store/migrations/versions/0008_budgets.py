"""budgets

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00

An account's monthly budget (amount, currency, action at 100%: notify or stop) and the
events recorded when its spend reaches 80% and 100% of it: one per account, calendar month
(UTC) and threshold, which the unique key keeps true across service processes.
"""
import sqlalchemy as sa
from alembic import op

import computed.store.models

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('budgets',
    sa.Column('account_id', sa.String(length=12), nullable=False),
    sa.Column('amount', sa.String(length=32), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('created_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_budgets_account_id_accounts'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_budgets'))
    )
    op.create_table('budget_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.String(length=12), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('threshold', sa.Integer(), nullable=False),
    sa.Column('amount', sa.String(length=32), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('spend', sa.String(length=32), nullable=False),
    sa.Column('at', computed.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('instances_stopped', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_budget_events_account_id_accounts'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budget_events')),
    sa.UniqueConstraint('account_id', 'month', 'threshold', name='uq_budget_events_account_month_threshold')
    )


def downgrade() -> None:
    op.drop_table('budget_events')
    op.drop_table('budgets')
