"""the detail of an instance's state reason

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 02:10:00

A failure's raw text (libvirt's or qemu-img's words, with the host's paths) is kept apart
from the state reason's message, which tenants see: admins only see the detail. Reasons
written before, with the error's words in the message, are split the same way (they have
no error id: none was logged).
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


#: (what the old message began with, the message it gets) of the failures that pasted an
#: error's words into the reason; a boot failure's words are the service's own and stay
OLD_FAILURES = (("launch failed: ", "the launch failed (an admin sees the detail)"),
                ("start failed: ", "the start failed (an admin sees the detail)"),
                ("termination failed, retry it: ", "the termination failed, retry it (an admin sees the detail)"))


def upgrade() -> None:
    with op.batch_alter_table('instances') as batch:
        batch.add_column(sa.Column('state_reason_detail', sa.Text(), nullable=True))
    instances = sa.table('instances', sa.column('state_reason_code', sa.String),
                         sa.column('state_reason_message', sa.Text), sa.column('state_reason_detail', sa.Text))
    for prefix, message in OLD_FAILURES:
        op.execute(instances.update()
                   .where(instances.c.state_reason_message.startswith(prefix, autoescape=True),
                          instances.c.state_reason_code != 'Server.BootFailure')
                   .values(state_reason_detail=instances.c.state_reason_message, state_reason_message=message))


def downgrade() -> None:
    with op.batch_alter_table('instances') as batch:
        batch.drop_column('state_reason_detail')
