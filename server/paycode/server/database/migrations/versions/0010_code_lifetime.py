"""Codes keep the lifetime docs/spec.md §2 states, and a reused order id burns no code (§3):
the charge functions claim a genuine code refused for time, and check the merchant's order
before claiming (migrations/sql/0010_charge_function.sql). No table changes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from paycode.server.database import functions

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    functions.install(op.get_bind(), "0010_charge_function.sql")


def downgrade() -> None:
    """Nothing to undo in the tables; the functions stay as installed (like 0005-0007, a
    downgrade does not re-install an older file: the running code names the one it calls)."""
