"""Offline on both sides (docs/offline.md §6.2): allowances and their certificates, acceptances
forwarded by tills, each till's position in its hash chain; a payment's allowance, a merchant's
offline floor limit, a user's offline block.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 20:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIMING = "result IN ('paid', 'paid_short', 'unpaid', 'late')"
RESULTS = (
    "'paid', 'paid_short', 'unpaid', 'late', 'refused_invalid', 'duplicate', 'duplicate_order'"
)


def _allowances() -> None:
    op.create_table(
        "offline_allowances",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at_s", sa.Float(), nullable=False),
        sa.Column("expires_at_s", sa.Float(), nullable=False),
        sa.Column("returns_at_s", sa.Float(), nullable=False),
        sa.Column("ended_at_s", sa.Float(), nullable=True),
        sa.CheckConstraint("amount_minor > 0", name="ck_allowance_amount_positive"),
        sa.CheckConstraint("state IN ('live', 'returned', 'swept')", name="ck_allowance_state"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_offline_allowances_user_created", "offline_allowances", ["user_id", "created_at_s"]
    )
    op.create_index(
        "ix_offline_allowances_state_returns", "offline_allowances", ["state", "returns_at_s"]
    )
    op.create_table(
        "offline_certificates",
        sa.Column("cert_id", sa.String(length=32), nullable=False),
        sa.Column("allowance_id", sa.String(length=32), nullable=False),
        sa.Column("server_key_id", sa.String(length=8), nullable=False),
        sa.Column("body", sa.LargeBinary(length=137), nullable=False),
        sa.Column("offline_pk", sa.LargeBinary(length=32), nullable=False),
        sa.Column("total_cap_minor", sa.BigInteger(), nullable=False),
        sa.Column("count_max", sa.Integer(), nullable=False),
        sa.Column("expires_at_s", sa.Float(), nullable=False),
        sa.Column("returned_counter", sa.Integer(), nullable=True),
        sa.Column("returned_spent_minor", sa.BigInteger(), nullable=True),
        sa.Column("denied_at_s", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["allowance_id"], ["offline_allowances.id"]),
        sa.PrimaryKeyConstraint("cert_id"),
        sa.UniqueConstraint("offline_pk"),
    )
    op.create_index(
        "ix_offline_certificates_allowance_id", "offline_certificates", ["allowance_id"]
    )


def _acceptances() -> None:
    op.create_table(
        "offline_acceptances",
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("allowance_id", sa.String(length=32), nullable=True),
        sa.Column("cert_id", sa.String(length=32), nullable=True),
        sa.Column("counter", sa.Integer(), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("merchant_order_id", sa.String(length=64), nullable=True),
        sa.Column("at_s", sa.Float(), nullable=False),
        sa.Column("arrived_at_s", sa.Float(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("paid_minor", sa.BigInteger(), nullable=False),
        sa.Column("loss_minor", sa.BigInteger(), nullable=False),
        sa.Column("payment_id", sa.String(length=32), nullable=True),
        sa.Column("loss_transaction_id", sa.String(length=32), nullable=True),
        sa.CheckConstraint(f"result IN ({RESULTS})", name="ck_acceptance_result"),
        sa.CheckConstraint(
            "paid_minor >= 0 AND loss_minor >= 0 AND amount_minor > 0",
            name="ck_acceptance_amounts",
        ),
        sa.CheckConstraint(
            "paid_minor + loss_minor = amount_minor"
            " OR (result IN ('duplicate', 'duplicate_order')"
            " AND paid_minor = 0 AND loss_minor = 0)",
            name="ck_acceptance_settled_whole",
        ),
        sa.PrimaryKeyConstraint("terminal_id", "id"),
        sa.UniqueConstraint("terminal_id", "seq", name="uq_acceptance_terminal_seq"),
    )
    op.create_index(
        "uq_acceptance_merchant_code",
        "offline_acceptances",
        ["merchant_id", "cert_id", "counter"],
        unique=True,
        postgresql_where=sa.text(CLAIMING),
        sqlite_where=sa.text(CLAIMING),
    )
    op.create_index("ix_acceptance_cert_counter", "offline_acceptances", ["cert_id", "counter"])
    op.create_index(
        "ix_acceptance_merchant_arrived", "offline_acceptances", ["merchant_id", "arrived_at_s"]
    )
    op.create_index("ix_offline_acceptances_allowance_id", "offline_acceptances", ["allowance_id"])
    op.create_table(
        "offline_terminals",
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("terminal_id"),
    )


def upgrade() -> None:
    _allowances()
    _acceptances()
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("allowance_id", sa.String(length=32), nullable=True))
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(sa.Column("offline_floor_minor", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("offline_blocked_at_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("offline_blocked_at_s")
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("offline_floor_minor")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("allowance_id")
    op.drop_table("offline_terminals")
    op.drop_index("ix_offline_acceptances_allowance_id", table_name="offline_acceptances")
    op.drop_index("ix_acceptance_merchant_arrived", table_name="offline_acceptances")
    op.drop_index("ix_acceptance_cert_counter", table_name="offline_acceptances")
    op.drop_index("uq_acceptance_merchant_code", table_name="offline_acceptances")
    op.drop_table("offline_acceptances")
    op.drop_index("ix_offline_certificates_allowance_id", table_name="offline_certificates")
    op.drop_table("offline_certificates")
    op.drop_index("ix_offline_allowances_state_returns", table_name="offline_allowances")
    op.drop_index("ix_offline_allowances_user_created", table_name="offline_allowances")
    op.drop_table("offline_allowances")
