"""Guessing defence: failed code verifications are counted per terminal, per merchant, per
client address at that merchant, and per code handle at that merchant (a forged code that
names a handle blocks that handle's codes at the merchant it came from, and nowhere else).

A brute-forcer's guesses are verification failures (`code_invalid`, `code_malformed`,
`code_ambiguous`, `merchant_mismatch`). Each failure adds one to the counter of every scope
of the request inside the charge transaction; a scope that reaches its limit within the
window is blocked for a back-off that doubles with each block (base .. max), and while any
scope of a request is blocked the charge answers `rate_limited` before any work. The
counters are rows in the database, so every worker and host shares them; the check and the
count ride in the charge's own round trip
(server/paycode/server/database/migrations/sql/0007_charge_function.sql,
paycode.server.charge.transaction).

Honest failures are not counted: an expired code (a slow customer) or a replay (the till
retried) says nothing about guessing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, text

from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ConfigError

COUNTED_FAILURES = frozenset(
    {
        ErrorCode.CODE_INVALID,
        ErrorCode.CODE_MALFORMED,
        ErrorCode.CODE_AMBIGUOUS,
        ErrorCode.MERCHANT_MISMATCH,
    }
)
SCOPES_MAX = 3
SCOPE_CHARS_MAX = 80
"""failure_counters.scope's width: a scope built from request data is cut to it."""


@dataclass(frozen=True)
class GuardSettings:
    """The numbers (environment variables in brackets), defaults sized for a busy shop."""

    window_s: float = 300.0  # PAYCODE_GUESS_WINDOW_S
    terminal_failures_max: int = 20  # PAYCODE_GUESS_TERMINAL_MAX
    merchant_failures_max: int = 100  # PAYCODE_GUESS_MERCHANT_MAX
    ip_failures_max: int = 50  # PAYCODE_GUESS_IP_MAX
    device_failures_max: int = 3  # PAYCODE_GUESS_DEVICE_MAX: per handle, per merchant
    backoff_base_s: float = 60.0  # PAYCODE_GUESS_BACKOFF_S: the first block; each next doubles
    backoff_max_s: float = 3600.0  # PAYCODE_GUESS_BACKOFF_MAX_S; also the quiet time that resets

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> GuardSettings:
        """From the environment variables in `env` (ServerConfig.from_env hands them in)."""
        defaults = cls()

        def number(name: str, default: float) -> float:
            raw = env.get(name)
            try:
                value = float(raw) if raw else default
            except ValueError as error:
                raise ConfigError(f"{name} must be a number") from error
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number")
            return value

        return cls(
            window_s=number("PAYCODE_GUESS_WINDOW_S", defaults.window_s),
            terminal_failures_max=int(
                number("PAYCODE_GUESS_TERMINAL_MAX", defaults.terminal_failures_max)
            ),
            merchant_failures_max=int(
                number("PAYCODE_GUESS_MERCHANT_MAX", defaults.merchant_failures_max)
            ),
            ip_failures_max=int(number("PAYCODE_GUESS_IP_MAX", defaults.ip_failures_max)),
            device_failures_max=int(
                number("PAYCODE_GUESS_DEVICE_MAX", defaults.device_failures_max)
            ),
            backoff_base_s=number("PAYCODE_GUESS_BACKOFF_S", defaults.backoff_base_s),
            backoff_max_s=number("PAYCODE_GUESS_BACKOFF_MAX_S", defaults.backoff_max_s),
        )


@dataclass(frozen=True)
class GuardScopes:
    """The counters one charge request touches, with each one's limit."""

    names: tuple[str, ...]
    limits: tuple[int, ...]


def scopes_for(
    settings: GuardSettings, terminal_id: str, merchant_id: str, client_ip: str | None
) -> GuardScopes:
    """The address counter is the address's at this merchant: tills of different merchants
    behind one NAT share an address, and one merchant's junk must not block another's."""
    names = [f"terminal:{terminal_id}", f"merchant:{merchant_id}"]
    limits = [settings.terminal_failures_max, settings.merchant_failures_max]
    if client_ip:
        names.append(address_scope(merchant_id, client_ip))
        limits.append(settings.ip_failures_max)
    assert len(names) <= SCOPES_MAX
    return GuardScopes(tuple(names), tuple(limits))


