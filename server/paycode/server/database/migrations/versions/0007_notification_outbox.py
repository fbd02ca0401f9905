"""Merchant notifications (paycode.server.notifications.events): the outbox every payment state
change
writes to in its own transaction, and each merchant's sealed notification signing key. The
charge functions learn to write the outbox (migrations/sql/0007_charge_function.sql).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from paycode.server.database import functions

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "notification_outbox"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        sa.Column("payment_id", sa.String(length=32), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at_s", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at_s", sa.Float(), nullable=True),
        sa.Column("delivered_at_s", sa.Float(), nullable=True),
        sa.Column("dead_at_s", sa.Float(), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(f"ix_{TABLE}_next_attempt_at_s", TABLE, ["next_attempt_at_s"])
    op.create_index(f"ix_{TABLE}_payment_id", TABLE, ["payment_id"])
    op.create_index(f"ix_{TABLE}_delivered_at_s", TABLE, ["delivered_at_s"])
    op.create_index(f"ix_{TABLE}_merchant_created", TABLE, ["merchant_id", "created_at_s"])
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("notify_secret_sealed", sa.LargeBinary(64), nullable=True))
    functions.install(op.get_bind(), "0007_charge_function.sql")


def downgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("notify_secret_sealed")
        batch.drop_column("key_id")
    op.drop_index(f"ix_{TABLE}_merchant_created", table_name=TABLE)
    op.drop_index(f"ix_{TABLE}_delivered_at_s", table_name=TABLE)
    op.drop_index(f"ix_{TABLE}_payment_id", table_name=TABLE)
    op.drop_index(f"ix_{TABLE}_next_attempt_at_s", table_name=TABLE)
    op.drop_table(TABLE)
