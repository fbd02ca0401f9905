"""Points mandates (docs/spec.md §16): a user's consent that a merchant may deduct loyalty
points, the refunds of a redemption's points leg, and a payment's points leg.

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-07 01:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "points_mandates",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("asset", sa.String(length=3), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("rate_points", sa.BigInteger(), nullable=False),
        sa.Column("rate_minor", sa.BigInteger(), nullable=False),
        sa.Column("cap_per_payment_points", sa.BigInteger(), nullable=False),
        sa.Column("cap_per_day_points", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("expires_at_s", sa.Float(), nullable=False),
        sa.Column("created_at_s", sa.Float(), nullable=False),
        sa.Column("revoked_at_s", sa.Float(), nullable=True),
        sa.Column("consent", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Integer(), server_default="0", nullable=False),
        sa.Column("day_used_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("used_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("rate_points > 0 AND rate_minor > 0", name="ck_mandate_rate_positive"),
        sa.CheckConstraint(
            "cap_per_payment_points > 0 AND cap_per_payment_points <= cap_per_day_points",
            name="ck_mandate_caps",
        ),
        sa.CheckConstraint(
            "day_used_points >= 0 AND day_used_points <= cap_per_day_points",
            name="ck_mandate_day_within_cap",
        ),
        sa.CheckConstraint("used_points >= 0", name="ck_mandate_used_not_negative"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_points_mandates_user_created", "points_mandates", ["user_id", "created_at_s"]
    )
    op.create_index(
        "ix_points_mandates_merchant_created", "points_mandates", ["merchant_id", "created_at_s"]
    )
    op.create_table(
        "points_refunds",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("payment_id", sa.String(length=32), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("created_at_s", sa.Float(), nullable=False),
        sa.CheckConstraint("points > 0", name="ck_points_refund_positive"),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_points_refunds_payment_id", "points_refunds", ["payment_id"])
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("mandate_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("points", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("points_value_minor", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("points_refunded", sa.BigInteger(), server_default="0", nullable=False)
        )
    op.create_index("ix_payments_mandate_id", "payments", ["mandate_id"])


def downgrade() -> None:
    op.drop_index("ix_payments_mandate_id", table_name="payments")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("points_refunded")
        batch.drop_column("points_value_minor")
        batch.drop_column("points")
        batch.drop_column("mandate_id")
    op.drop_index("ix_points_refunds_payment_id", table_name="points_refunds")
    op.drop_table("points_refunds")
    op.drop_index("ix_points_mandates_merchant_created", table_name="points_mandates")
    op.drop_index("ix_points_mandates_user_created", table_name="points_mandates")
    op.drop_table("points_mandates")
