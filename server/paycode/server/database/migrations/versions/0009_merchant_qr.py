"""Merchant-presented QR you can trust (docs/spec.md, section 12): dynamic orders owned by the
server (the payer never sets an amount or an order id), and each merchant's name and city in
its own script next to the ASCII that EMV tags 59 and 60 require.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 10:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "orders"


def upgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(sa.Column("ascii_name", sa.String(length=25), nullable=True))
        batch.add_column(sa.Column("ascii_city", sa.String(length=15), nullable=True))
        batch.add_column(sa.Column("language", sa.String(length=2), nullable=True))
    op.create_table(
        TABLE,
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("token", sa.String(length=24), nullable=False),
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        sa.Column("terminal_id", sa.String(length=32), nullable=True),
        sa.Column("merchant_order_id", sa.String(length=64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payment_id", sa.String(length=32), nullable=True),
        sa.Column("created_at_s", sa.Float(), nullable=False),
        sa.Column("expires_at_s", sa.Float(), nullable=False),
        sa.Column("ended_at_s", sa.Float(), nullable=True),
        sa.CheckConstraint("amount_minor > 0", name="ck_order_amount_positive"),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
        sa.ForeignKeyConstraint(["terminal_id"], ["terminals.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("merchant_id", "merchant_order_id", name="uq_order_merchant_order"),
        sa.UniqueConstraint("token"),
    )
    op.create_index(f"ix_{TABLE}_merchant_id", TABLE, ["merchant_id"])


def downgrade() -> None:
    op.drop_index(f"ix_{TABLE}_merchant_id", table_name=TABLE)
    op.drop_table(TABLE)
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("language")
        batch.drop_column("ascii_city")
        batch.drop_column("ascii_name")
