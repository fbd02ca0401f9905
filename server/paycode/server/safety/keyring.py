"""The server's verifier keys (v1/v2 hiding keys, v3 seal keys), kept sealed in the database.

Every worker and host reads the same rows, so they verify alike. Keys are cached per process
for KEYS_TTL_S: a rotation or retirement done in the database reaches every worker within that
time. Every live key verifies; wallets are handed one key per version, the newest that has been
live for HANDOUT_DELAY_S (docs/spec.md §7), so no wallet makes a code with a key that a server
still running on an older cache would refuse. Rotating and retiring: paycode.server.safety.
code_keys.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database.engine import read_only
from paycode.server.database.models import ServerKey, new_id
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.versions.base import VerifierKeys

KEYS_TTL_S = 30.0
HANDOUT_DELAY_S = 2 * KEYS_TTL_S
"""A new key is handed to wallets only once it is this old: by then every server's cache has
reloaded since the key was made (one KEYS_TTL_S), with one more TTL for clocks that disagree."""
HIDING_PURPOSES = {"hiding:v1": "v1", "hiding:v2": "v2"}
SEAL_PURPOSE = "seal"
QR_PURPOSE = "qr"
"""The Ed25519 seed that signs merchant QR payloads (paycode.server.safety.qr_keys)."""
OFFLINE_PURPOSE = "offline"
"""The Ed25519 seed that signs offline certificates (paycode.server.safety.offline_keys)."""
PURPOSE_OF_VERSION = {"v1": "hiding:v1", "v2": "hiding:v2", "v3": SEAL_PURPOSE}


@dataclass(frozen=True, slots=True)
class Keyring:
    verifier: VerifierKeys
    """Every live key, newest first: what verification tries."""
    current: Mapping[str, bytes] = field(repr=False)
    """What wallets are handed: version -> hiding key (v1, v2), "seal_public" -> S_pub (v3)."""
    current_ids: Mapping[str, str]
    """version -> the row id of the key handed out (v1, v2, v3)."""


_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[Engine, tuple[float, Keyring]] = weakref.WeakKeyDictionary()


def ensure_keys(session: Session, box: SecretBox, now_s: float) -> None:
    """Create any missing key (at init-db). A concurrent creator may race; both are kept live."""
    present = set(
        session.scalars(select(ServerKey.purpose).where(ServerKey.retired_at_s.is_(None)))
    )
    for purpose in (*HIDING_PURPOSES, SEAL_PURPOSE, QR_PURPOSE, OFFLINE_PURPOSE):
        if purpose in present:
            continue
        try:
            with session.begin_nested():
                session.add(new_key_row(box, purpose, os.urandom(32), now_s))
        except IntegrityError:
            continue


def new_key_row(box: SecretBox, purpose: str, secret: bytes, now_s: float) -> ServerKey:
    row_id = new_id("sk")
    key_id, sealed = box.seal(secret, row_id=row_id)
    return ServerKey(
        id=row_id, purpose=purpose, key_id=key_id, key_sealed=sealed, created_at_s=now_s
    )


def live_rows(bind: Session | Engine, purpose: str) -> Sequence[Any]:
    """The live `server_keys` rows of one purpose, newest first, read in `bind`'s transaction
    (a Session) or on a read-only connection of its own (an Engine)."""
    statement = (
        select(ServerKey.__table__)
        .where(ServerKey.purpose == purpose, ServerKey.retired_at_s.is_(None))
        .order_by(ServerKey.created_at_s.desc(), ServerKey.id)
    )
    if isinstance(bind, Session):
        return bind.execute(statement).all()
    engine = bind
    with read_only(engine) as connection:
        return connection.execute(statement).all()


def load_keys(bind: Session | Engine, box: SecretBox) -> tuple[VerifierKeys, dict[str, bytes]]:
    """(verifier keys, current public material for enrollment: hiding keys and seal public)."""
    keyring = load_keyring(bind, box)
    return keyring.verifier, dict(keyring.current)


def load_keyring(bind: Session | Engine, box: SecretBox) -> Keyring:
    engine = bind if isinstance(bind, Engine) else bind.get_bind().engine
    with _lock:
        cached = _cache.get(engine)
        if cached is not None and time.monotonic() - cached[0] < KEYS_TTL_S:
            return cached[1]
    statement = (
        select(ServerKey.__table__)
        .where(ServerKey.retired_at_s.is_(None))
        .order_by(ServerKey.created_at_s.desc(), ServerKey.id)
    )
    if isinstance(bind, Session):
        rows = bind.execute(statement).all()
    else:
        with read_only(engine) as connection:
            rows = connection.execute(statement).all()
    keyring = _build(rows, box, time.time())
    with _lock:
        _cache[engine] = (time.monotonic(), keyring)
    return keyring


def _build(rows: Sequence[Any], box: SecretBox, now_s: float) -> Keyring:
    by_version: dict[str, list[tuple[Any, bytes]]] = {}
    for row in rows:
        version = "v3" if row.purpose == SEAL_PURPOSE else HIDING_PURPOSES.get(row.purpose)
        if version is not None:
            secret = box.open(row.key_id, row.key_sealed, row_id=row.id)
            by_version.setdefault(version, []).append((row, secret))
    hiding = {v: tuple(s for _, s in keys) for v, keys in by_version.items() if v != "v3"}
    seals = tuple(s for _, s in by_version.get("v3", []))
    current: dict[str, bytes] = {}
    current_ids: dict[str, str] = {}
    for version, keys in by_version.items():
        row, secret = handed_out(keys, now_s)
        current_ids[version] = row.id
        if version == "v3":
            public = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
            current["seal_public"] = public
        else:
            current[version] = secret
    return Keyring(
        VerifierKeys(hiding, seals), MappingProxyType(current), MappingProxyType(current_ids)
    )


def handed_out(keys: Sequence[tuple[Any, bytes]], now_s: float) -> tuple[Any, bytes]:
    """Of one version's live keys (newest first), the newest at least HANDOUT_DELAY_S old;
    the oldest when none is (a bank's first key is handed out at once)."""
    for row, secret in keys:
        if row.created_at_s <= now_s - HANDOUT_DELAY_S:
            return row, secret
    return keys[-1]


def forget_cache() -> None:
    with _lock:
        _cache.clear()
