"""The merchant dashboard (paycode.server.http.dashboard): a merchant's own password, which no
terminal holds, and its log-in sessions (only a hash of each session token is stored).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "merchant_sessions"


def upgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(sa.Column("password_hash", sa.String(length=256), nullable=True))
    op.create_table(
        TABLE,
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        sa.Column("expires_at_s", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index(f"ix_{TABLE}_expires_at_s", TABLE, ["expires_at_s"])
    op.create_index(f"ix_{TABLE}_merchant_id", TABLE, ["merchant_id"])


def downgrade() -> None:
    op.drop_index(f"ix_{TABLE}_merchant_id", table_name=TABLE)
    op.drop_index(f"ix_{TABLE}_expires_at_s", table_name=TABLE)
    op.drop_table(TABLE)
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("password_hash")
