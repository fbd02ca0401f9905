"""What the code serving a request reaches through the app: its one configuration object and
the long-lived services `create_app` built from it. Read inside a request or app context."""

from __future__ import annotations

from flask import current_app

from paycode.server.charge.batch_writer import BatchWriter, WriterSlot
from paycode.server.config import ServerConfig
from paycode.server.database.directory import Directory
from paycode.server.safety.secretbox import SecretBox

CONFIG_KEY = "PAYCODE"
"""app.config[CONFIG_KEY] is the ServerConfig the app was made with."""
CHARGE_WRITER_KEY = "paycode_charge_writer"
"""app.extensions[CHARGE_WRITER_KEY]: the WriterSlot, or None (SQLite, batching off)."""


def config() -> ServerConfig:
    value: ServerConfig = current_app.config[CONFIG_KEY]
    return value


def secret_box() -> SecretBox:
    box: SecretBox = current_app.extensions["paycode_secrets"]
    return box


def directory() -> Directory:
    found: Directory = current_app.extensions["paycode_directory"]
    return found


def charge_writer() -> BatchWriter | None:
    """This process's charge writer (paycode.server.charge.batch_writer), made on first use;
    None on SQLite or with PAYCODE_CHARGE_BATCH=1."""
    slot: WriterSlot | None = current_app.extensions.get(CHARGE_WRITER_KEY)
    return None if slot is None else slot.writer()
