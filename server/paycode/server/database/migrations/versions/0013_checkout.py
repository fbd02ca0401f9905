"""Hosted checkout and payment links (docs/spec.md, section 15): an order's kind (a till's
order, a web shop's checkout, a payment link), where a checkout returns its customer, and how
many payments a link takes and has taken.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-07 01:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "orders"
PAID_COUNT_CHECK = "ck_order_paid_count"


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), server_default="till", nullable=False)
        )
        batch.add_column(sa.Column("return_url", sa.String(length=2000), nullable=True))
        batch.add_column(sa.Column("payments_max", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("paid_count", sa.Integer(), server_default="0", nullable=False))
        # The database, not the code, keeps a link from taking more payments than it allows.
        batch.create_check_constraint(
            PAID_COUNT_CHECK,
            "paid_count >= 0 AND (payments_max IS NULL OR paid_count <= payments_max)",
        )


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(PAID_COUNT_CHECK, type_="check")
        batch.drop_column("paid_count")
        batch.drop_column("payments_max")
        batch.drop_column("return_url")
        batch.drop_column("kind")
