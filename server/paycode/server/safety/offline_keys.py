"""The server's offline keys: Ed25519 keys that sign offline certificates (docs/offline.md §2.3,
§4.1).

Kept like the QR keys (paycode.server.safety.qr_keys): sealed under the master key in
`server_keys` (purpose "offline"), created at init-db, cached per process for KEYS_TTL_S. A
key's public id is the first 4 bytes of SHA-256 of its public key, so a till needs no lookup
to trust it. A new key is published as `next` for `key_publish_s` before it signs, so every
till that may sell offline holds it first; the previous key then stays `old` and verifies until
it is retired, which is refused while a certificate it signed can still settle.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from paycode.server.database.models import ServerKey
from paycode.server.database.offline_models import OfflineCertificate
from paycode.server.safety.keyring import KEYS_TTL_S, OFFLINE_PURPOSE, live_rows, new_key_row
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.codes import ErrorCode
from paycode.shared.emv.qr_signature import b64url
from paycode.shared.errors import ApiError, ConfigError
from paycode.shared.offline import CertificateFields, key_id, sign_certificate

DRAWS_MAX = 8
"""A new key whose 4-byte id collides with a live one is drawn again, at most this often."""


@dataclass(frozen=True, slots=True)
class OfflineKey:
    row_id: str
    key_id: bytes
    """SHA-256(public key)[0:4]: what certificates and tills name it by."""
    public_key: bytes
    created_at_s: float
    seed: bytes = field(repr=False)


@dataclass(frozen=True)
class OfflineKeys:
    live: tuple[OfflineKey, ...]
    """Every live key, newest first."""
    signing: OfflineKey
    by_id: Mapping[bytes, OfflineKey]

    def sign(self, fields: CertificateFields) -> bytes:
        """The 137-byte certificate; `fields.server_key_id` must name the signing key."""
        return sign_certificate(fields, self.signing.seed)

    def status(self, key: OfflineKey) -> str:
        if key.row_id == self.signing.row_id:
            return "signing"
        return "next" if key.created_at_s > self.signing.created_at_s else "old"

    def public_json(self, accept_until_s: int) -> list[dict[str, object]]:
        """What `GET /v1/offline/keys` publishes: every live key; a till accepts certificates
        of one until `accept_until_s` (its next fetch will say again)."""
        return [
            {
                "key_id": key.key_id.hex(),
                "public_key": b64url(key.public_key),
                "status": self.status(key),
                "accept_until_s": accept_until_s,
            }
            for key in self.live
        ]


def _public(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def _signing(live: tuple[OfflineKey, ...], now_s: float, publish_s: float) -> OfflineKey:
    """The newest key published for at least `publish_s`; the oldest when none is (the first
    key signs at once: no till can hold a key before the first one exists)."""
    for key in live:
        if key.created_at_s <= now_s - publish_s:
            return key
    return live[-1]


_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[Engine, tuple[float, tuple[OfflineKey, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _live_keys(bind: Session | Engine, box: SecretBox) -> tuple[OfflineKey, ...]:
    engine = bind if isinstance(bind, Engine) else bind.get_bind().engine
    with _lock:
        cached = _cache.get(engine)
        if cached is not None and time.monotonic() - cached[0] < KEYS_TTL_S:
            return cached[1]
    rows = live_rows(bind, OFFLINE_PURPOSE)
    live = []
    for row in rows:
        seed = box.open(row.key_id, row.key_sealed, row_id=row.id)
        public = _public(seed)
        live.append(OfflineKey(row.id, key_id(public), public, row.created_at_s, seed))
    keys = tuple(live)
    with _lock:
        _cache[engine] = (time.monotonic(), keys)
    return keys


def load_offline_keys(
    bind: Session | Engine, box: SecretBox, *, now_s: float, publish_s: float
) -> OfflineKeys:
    live = _live_keys(bind, box)
    if not live:
        raise ConfigError("no offline key: run 'paycode-server init-db' once after upgrading")
    by_id = MappingProxyType({key.key_id: key for key in live})
    return OfflineKeys(live, _signing(live, now_s, publish_s), by_id)


def forget_cache() -> None:
    with _lock:
        _cache.clear()


def add_key(session: Session, box: SecretBox, now_s: float) -> str:
    """A new offline key, published at once and signing after `key_publish_s`; its id (hex)."""
    taken = {key.key_id for key in _live_keys(session, box)}
    for _ in range(DRAWS_MAX):
        seed = os.urandom(32)
        public_id = key_id(_public(seed))
        if public_id not in taken:
            session.add(new_key_row(box, OFFLINE_PURPOSE, seed, now_s))
            forget_cache()
            return public_id.hex()
    raise ApiError(ErrorCode.INTERNAL_ERROR, "could not draw an offline key with a fresh id")


def last_settle_s(session: Session, public_id_hex: str, grace_s: float) -> float | None:
    """When the last certificate this key signed can no longer settle; None: it signed none."""
    expiry = session.scalar(
        select(func.max(OfflineCertificate.expires_at_s)).where(
            OfflineCertificate.server_key_id == public_id_hex
        )
    )
    return None if expiry is None else float(expiry) + grace_s


def retire_key(
    session: Session,
    box: SecretBox,
    public_id_hex: str,
    *,
    now_s: float,
    grace_s: float,
    force: bool,
) -> None:
    """Certificates of this key stop paying at once (tills at their next fetch). Refused while
    one can still settle unless `force` (a leaked key), and for the last live key."""
    live = _live_keys(session, box)
    found = next((key for key in live if key.key_id.hex() == public_id_hex), None)
    if found is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no live offline key {public_id_hex[:16]!r}")
    if len(live) == 1:
        raise ApiError(
            ErrorCode.INVALID_ARGUMENT,
            "the last live offline key cannot be retired: rotate-offline first",
        )
    settles_until_s = last_settle_s(session, public_id_hex, grace_s)
    if not force and settles_until_s is not None and settles_until_s > now_s:
        raise ApiError(
            ErrorCode.INVALID_ARGUMENT,
            f"certificates of {public_id_hex} can settle until {settles_until_s:.0f}: retiring it "
            "now refuses their payments (use --force only for a leaked key)",
        )
    row = session.get(ServerKey, found.row_id)
    assert row is not None and row.retired_at_s is None
    row.retired_at_s = now_s
    forget_cache()


def key_rows(
    session: Session, box: SecretBox, *, now_s: float, publish_s: float
) -> list[dict[str, object]]:
    """Every offline key ever made, newest first, with its status."""
    rows = session.scalars(
        select(ServerKey)
        .where(ServerKey.purpose == OFFLINE_PURPOSE)
        .order_by(ServerKey.created_at_s.desc(), ServerKey.id)
    ).all()
    keys = load_offline_keys(session, box, now_s=now_s, publish_s=publish_s)
    status = {key.row_id: keys.status(key) for key in keys.live}
    return [
        {
            "key_id": key_id(_public(box.open(row.key_id, row.key_sealed, row_id=row.id))).hex(),
            "status": "retired" if row.retired_at_s is not None else status[row.id],
            "created_at_s": row.created_at_s,
            "retired_at_s": row.retired_at_s,
        }
        for row in rows
    ]