def address_scope(merchant_id: str, client_ip: str) -> str:
    return f"ip:{merchant_id}:{client_ip}"[:SCOPE_CHARS_MAX]


def handle_scope(version: str, handle: bytes, merchant_id: str) -> str:
    """The counter of codes naming one handle at one merchant: forged codes aimed at a phone
    block that phone's codes at the merchant they came from, never elsewhere (a third party
    must not lock a customer out), and a handle nobody holds counts as an enrolled one (the
    guard's answers must not tell them apart)."""
    return f"code:{version}:{handle.hex()}@{merchant_id}"[:SCOPE_CHARS_MAX]


def with_handles(
    scopes: GuardScopes,
    settings: GuardSettings,
    merchant_id: str,
    handles: tuple[tuple[str, bytes], ...],
) -> GuardScopes:
    """`scopes` plus the counters of the handles a code named at this merchant (see
    paycode.server.charge.verification)."""
    named = [handle_scope(version, handle, merchant_id) for version, handle in handles]
    return GuardScopes(
        (*scopes.names, *named), (*scopes.limits, *[settings.device_failures_max] * len(named))
    )


def unlock_device(connection: Connection, device_id: str) -> None:
    """The device's own wallet called in (its key signed): lift a lock the guard set before
    issue 19, when forgeries locked a device everywhere (`device:<id>` counters; the worker
    purges any left). Blocks at one merchant (handle_scope) are not lifted: they end with
    their back-off, so a forger cannot reset them through the victim's routine calls."""
    connection.execute(
        text("UPDATE devices SET locked_at_s = NULL WHERE id = :id"), {"id": device_id}
    )
    connection.execute(
        text("DELETE FROM failure_counters WHERE scope = :scope"), {"scope": f"device:{device_id}"}
    )


def blocked_until_s(connection: Connection, scopes: GuardScopes, now_s: float) -> float | None:
    """The latest end of a block on any of `scopes`, if one is in force (SQLite path)."""
    until = None
    for scope in scopes.names:
        row = connection.execute(
            text("SELECT blocked_until_s FROM failure_counters WHERE scope = :scope"),
            {"scope": scope},
        ).first()
        if row is not None and row[0] is not None and row[0] > now_s:
            until = max(until or 0.0, float(row[0]))
    return until


def count_failure(
    connection: Connection, scopes: GuardScopes, settings: GuardSettings, now_s: float
) -> None:
    """Add one failure to every scope; block the scopes that reach their limit (SQLite path;
    the PostgreSQL function runs the same statements)."""
    for scope, limit in zip(scopes.names, scopes.limits, strict=True):
        failures = connection.execute(_COUNT_SQL, _params(scope, settings, now_s)).scalar_one()
        if failures >= limit:
            connection.execute(_BLOCK_SQL, _params(scope, settings, now_s))


def _params(scope: str, settings: GuardSettings, now_s: float) -> dict[str, object]:
    return {
        "scope": scope,
        "now": now_s,
        "window": settings.window_s,
        "base": settings.backoff_base_s,
        "max": settings.backoff_max_s,
    }


_UPSERT_ONE_FAILURE = """
    INSERT INTO failure_counters (scope, window_start_s, failures, strikes, blocked_until_s)
    VALUES (:scope, :now, 1, 0, NULL)
    ON CONFLICT (scope) DO UPDATE SET
        strikes = CASE WHEN failure_counters.window_start_s + :window <= :now
                        AND COALESCE(failure_counters.blocked_until_s, 0) + :max <= :now
                       THEN 0 ELSE failure_counters.strikes END,
        failures = CASE WHEN failure_counters.window_start_s + :window <= :now
                        THEN 1 ELSE failure_counters.failures + 1 END,
        window_start_s = CASE WHEN failure_counters.window_start_s + :window <= :now
                              THEN :now ELSE failure_counters.window_start_s END
"""
"""One more failure in `scope`'s window (a new window when the last one ended): counting a
failure and reserving an attempt are this same upsert; a reservation only adds a WHERE."""
_COUNT_SQL = text(_UPSERT_ONE_FAILURE + "    RETURNING failures")
_BLOCK_SQL = text(
    """
    UPDATE failure_counters
    SET blocked_until_s = :now + MIN(:max, :base * (1 << MIN(strikes, 20))),
        strikes = strikes + 1, failures = 0, window_start_s = :now
    WHERE scope = :scope
    """
)


