"""Codes issued online (docs/spec.md §14): a device row may be a server-held issuer for one of
the user's devices (devices.online_for_device_id, one per device and version), each code it
makes holds a row of online_codes (its primary key allocates the code's step and counter), and
a payment records the issuer whose code paid it (payments.online_issuer_id). The charge
functions record that (migrations/sql/0012_charge_function.sql).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 01:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from paycode.server.database import functions

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PREVIOUS_SQL = "0010_charge_function.sql"
"""What a downgrade puts back: 0012's functions write a column 0011's tables do not have."""
CODES_PER_STEP = 10
"""paycode.server.database.online_models.ONLINE_CODES_PER_STEP when this revision was made."""


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("online_for_device_id", sa.String(length=32), nullable=True))
        batch.create_unique_constraint(
            "uq_device_online_for_version", ["online_for_device_id", "version"]
        )
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("online_issuer_id", sa.String(length=32), nullable=True))
    op.create_table(
        "online_codes",
        sa.Column("issuer_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("counter", sa.Integer(), nullable=False),
        sa.Column("issued_at_s", sa.Float(), nullable=False),
        sa.Column("expires_at_s", sa.Float(), nullable=False),
        sa.CheckConstraint(
            f"counter >= 0 AND counter < {CODES_PER_STEP}", name="ck_online_code_counter"
        ),
        sa.PrimaryKeyConstraint("issuer_id", "step", "counter"),
    )
    op.create_index(
        op.f("ix_online_codes_expires_at_s"), "online_codes", ["expires_at_s"], unique=False
    )
    functions.install(op.get_bind(), "0012_charge_function.sql")


def downgrade() -> None:
    """The tables as 0011 left them, and 0010's functions again: 0012's write
    payments.online_issuer_id, which goes."""
    functions.install(op.get_bind(), PREVIOUS_SQL)
    op.drop_index(op.f("ix_online_codes_expires_at_s"), table_name="online_codes")
    op.drop_table("online_codes")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("online_issuer_id")
    with op.batch_alter_table("devices") as batch:
        batch.drop_constraint("uq_device_online_for_version", type_="unique")
        batch.drop_column("online_for_device_id")
