"""Alembic environment, driven only from code (server.migrate): there is no alembic.ini.

The database comes from the Alembic Config's attributes: an open `connection`, or a
`database_url` for which an engine is made with server.db.make_engine (so SQLite gets the same
WAL mode and BEGIN IMMEDIATE as the running server). SQLite cannot ALTER most things, so
migrations are rendered and run in batch mode there.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from paycode.server.database.engine import make_engine
from paycode.server.database.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    attributes = context.config.attributes
    connection: Connection | None = attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = attributes.get("database_url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set Config.attributes['database_url'] (see server.migrate)")
    engine = make_engine(str(url))
    try:
        with engine.connect() as connection_:
            _run(connection_)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; use init-db")
run_migrations_online()
