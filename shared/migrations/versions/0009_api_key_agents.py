"""an agent-scope API key bound to the agent it acts as

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema: existing keys stay unbound (they act for the agent a request names)."""
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent", sa.String(length=128), nullable=True))
        batch_op.create_foreign_key("fk_api_keys_agent_agents", "agents", ["agent"], ["name"])


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint("fk_api_keys_agent_agents", type_="foreignkey")
        batch_op.drop_column("agent")
