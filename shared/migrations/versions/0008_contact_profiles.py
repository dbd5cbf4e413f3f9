"""contacts' platform profiles, agents' notes and links; why a contact raised a priority

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_name", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("last_name", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("username", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("profile_pic", sa.String(length=4096), nullable=True))
        batch_op.add_column(sa.Column("verified", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("follows_business", sa.Boolean(), nullable=True))
        batch_op.add_column(
            sa.Column("profile_fetched_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("notes", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("person_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_contacts_person_id"), ["person_id"], unique=False)
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority_reason", sa.String(length=512), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("priority_reason")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_person_id"))
        for column in (
            "person_id",
            "notes",
            "profile_fetched_at",
            "follows_business",
            "verified",
            "profile_pic",
            "username",
            "last_name",
            "first_name",
        ):
            batch_op.drop_column(column)
