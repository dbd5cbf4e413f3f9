"""an index for the SLA scheduler's at-risk times, as ix_sla_clocks_due is for deadlines

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("sla_clocks", schema=None) as batch_op:
        batch_op.create_index("ix_sla_clocks_at_risk", ["state", "at_risk_at"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("sla_clocks", schema=None) as batch_op:
        batch_op.drop_index("ix_sla_clocks_at_risk")
