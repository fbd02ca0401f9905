"""Schema migrations from code: `upgrade(database_url)` brings a database to the newest schema.

The Alembic Config is built here rather than read from an alembic.ini, so an installed server
(wheel or editable) migrates with nothing but PAYCODE_DATABASE_URL: the scripts ship inside the
`server.migrations` package.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """A programmatic Alembic Config; env.py reads the URL from its attributes."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str) -> None:
    """Apply every migration not yet applied (idempotent: a current database is left alone)."""
    command.upgrade(alembic_config(database_url), "head")


def head_revision() -> str:
    """The newest revision the shipped migrations define."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - rarely needed

    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None, "the migrations directory defines a head"
    return head


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415 - rarely needed

    from paycode.server.database.engine import make_engine  # noqa: PLC0415

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
