"""queue sort key and partial queue indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "queue_due_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.text("'9999-12-31 00:00:00+00:00'"),
            )
        )
        batch_op.drop_index(batch_op.f("ix_conversations_queue"))
        batch_op.drop_index(batch_op.f("ix_conversations_team_queue"))
        batch_op.create_index(
            "ix_conversations_open_queue",
            ["priority_rank", "queue_due_at", "id"],
            unique=False,
            postgresql_where=sa.text("status <> 'resolved'"),
            sqlite_where=sa.text("status <> 'resolved'"),
        )
        batch_op.create_index(
            "ix_conversations_open_team_queue",
            ["team", "priority_rank", "queue_due_at", "id"],
            unique=False,
            postgresql_where=sa.text("status <> 'resolved'"),
            sqlite_where=sa.text("status <> 'resolved'"),
        )
        batch_op.create_index("ix_conversations_status", ["status"], unique=False)
    op.execute("UPDATE conversations SET queue_due_at = sla_due_at WHERE sla_due_at IS NOT NULL")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_conversations_status")
        batch_op.drop_index(
            "ix_conversations_open_team_queue",
            postgresql_where=sa.text("status <> 'resolved'"),
            sqlite_where=sa.text("status <> 'resolved'"),
        )
        batch_op.drop_index(
            "ix_conversations_open_queue",
            postgresql_where=sa.text("status <> 'resolved'"),
            sqlite_where=sa.text("status <> 'resolved'"),
        )
        batch_op.create_index(
            batch_op.f("ix_conversations_team_queue"),
            ["team", "status", "priority_rank", "sla_due_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_conversations_queue"),
            ["status", "priority_rank", "sla_due_at", "id"],
            unique=False,
        )
        batch_op.drop_column("queue_due_at")
