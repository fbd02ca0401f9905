"""SQLite locking: requests take the write lock up front; read-only look-ups never wait for it."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import text

from server.db import make_engine, read_only


def test_read_only_lookup_inside_a_write_transaction_does_not_wait(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    try:
        with engine.begin() as setup:
            setup.execute(text("CREATE TABLE t (x INTEGER)"))
            setup.execute(text("INSERT INTO t VALUES (1)"))
        with engine.begin() as writer:  # BEGIN IMMEDIATE: this thread holds the write lock
            writer.execute(text("UPDATE t SET x = 2"))
            started = time.monotonic()
            with read_only(engine) as reader:
                seen = reader.execute(text("SELECT x FROM t")).scalar_one()
            assert time.monotonic() - started < 1.0, "the look-up waited for the write lock"
            assert seen == 1  # WAL: the reader sees the last committed state
    finally:
        engine.dispose()
