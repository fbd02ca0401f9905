"""Failure counters of the guessing guard (paycode.server.safety.guard); the charge functions learn
to use
them (migrations/sql/0005_charge_function.sql: it drops
and recreates them).
Merchants get an optional allow-list of networks their terminals may call from.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 13:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from paycode.server.database import functions

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "failure_counters",
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("window_start_s", sa.Float(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("strikes", sa.Integer(), nullable=False),
        sa.Column("blocked_until_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("scope"),
    )
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(sa.Column("allowed_cidrs", sa.Text(), nullable=True))
    functions.install(op.get_bind(), "0005_charge_function.sql")


def downgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("allowed_cidrs")
    op.drop_table("failure_counters")
