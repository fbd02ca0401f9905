"""Rotating and retiring the keys codes are made with: the v1/v2 hiding keys and the v3 seal
key (docs/spec.md §7; the operator's steps are in docs/operations.md).

`add_key` makes a new key live next to the old one: every server verifies under both within
keyring.KEYS_TTL_S, and wallets are handed the new one once it is keyring.HANDOUT_DELAY_S old,
at their next signed online call. `retire_old` retires every older key of the version once the
new one has been live for the grace the operator states. At most LIVE_KEYS_MAX keys per version
are live: each one is another chance for a guessed code, so the spec's bounds count them.
"""

from __future__ import annotations

import os
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from paycode.server.database.models import ServerKey
from paycode.server.safety.keyring import (
    HANDOUT_DELAY_S,
    KEYS_TTL_S,
    PURPOSE_OF_VERSION,
    new_key_row,
)
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

LIVE_KEYS_MAX: Final = 2
"""docs/spec.md §4.1 and §7: the guessing bound is multiplied by the live keys, and holds
with its margin for two."""
GRACE_S_DEFAULT: Final = 30 * 86400
"""How long the old key stays live by default: a wallet not online for that long has codes
refused until its next online call teaches it the new key."""
GRACE_S_MIN: Final = HANDOUT_DELAY_S + KEYS_TTL_S
"""Below this the new key may not be handed out yet, or not in every server's cache."""
SECRET_BYTES: Final = 32
"""An AES-256 hiding key, or an X25519 private key (any 32 bytes are one, clamped)."""


def purpose_of(version: str) -> str:
    purpose = PURPOSE_OF_VERSION.get(version)
    if purpose is None:
        known = ", ".join(PURPOSE_OF_VERSION)
        raise ApiError(
            ErrorCode.VERSION_UNKNOWN, f"no code key for version {version[:8]!r} ({known})"
        )
    return purpose


def _live(session: Session, purpose: str) -> list[ServerKey]:
    """Newest first, locked against a concurrent rotation or retirement (PostgreSQL)."""
    return list(
        session.scalars(
            select(ServerKey)
            .where(ServerKey.purpose == purpose, ServerKey.retired_at_s.is_(None))
            .order_by(ServerKey.created_at_s.desc(), ServerKey.id)
            .with_for_update()
        )
    )


def add_key(session: Session, box: SecretBox, version: str, now_s: float) -> str:
    """A new live key for `version`; the old ones keep verifying. Returns its row id."""
    purpose = purpose_of(version)
    live = _live(session, purpose)
    if len(live) >= LIVE_KEYS_MAX:
        raise ApiError(
            ErrorCode.INVALID_ARGUMENT,
            f"{version} already has {len(live)} live keys (at most {LIVE_KEYS_MAX}): "
            "retire the old one first",
        )
    row = new_key_row(box, purpose, os.urandom(SECRET_BYTES), now_s)
    session.add(row)
    session.flush()
    if len(_live(session, purpose)) > LIVE_KEYS_MAX:
        # A rotation that waited on the lock above read the live keys before the other one
        # committed its key; this second read, after the wait, sees it.
        raise ApiError(
            ErrorCode.INVALID_ARGUMENT, f"another rotation of {version} ran at the same time"
        )
    return row.id


def retire_old(session: Session, version: str, now_s: float, grace_s: float) -> list[str]:
    """Retire every live key of `version` but the newest, once the newest is `grace_s` old."""
    if grace_s < GRACE_S_MIN:
        raise ApiError(ErrorCode.INVALID_ARGUMENT, f"the grace must be at least {GRACE_S_MIN:g} s")
    live = _live(session, purpose_of(version))
    if len(live) < 2:
        raise ApiError(ErrorCode.NOT_FOUND, f"{version} has no old key to retire")
    newest_age_s = now_s - live[0].created_at_s
    if newest_age_s < grace_s:
        raise ApiError(
            ErrorCode.INVALID_ARGUMENT,
            f"the new {version} key has been live {_duration(newest_age_s)} of the "
            f"{_duration(grace_s)} grace: retire in {_duration(grace_s - newest_age_s)}, or "
            "state a shorter grace (wallets not online since the rotation then have codes "
            "refused until they are)",
        )
    for row in live[1:]:
        row.retired_at_s = now_s
    return [row.id for row in live[1:]]


def _duration(seconds: float) -> str:
    """For the operator: '75 s', '12 min', '5.0 h', '29.5 days'."""
    if seconds < 120:
        return f"{max(seconds, 0.0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def key_rows(session: Session) -> list[dict[str, object]]:
    """Every code key, live or retired, newest first per version (no key material)."""
    rows = session.scalars(
        select(ServerKey)
        .where(ServerKey.purpose.in_(PURPOSE_OF_VERSION.values()))
        .order_by(ServerKey.purpose, ServerKey.created_at_s.desc(), ServerKey.id)
    ).all()
    version_of = {purpose: version for version, purpose in PURPOSE_OF_VERSION.items()}
    return [
        {
            "version": version_of[row.purpose],
            "key_id": row.id,
            "created_at_s": row.created_at_s,
            "retired_at_s": row.retired_at_s,
        }
        for row in rows
    ]
