"""The server's verifier keys (v1/v2 hiding keys, v3 seal keys), kept sealed in the database.

Every worker and host reads the same rows, so they verify alike. Keys are cached per process
for KEYS_TTL_S: a rotation done in the database reaches every worker within that time.
"""

from __future__ import annotations

import os
import threading
import time
import weakref

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database.engine import read_only
from paycode.server.database.models import ServerKey, new_id
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.versions.base import VerifierKeys

KEYS_TTL_S = 30.0
HIDING_PURPOSES = {"hiding:v1": "v1", "hiding:v2": "v2"}
SEAL_PURPOSE = "seal"
QR_PURPOSE = "qr"
"""The Ed25519 seed that signs merchant QR payloads (paycode.server.safety.qr_keys)."""

_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[Engine, tuple[float, VerifierKeys, dict[str, bytes]]] = (
    weakref.WeakKeyDictionary()
)


def ensure_keys(session: Session, box: SecretBox, now_s: float) -> None:
    """Create any missing key (at init-db). A concurrent creator may race; both are kept live."""
    present = set(
        session.scalars(select(ServerKey.purpose).where(ServerKey.retired_at_s.is_(None)))
    )
    for purpose in (*HIDING_PURPOSES, SEAL_PURPOSE, QR_PURPOSE):
        if purpose in present:
            continue
        secret = os.urandom(32)
        row_id = new_id("sk")
        key_id, sealed = box.seal(secret, row_id=row_id)
        try:
            with session.begin_nested():
                session.add(
                    ServerKey(
                        id=row_id,
                        purpose=purpose,
                        key_id=key_id,
                        key_sealed=sealed,
                        created_at_s=now_s,
                    )
                )
        except IntegrityError:
            continue


def load_keys(bind: Session | Engine, box: SecretBox) -> tuple[VerifierKeys, dict[str, bytes]]:
    """(verifier keys, current public material for enrollment: hiding keys and seal public)."""
    engine = bind if isinstance(bind, Engine) else bind.get_bind().engine
    with _lock:
        cached = _cache.get(engine)
        if cached is not None and time.monotonic() - cached[0] < KEYS_TTL_S:
            return cached[1], cached[2]
    statement = (
        select(ServerKey.__table__)
        .where(ServerKey.retired_at_s.is_(None))
        .order_by(ServerKey.created_at_s.desc())
    )
    if isinstance(bind, Session):
        rows = bind.execute(statement).all()
    else:
        with read_only(engine) as connection:
            rows = connection.execute(statement).all()
    hiding: dict[str, list[bytes]] = {}
    seals: list[bytes] = []
    for row in rows:
        secret = box.open(row.key_id, row.key_sealed, row_id=row.id)
        if row.purpose == SEAL_PURPOSE:
            seals.append(secret)
        elif row.purpose in HIDING_PURPOSES:
            hiding.setdefault(HIDING_PURPOSES[row.purpose], []).append(secret)
    keys = VerifierKeys({v: tuple(k) for v, k in hiding.items()}, tuple(seals))
    current = {version: k[0] for version, k in hiding.items()}
    if seals:
        seal_public = X25519PrivateKey.from_private_bytes(seals[0]).public_key().public_bytes_raw()
        current["seal_public"] = seal_public
    with _lock:
        _cache[engine] = (time.monotonic(), keys, current)
    return keys, current


def forget_cache() -> None:
    with _lock:
        _cache.clear()
