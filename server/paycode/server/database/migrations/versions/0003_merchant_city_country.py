"""Merchants get a city and a country: EMV tags 60 and 58 of their collection QR.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(
            sa.Column("city", sa.String(length=15), nullable=False, server_default="Beijing")
        )
        batch.add_column(
            sa.Column("country", sa.String(length=2), nullable=False, server_default="CN")
        )


def downgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("country")
        batch.drop_column("city")
