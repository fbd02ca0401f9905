"""Server configuration, read from the environment once at start (never per request).

PAYCODE_DATABASE_URL   SQLAlchemy URL; default an SQLite file in the instance folder
PAYCODE_INSTANCE       instance folder (database, master key file); default ./instance
PAYCODE_MASTER_KEY     base64 of 32 bytes; default the key file instance/master.key (0600),
                       created at first start
PAYCODE_MASTER_KEY_ID  id stored with every row the master key encrypts; default "mk1"
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import PaycodeError

MASTER_KEY_BYTES = 32
MASTER_KEY_FILE = "master.key"


class ConfigError(PaycodeError):
    code = "config_invalid"


@dataclass(frozen=True)
class ServerConfig:
    database_url: str
    instance_path: Path
    master_keys: dict[str, bytes] = field(repr=False)
    """key id -> AES-256 key; decrypts rows written under any of them."""
    master_key_id: str = "mk1"
    """The key new rows are encrypted under (rotation: add a new id, re-wrap, drop the old)."""
    session_ttl_s: int = 300
    request_skew_s_max: int = 300
    body_bytes_max: int = 64 * 1024
    testing: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ServerConfig:
        env = os.environ if env is None else env
        instance = Path(env.get("PAYCODE_INSTANCE") or "instance").resolve()
        url = env.get("PAYCODE_DATABASE_URL") or f"sqlite:///{instance / 'paycode.db'}"
        key_id = env.get("PAYCODE_MASTER_KEY_ID") or "mk1"
        keys = {key_id: _master_key(env.get("PAYCODE_MASTER_KEY"), instance)}
        values: dict[str, object] = {
            "database_url": url,
            "instance_path": instance,
            "master_keys": keys,
            "master_key_id": key_id,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _master_key(from_env: str | None, instance: Path) -> bytes:
    if from_env:
        try:
            key = base64.b64decode(from_env, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ConfigError("PAYCODE_MASTER_KEY is not base64") from error
        if len(key) != MASTER_KEY_BYTES:
            raise ConfigError("PAYCODE_MASTER_KEY must decode to 32 bytes")
        return key
    return _key_file(instance / MASTER_KEY_FILE)


def _key_file(path: Path) -> bytes:
    """Read the key file, creating it (0600, exclusively) on first start."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64encode(os.urandom(MASTER_KEY_BYTES)) + b"\n")
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} must be readable by its owner only (chmod 600)")
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ConfigError(f"{path} does not hold a base64 key") from error
    if len(key) != MASTER_KEY_BYTES:
        raise ConfigError(f"{path} must hold 32 bytes of key")
    return key
