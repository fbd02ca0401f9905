"""The server's Ed25519 keys that sign the merchant QR payloads it issues (docs/spec.md, 12).

Kept like the verifier keys (paycode.server.safety.keyring): sealed under the master key in
`server_keys` (purpose "qr"), created at init-db, read by every worker and cached for
keyring.KEYS_TTL_S. The newest live key signs; every live key verifies, so a rotation keeps
old posters payable until the old key is retired. A key's id in a payload is its row id.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from paycode.server.database.models import ServerKey, new_id
from paycode.server.safety.keyring import KEYS_TTL_S, QR_PURPOSE, live_rows
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.codes import ErrorCode
from paycode.shared.emv.qr_signature import b64url
from paycode.shared.errors import ApiError, ConfigError


@dataclass(frozen=True)
class QrKeys:
    signing_key_id: str
    signing_seed: bytes = field(repr=False)
    public_keys: Mapping[str, bytes]
    """Key id -> Ed25519 public key, for every live key (newest first)."""

    def sign(self, message: bytes) -> tuple[str, bytes]:
        """A shared.emv.qr_signature.Signer."""
        key = Ed25519PrivateKey.from_private_bytes(self.signing_seed)
        return self.signing_key_id, key.sign(message)

    def public_json(self) -> list[dict[str, str]]:
        """What a wallet learns (at enrollment and from GET /v1/wallet/qr-keys)."""
        return [
            {
                "key_id": key_id,
                "public_key": b64url(public),
                "status": "current" if key_id == self.signing_key_id else "old",
            }
            for key_id, public in self.public_keys.items()
        ]


_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[Engine, tuple[float, QrKeys]] = weakref.WeakKeyDictionary()


def load_qr_keys(bind: Session | Engine, box: SecretBox) -> QrKeys:
    engine = bind if isinstance(bind, Engine) else bind.get_bind().engine
    with _lock:
        cached = _cache.get(engine)
        if cached is not None and time.monotonic() - cached[0] < KEYS_TTL_S:
            return cached[1]
    rows = live_rows(bind, QR_PURPOSE)
    if not rows:
        raise ConfigError("no QR signing key: run 'paycode-server init-db' once after upgrading")
    seeds = {row.id: box.open(row.key_id, row.key_sealed, row_id=row.id) for row in rows}
    public = {
        key_id: Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        for key_id, seed in seeds.items()
    }
    keys = QrKeys(rows[0].id, seeds[rows[0].id], MappingProxyType(public))
    with _lock:
        _cache[engine] = (time.monotonic(), keys)
    return keys


def forget_cache() -> None:
    with _lock:
        _cache.clear()


def add_key(session: Session, box: SecretBox, now_s: float) -> str:
    """A new QR signing key (it signs from now on); older live keys still verify."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    row_id = new_id("sk")
    key_id, sealed = box.seal(seed, row_id=row_id)
    session.add(
        ServerKey(
            id=row_id, purpose=QR_PURPOSE, key_id=key_id, key_sealed=sealed, created_at_s=now_s
        )
    )
    return row_id


def retire_key(session: Session, row_id: str, now_s: float) -> None:
    """Posters signed with `row_id` stop paying. The last live key cannot be retired."""
    live = session.scalars(
        select(ServerKey).where(ServerKey.purpose == QR_PURPOSE, ServerKey.retired_at_s.is_(None))
    ).all()
    found = next((row for row in live if row.id == row_id), None)
    if found is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no live QR key {row_id[:32]!r}")
    if len(live) == 1:
        raise ApiError(
            ErrorCode.INVALID_ARGUMENT, "the last live QR key cannot be retired: rotate-qr first"
        )
    found.retired_at_s = now_s


def key_rows(session: Session) -> list[dict[str, object]]:
    rows = session.scalars(
        select(ServerKey)
        .where(ServerKey.purpose == QR_PURPOSE)
        .order_by(ServerKey.created_at_s.desc(), ServerKey.id)
    ).all()
    return [
        {"key_id": row.id, "created_at_s": row.created_at_s, "retired_at_s": row.retired_at_s}
        for row in rows
    ]
