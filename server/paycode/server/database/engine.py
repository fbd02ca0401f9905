"""The database extension: one engine per app, one session per request (flask.g).

SQLite (the default) runs in WAL mode with foreign keys on, and every transaction starts with
BEGIN IMMEDIATE so two writers queue instead of failing mid-transaction. PostgreSQL is used as
is: READ COMMITTED, conditional updates and unique constraints decide every race.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, g
from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:  # the configuration imports the parts; they only name its type
    from paycode.server.config import ServerConfig


SQLITE_BUSY_TIMEOUT_MS = 10_000
READ_ONLY_OPTION = "paycode_read_only"
POOL_RECYCLE_S = 1800


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _create_owner_only(make_url(url).database)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _tune_sqlite(engine)
        return engine
    # No pre-ping: it would cost a round trip per request. A connection found dead when used
    # fails that one request with a retryable 503 (server.problems) and the pool is refreshed.
    return create_engine(url, pool_size=8, max_overflow=8, pool_recycle=POOL_RECYCLE_S)


def _create_owner_only(path: str | None) -> None:
    """Create a new SQLite file 0600 before SQLite does (it would follow the umask, often 0644):
    it holds password hashes, sealed secrets and every payment. SQLite gives its -wal and -shm
    files the database file's permissions. An existing file is left as its owner set it."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A read-only look-up (a cache miss) takes no write lock, so it can run while this
        # thread's own request transaction holds one; everything else queues as a writer.
        reads_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN" if reads_only else "BEGIN IMMEDIATE")


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection for reads only. On SQLite its transaction is a plain (deferred) BEGIN,
    which never waits for a writer in WAL mode: a cache miss inside a request that already
    holds the write lock would otherwise wait out the busy timeout on itself."""
    with engine.connect() as connection:
        yield connection.execution_options(**{READ_ONLY_OPTION: True})


class Database:
    """Flask extension: `db.init_app(app)`, then `db.session` inside a request."""

    def init_app(self, app: Flask) -> None:
        config: ServerConfig = app.config["PAYCODE"]
        engine = make_engine(config.database_url)
        app.extensions["paycode_db"] = sessionmaker(engine, expire_on_commit=False)
        app.extensions["paycode_engine"] = engine
        app.teardown_appcontext(self._close)

    @property
    def engine(self) -> Engine:
        engine: Engine = current_app.extensions["paycode_engine"]
        return engine

    @property
    def session(self) -> Session:
        session: Session | None = g.get("paycode_session")
        if session is None:
            session = current_app.extensions["paycode_db"]()
            g.paycode_session = session
        return session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One database transaction; commits on success, rolls back on any exception."""
        session = self.session
        with session.begin():
            yield session

    @staticmethod
    def _close(_error: BaseException | None) -> None:
        session: Session | None = g.pop("paycode_session", None)
        if session is not None:
            session.close()


db = Database()
