"""SQLite locking: requests take the write lock up front; read-only look-ups never wait for it."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from sqlalchemy import text

from paycode.server.database.engine import make_engine, read_only


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


def test_a_new_sqlite_database_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask, under which SQLite alone would make 0644
    try:
        path = tmp_path / "new.db"
        engine = make_engine(f"sqlite:///{path}")
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
            connection.execute(text("INSERT INTO t VALUES (1)"))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("new.db*")}
        engine.dispose()
    finally:
        os.umask(old_umask)
    assert {"new.db", "new.db-wal"} <= set(modes), modes
    assert set(modes.values()) == {0o600}, modes


def test_an_existing_sqlite_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "kept.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    make_engine(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
