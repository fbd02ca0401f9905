"""The PostgreSQL functions, as each migration installed them (database/migrations/sql/).

A migration that changes a function ships the whole SQL it installs in a file of its own and
never edits an older one, so upgrading through an old revision installs exactly what that
revision installed when it was released (tests/database/test_migrations.py holds the released
files to their digests). `CHARGE_FUNCTIONS_SQL` names the file whose functions the running
code calls (paycode.server.charge.postgres): the newest. SQLite has no functions: there the
same charge runs as statements (paycode.server.charge.steps, the reference).
"""

from __future__ import annotations

from importlib import resources

from sqlalchemy import Connection

CHARGE_FUNCTIONS_SQL = "0012_charge_function.sql"
"""The charge functions this code calls, as migration 0012 installed them."""


def frozen_sql(file_name: str) -> str:
    """The text of one migration's SQL file."""
    folder = resources.files("paycode.server.database.migrations").joinpath("sql")
    return folder.joinpath(file_name).read_text(encoding="utf-8")


def install(connection: Connection, file_name: str) -> None:
    """Run one migration's SQL file on PostgreSQL; nothing on SQLite."""
    if connection.dialect.name != "postgresql":
        return
    cursor = connection.connection.cursor()
    try:
        cursor.execute(frozen_sql(file_name))  # no parameters: the driver reads no '%'
    finally:
        cursor.close()


def install_current(connection: Connection) -> None:
    """The functions the running code calls, for a schema made without migrations
    (metadata.create_all in tests and benchmarks)."""
    install(connection, CHARGE_FUNCTIONS_SQL)
