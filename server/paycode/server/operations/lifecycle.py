"""Code-version lifecycle (docs/spec.md §8): active -> deprecated -> retired, as an operator
decides.

Decisions live in the table version_states (no row: the registry's DEFAULT_STATUS), so every
worker and host applies the same one. The charge path reads them through a per-process cache of
STATUSES_TTL_S: no query per charge, and a decision reaches every worker within seconds.

Deprecated versions still pay; the wallet is told on its next online contact to re-enroll on the
preferred version (`reenroll_advice`). Retired versions answer `version_retired`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session

from paycode.server.database.engine import read_only
from paycode.server.database.models import VersionState
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError
from paycode.shared.versions.base import VersionStatus
from paycode.shared.versions.registry import DEFAULT_STATUS, PREFERRED_VERSION

STATUSES_TTL_S = 5.0
"""How stale a worker's view may be: a retirement stops charges everywhere within this time."""
TRANSITION_LOCK_KEY = 0x50_41_59_43_4F_44_45  # "PAYCODE": one advisory lock for all transitions

Statuses = Mapping[str, VersionStatus]

_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[Engine, tuple[float, Statuses]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class LiveVersion:
    """One version as the operator sees it."""

    version: str
    status: VersionStatus
    changed_at_s: float | None
    """When an operator last changed it; None: never (the registry's default applies)."""


@dataclass(frozen=True, slots=True)
class Transition:
    version: str
    before: VersionStatus
    after: VersionStatus

    @property
    def changed(self) -> bool:
        return self.before is not self.after


def read_states(bind: Session | Connection) -> list[LiveVersion]:
    """Every version of the registry with its live status, uncached, in registry order."""
    rows = bind.execute(
        select(VersionState.version, VersionState.status, VersionState.changed_at_s).where(
            VersionState.version.in_(list(DEFAULT_STATUS))  # rows of removed versions: ignored
        )
    ).all()
    stored = {row.version: (VersionStatus(row.status), row.changed_at_s) for row in rows}
    return [
        LiveVersion(version, *stored.get(version, (default, None)))
        for version, default in DEFAULT_STATUS.items()
    ]


def read_statuses(bind: Session | Connection) -> dict[str, VersionStatus]:
    return {state.version: state.status for state in read_states(bind)}


def load_statuses(engine: Engine, monotonic_s: float, ttl_s: float | None = None) -> Statuses:
    """The live statuses, from this process's cache when it is younger than `ttl_s`.

    `monotonic_s` is time.monotonic() in production; tests pass their own clock. `ttl_s` is
    ServerConfig.statuses_ttl_s: None (STATUSES_TTL_S) unless a test server shortened it."""
    ttl_s = STATUSES_TTL_S if ttl_s is None else ttl_s
    with _lock:
        cached = _cache.get(engine)
        if cached is not None and 0.0 <= monotonic_s - cached[0] < ttl_s:
            return cached[1]
    with read_only(engine) as connection:  # may run inside a request's write transaction
        statuses: Statuses = MappingProxyType(read_statuses(connection))
    with _lock:
        _cache[engine] = (monotonic_s, statuses)
    return statuses


def forget_cache() -> None:
    with _lock:
        _cache.clear()


def reenroll_target(statuses: Statuses) -> str:
    """The version a wallet should move to: the preferred one, or else the first active one."""
    if statuses.get(PREFERRED_VERSION) is VersionStatus.ACTIVE:
        return PREFERRED_VERSION
    active = [version for version, status in statuses.items() if status is VersionStatus.ACTIVE]
    return active[0] if active else PREFERRED_VERSION


def reenroll_advice(device_version: str, statuses: Statuses) -> dict[str, str] | None:
    """What the wallet is told when the device calling is on a version being phased out."""
    status = statuses.get(device_version, VersionStatus.RETIRED)
    if status is VersionStatus.ACTIVE:
        return None
    return {
        "version": reenroll_target(statuses),
        "reason": f"code version {device_version} is {status}",
    }


def set_status(session: Session, version: str, status: VersionStatus, now_s: float) -> Transition:
    """Move `version` to `status`; the caller commits. Setting the status it has is a no-op.

    Refused: an unknown version (`version_unknown`), retiring the preferred version, which new
    wallets enroll on (`version_preferred`), and leaving no active version at all
    (`last_active_version`). Transitions are serialized, so two operators deprecating the last
    two active versions at once cannot both succeed."""
    if version not in DEFAULT_STATUS:
        raise ApiError(
            ErrorCode.VERSION_UNKNOWN, f"unknown code version {version[:16]!r}; live: {_names()}"
        )
    _serialize(session)
    statuses = read_statuses(session)
    before = statuses[version]
    if before is status:
        return Transition(version, before, status)
    if status is VersionStatus.RETIRED and version == PREFERRED_VERSION:
        raise ApiError(
            ErrorCode.VERSION_PREFERRED,
            f"{version} is the preferred version (new wallets enroll on it); it cannot retire",
        )
    statuses[version] = status
    if VersionStatus.ACTIVE not in statuses.values():
        raise ApiError(
            ErrorCode.LAST_ACTIVE_VERSION,
            f"{version} is the last active version; activate another one first",
        )
    row = session.get(VersionState, version)  # under the transition lock: no racing insert
    if row is None:
        session.add(VersionState(version=version, status=str(status), changed_at_s=now_s))
    else:
        row.status, row.changed_at_s = str(status), now_s
    session.flush()
    return Transition(version, before, status)


def _serialize(session: Session) -> None:
    """One transition at a time. SQLite already runs every transaction BEGIN IMMEDIATE
    (server.db); PostgreSQL takes a transaction-scoped advisory lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": TRANSITION_LOCK_KEY})


def _names() -> str:
    return ", ".join(DEFAULT_STATUS)
