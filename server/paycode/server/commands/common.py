"""What the paycode-server commands share: configuration, one session per command, errors."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session

from paycode.server.config import ServerConfig, instance_folder
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import PaycodeError
from paycode.shared.money import Money, format_amount

PROG = "paycode-server"
DB_MESSAGE_CHARS_MAX = 200

Subparsers = Any  # argparse's _SubParsersAction is private


class CliError(PaycodeError):
    """A command-level failure with its own stable code (password_required, ...)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class DatabaseError(PaycodeError):
    """The database refused or could not be reached; the message names the driver's reason."""

    code = ErrorCode.DATABASE_ERROR


# -- shared plumbing ---------------------------------------------------------------------------


def config(*, new_bank: bool = False) -> ServerConfig:
    """The configuration every command shares. Only `init-db` (`new_bank`) may start a bank:
    any other command on an SQLite database that does not exist is refused before a file or
    a master key is made, so a command run with the wrong PAYCODE_INSTANCE never opens a
    second, empty bank."""
    if not new_bank:
        missing = missing_sqlite_bank(os.environ)
        if missing is not None:
            raise CliError(
                ErrorCode.CONFIG_INVALID,
                f"no bank at {missing}: run `{PROG} init-db` to create one there, or set "
                "PAYCODE_INSTANCE (or PAYCODE_DATABASE_URL) to the bank you mean",
            )
    return ServerConfig.from_env()


def missing_sqlite_bank(env: Mapping[str, str]) -> Path | None:
    """The SQLite file the configuration names, when it does not exist (else None)."""
    url = env.get("PAYCODE_DATABASE_URL") or ""
    if not url:
        path = instance_folder(env) / "paycode.db"
    else:
        try:
            parsed = make_url(url)
        except ArgumentError:
            return None  # check_url reports it
        if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
            return None
        path = Path(parsed.database)
    return None if path.exists() else path


def hidden_url(url: str) -> str:
    """The URL for printing: a password in it is shown as ***."""
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def session(config: ServerConfig) -> Iterator[Session]:
    """One session on a fresh engine; commits if the block succeeds, rolls back otherwise."""
    from paycode.server.database.engine import make_engine  # noqa: PLC0415 - keeps `--help` and `versions` fast

    check_url(config.database_url)
    engine = make_engine(config.database_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
            session.commit()
    except DBAPIError as error:
        raise database_error(error) from None
    finally:
        engine.dispose()


SUPPORTED_DATABASES = "sqlite:///PATH or postgresql+psycopg://USER@HOST/DATABASE"
_SUPPORTED_DRIVERS = frozenset({("sqlite", "pysqlite"), ("postgresql", "psycopg")})
"""(backend, driver) pairs the server is built and tested on; SQLAlchemy knows many more
(mysql, oracle, postgresql's default psycopg2) whose driver is not installed."""


def check_url(url: str) -> None:
    """A URL the server cannot use fails with config_invalid, before any connection: one
    SQLAlchemy cannot read, or one for a database or driver the server does not support."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except ArgumentError as error:  # includes an unknown dialect or a missing driver
        raise CliError(
            ErrorCode.CONFIG_INVALID,
            f"PAYCODE_DATABASE_URL is not usable: {error}; use {SUPPORTED_DATABASES}",
        ) from None
    used = (parsed.get_backend_name(), parsed.get_driver_name())
    if used not in _SUPPORTED_DRIVERS:
        raise CliError(
            ErrorCode.CONFIG_INVALID,
            f"PAYCODE_DATABASE_URL names {'+'.join(used)}, which this server does not support: "
            f"use {SUPPORTED_DATABASES}",
        )


def database_error(error: DBAPIError) -> DatabaseError:
    """The driver's first line (never the SQL or its parameters), plus what usually fixes it."""
    reason = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ""
    reason = reason[:DB_MESSAGE_CHARS_MAX] or type(error.orig).__name__
    return DatabaseError(
        f"{reason} (check PAYCODE_DATABASE_URL and run `{PROG} init-db` first)",
    )


def money_text(amount_minor: int, currency: str) -> str:
    return format_amount(Money(amount_minor, currency))