# -- attempts reserved before the check (the guards outside the charge path) -----------------
#
# A password or PIN check is slow (scrypt), so "is it blocked? check; count if wrong" lets
# every request that arrives before the first wrong answer is counted through: concurrency
# buys extra guesses. Instead each attempt first reserves one unit of every scope's count, in
# one statement the database decides (the upsert takes the row's lock, and its WHERE is
# re-evaluated on the latest row): a scope already at its limit or blocked reserves nothing
# and the attempt is refused unchecked. A wrong answer then keeps its unit and blocks the
# scope at its limit; a right one gives its unit back.

RESERVE_BUSY_S = 1.0
"""Retry-After when a scope is full of attempts still being checked (no block yet)."""

_RESERVE_SQL = text(
    _UPSERT_ONE_FAILURE
    + """
    WHERE COALESCE(failure_counters.blocked_until_s, 0) <= :now
      AND (failure_counters.window_start_s + :window <= :now
           OR failure_counters.failures < :limit)
    RETURNING failures
    """
)
_SETTLE_WRONG_SQL = text(
    """
    UPDATE failure_counters
    SET blocked_until_s = :now + CASE
            WHEN :base * (1 << (CASE WHEN strikes < 20 THEN strikes ELSE 20 END)) < :max
            THEN :base * (1 << (CASE WHEN strikes < 20 THEN strikes ELSE 20 END))
            ELSE :max END,
        strikes = strikes + 1, failures = 0, window_start_s = :now
    WHERE scope = :scope AND failures >= :limit
    """
)
_RELEASE_SQL = text(
    "UPDATE failure_counters SET failures = failures - 1 WHERE scope = :scope AND failures > 0"
)
_BLOCKED_SQL = text("SELECT blocked_until_s FROM failure_counters WHERE scope = :scope")
_STANDING_SQL = text(
    "SELECT failures, strikes, blocked_until_s FROM failure_counters WHERE scope = :scope"
)


@dataclass(frozen=True, slots=True)
class Standing:
    """One scope's count as it stands: what a reply tells the person guessing (how many tries
    are left), never a decision, which reserve_attempt alone takes."""

    failures: int
    strikes: int
    blocked_until_s: float | None


def standing(connection: Connection, scope: str) -> Standing:
    row = connection.execute(_STANDING_SQL, {"scope": scope}).first()
    if row is None:
        return Standing(0, 0, None)
    until = None if row.blocked_until_s is None else float(row.blocked_until_s)
    return Standing(int(row.failures), int(row.strikes), until)


def reserve_attempt(
    connection: Connection, scopes: GuardScopes, settings: GuardSettings, now_s: float
) -> float | None:
    """Reserve one attempt on every scope; None when reserved, else the seconds to wait (and
    the caller must roll back, so no scope keeps a unit: use it as the transaction's last
    statement and raise). On both databases: plain SQL, decided row by row under its lock."""
    for scope, limit in zip(scopes.names, scopes.limits, strict=True):
        params = {**_params(scope, settings, now_s), "limit": limit}
        if connection.execute(_RESERVE_SQL, params).first() is None:
            until = connection.execute(_BLOCKED_SQL, {"scope": scope}).scalar()
            if until is not None and float(until) > now_s:
                return float(until) - now_s
            return RESERVE_BUSY_S
    return None


def settle_wrong(
    connection: Connection, scopes: GuardScopes, settings: GuardSettings, now_s: float
) -> None:
    """A reserved attempt was wrong: it stays counted; block each scope it filled."""
    for scope, limit in zip(scopes.names, scopes.limits, strict=True):
        connection.execute(_SETTLE_WRONG_SQL, {**_params(scope, settings, now_s), "limit": limit})


def release_attempt(connection: Connection, scopes: GuardScopes) -> None:
    """A reserved attempt was right: give its unit back (it was no guess)."""
    for scope in scopes.names:
        connection.execute(_RELEASE_SQL, {"scope": scope})


class AttemptRefused(Exception):
    """Too many attempts on a guarded secret: answer `rate_limited`, Retry-After `wait_s`."""

    def __init__(self, wait_s: float) -> None:
        super().__init__("attempts blocked")
        self.wait_s = wait_s
