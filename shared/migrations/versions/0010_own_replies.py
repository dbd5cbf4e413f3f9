"""own replies under the platform's id (the request they answer); bot containment per conversation

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=256), nullable=True))
        batch_op.create_index("uq_messages_request", ["channel", "request_id"], unique=True)
    # Replies stored before: their request id is in their placeholder mid.
    op.execute("UPDATE messages SET request_id = substr(mid, 9) WHERE mid LIKE 'request:%'")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bot_replied_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("bot_outcome", sa.String(length=16), nullable=True))
    undecided = sa.text("bot_outcome IS NULL AND bot_replied_at IS NOT NULL")
    op.create_index(
        "ix_conversations_bot_undecided",
        "conversations",
        ["last_message_at"],
        postgresql_where=undecided,
        sqlite_where=undecided,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_conversations_bot_undecided", table_name="conversations")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("bot_outcome")
        batch_op.drop_column("bot_replied_at")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("uq_messages_request")
        batch_op.drop_column("request_id")
