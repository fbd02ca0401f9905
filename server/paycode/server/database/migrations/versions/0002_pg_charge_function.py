"""The charge transaction as a PostgreSQL function (migrations/sql/0002_charge_function.sql);
nothing on SQLite.

Later changes to the function are new migrations, each with its own frozen SQL file in
database/migrations/sql/ (paycode.server.database.functions).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from paycode.server.database import functions

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    functions.install(op.get_bind(), "0002_charge_function.sql")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS paycode_charge")
        op.execute("DROP FUNCTION IF EXISTS paycode_charge_claimed")
