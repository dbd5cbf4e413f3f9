"""the unique keys' indexes lead with the platform's ids, not the channel

Led by the channel, which nearly every row shares, the indexes of the contacts', the
conversations' and the messages' keys let PostgreSQL plan a lookup by key as "match the
channel, filter the rest" whenever its statistics were missing or stale: a scan of the
whole channel per lookup. The same columns in the other order serve the same lookups
and conflicts (ON CONFLICT names columns, not their order) and leave no such plan.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS = {
    "contacts": ("uq_contacts_platform", ["channel", "platform_id"]),
    "conversations": ("uq_conversations_thread", ["channel", "account_id", "contact_id"]),
    "messages": ("uq_messages_mid", ["channel", "mid"]),
}


def upgrade() -> None:
    """Upgrade schema."""
    for table, (name, columns) in KEYS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(name, type_="unique")
            batch_op.create_unique_constraint(name, columns[::-1])
            if table == "messages":
                batch_op.drop_index("uq_messages_request")
                batch_op.create_index("uq_messages_request", ["request_id", "channel"], unique=True)


def downgrade() -> None:
    """Downgrade schema."""
    for table, (name, columns) in KEYS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(name, type_="unique")
            batch_op.create_unique_constraint(name, columns)
            if table == "messages":
                batch_op.drop_index("uq_messages_request")
                batch_op.create_index("uq_messages_request", ["channel", "request_id"], unique=True)
