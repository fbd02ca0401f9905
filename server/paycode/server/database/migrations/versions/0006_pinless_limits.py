"""Password-free limits and step-up confirmation (paycode.server.safety.limits): per-account limits
and
today's use, the user's payment PIN, a pending payment's deadline, and device locks after
repeated bad codes. The charge functions learn them (migrations/sql/0006_charge_function.sql).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from paycode.server.database import functions

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACCOUNT_COLUMNS = (
    ("pinless_payment_max_minor", sa.BigInteger(), None),
    ("pinless_daily_max_minor", sa.BigInteger(), None),
    ("pinless_daily_count_max", sa.Integer(), None),
    ("pinless_day", sa.Integer(), "0"),
    ("pinless_day_count", sa.Integer(), "0"),
    ("pinless_day_minor", sa.BigInteger(), "0"),
)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("pin_hash", sa.String(length=256), nullable=True))
    with op.batch_alter_table("accounts") as batch:
        for name, kind, default in ACCOUNT_COLUMNS:
            batch.add_column(
                sa.Column(name, kind, nullable=default is None, server_default=default)
            )
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("confirm_by_s", sa.Float(), nullable=True))
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("locked_at_s", sa.Float(), nullable=True))
    functions.install(op.get_bind(), "0006_charge_function.sql")


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("locked_at_s")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("confirm_by_s")
    with op.batch_alter_table("accounts") as batch:
        for name, _, _ in reversed(ACCOUNT_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("users") as batch:
        batch.drop_column("pin_hash")
