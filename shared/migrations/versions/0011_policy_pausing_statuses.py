"""SLA policies choose which conversation statuses pause their clocks

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("sla_policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pausing_statuses", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("sla_policies", schema=None) as batch_op:
        batch_op.drop_column("pausing_statuses")
