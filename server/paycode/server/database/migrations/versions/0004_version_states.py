"""Code-version lifecycle kept in the database, so every worker and host sees one state.

A missing row means the registry's default (shared.versions.registry.DEFAULT_STATUS): adding a
version to the code needs no migration.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "version_states",
        sa.Column("version", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("changed_at_s", sa.Float(), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'deprecated', 'retired')", name="ck_version_state_status"
        ),
        sa.PrimaryKeyConstraint("version"),
    )


def downgrade() -> None:
    op.drop_table("version_states")
