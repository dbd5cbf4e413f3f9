"""the bot's decisions on the conversation: hand-off reason, signals, FAQ score, opt-out

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bot_opted_out", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("handoff_reason", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("handoff_rule", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("handoff_signals", sa.JSON(), server_default=sa.text("'[]'"), nullable=False)
        )
        batch_op.add_column(sa.Column("faq_entry", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("faq_score", sa.Float(), nullable=True))
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bot_opted_out", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("bot_opted_out")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("faq_score")
        batch_op.drop_column("faq_entry")
        batch_op.drop_column("handoff_signals")
        batch_op.drop_column("handoff_rule")
        batch_op.drop_column("handoff_reason")
        batch_op.drop_column("bot_opted_out")
