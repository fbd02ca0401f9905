"""A server configuration for tests that build an app in this process on an SQLite file."""

from __future__ import annotations

import os
from pathlib import Path

from paycode.server.config import ServerConfig


def sqlite_test_config(folder: Path, file_name: str = "x.db") -> ServerConfig:
    """An SQLite bank in `folder` with a fresh master key; `testing` on."""
    return ServerConfig(
        database_url=f"sqlite:///{folder / file_name}",
        instance_path=folder,
        master_keys={"mk1": os.urandom(32)},
        master_key_id="mk1",
        testing=True,
    )
