"""What `paycode-server worker` deletes on every pass: rows whose job is over.

Expired claims, request nonces, wallet sessions and codes issued online, day-old idempotency
records, guessing-guard counters that have gone quiet, and payments left waiting for a
confirmation past their deadline (cancelled, not deleted); and the escrows of offline
allowances whose sync grace has ended, swept back to their users (`sweep_allowances`). Work
goes in bounded batches, each its own transaction, so a large backlog never holds the write
lock (SQLite) or a long transaction (PostgreSQL) against live charges.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import ColumnElement, and_, delete, func, not_, or_, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from paycode.server.books import escrow_return
from paycode.server.charge import step_up
from paycode.server.dashboard import access
from paycode.server.database.models import (
    Base,
    Claim,
    FailureCounter,
    IdempotencyRecord,
    RequestNonce,
    WalletSession,
)
from paycode.server.database.online_models import OnlineCode
from paycode.server.safety.guard import GuardSettings
from paycode.server.wallets import sessions

IDEMPOTENCY_TTL_S: Final = 24 * 3600
"""Idempotency records are kept a day: a client retrying later than that is a new request."""
PURGE_BATCH_ROWS: Final = 1000
PURGE_BATCHES_MAX: Final = 100
"""Per table and call: at most 100k rows go per purge; the worker's next run takes the rest."""
SWEEP_BATCH_ROWS: Final = 100
SWEEP_BATCHES_MAX: Final = 100
"""Allowances swept per transaction and transactions per call (each sweep is a transfer)."""

Key = tuple[InstrumentedAttribute[Any], ...]

GUARD_RULES: Final[tuple[tuple[tuple[str, ...], GuardSettings], ...]] = (
    (("pin:",), step_up.PIN_GUARD),
    (("dashboard:", "dashboard-ip:"), access.LOGIN_GUARD),
    (("wallet:",), sessions.LOGIN_GUARD),
    (("wallet-ip:",), sessions.LOGIN_IP_GUARD),
)
"""The guards outside the charge path, by the prefixes of their counters' scopes: each one's
counters are purged by its own window and back-off maximum; every other counter is the charge
guard's (`guard`)."""


def purge_expired(
    session: Session,
    now_s: float,
    *,
    guard: GuardSettings | None = None,
    batch_rows: int = PURGE_BATCH_ROWS,
    batches_max: int = PURGE_BATCHES_MAX,
) -> dict[str, int]:
    """Delete expired claims, nonces and wallet sessions, day-old idempotency records, and
    guessing-guard counters that have gone quiet (`guard`: the server's settings).

    Works in batches and commits after each one, so a large backlog never holds the write lock
    (SQLite) or a long transaction (PostgreSQL) against live charges. Returns rows per table.
    """
    assert batch_rows > 0 and batches_max > 0
    day_ago_s = now_s - IDEMPOTENCY_TTL_S
    targets: list[tuple[str, type[Base], ColumnElement[bool], Key]] = [
        ("claims", Claim, Claim.expires_at_s < now_s, (Claim.claim_key,)),
        (
            "request_nonces",
            RequestNonce,
            RequestNonce.expires_at_s < now_s,
            (RequestNonce.scope, RequestNonce.nonce),
        ),
        (
            "wallet_sessions",
            WalletSession,
            WalletSession.expires_at_s < now_s,
            (WalletSession.token_hash,),
        ),
        (
            "idempotency_keys",
            IdempotencyRecord,
            IdempotencyRecord.created_at_s < day_ago_s,
            (IdempotencyRecord.scope, IdempotencyRecord.key),
        ),
        ("failure_counters", FailureCounter, quiet_counters(guard or GuardSettings(), now_s),
         (FailureCounter.scope,)),
        # Codes issued online past their life (docs/spec.md §14): the claim, not this row,
        # keeps a used code from paying again.
        ("online_codes", OnlineCode, OnlineCode.expires_at_s < now_s,
         (OnlineCode.issuer_id, OnlineCode.step, OnlineCode.counter)),
    ]  # fmt: skip
    purged = {
        name: delete_in_batches(
            session,
            model,
            condition=condition,
            key=key,
            batch_rows=batch_rows,
            batches_max=batches_max,
        )
        for name, model, condition, key in targets
    }
    purged["pending_expired"] = _expire_pending(session, now_s, batches_max)
    return purged


def quiet_counters(charge_guard: GuardSettings, now_s: float) -> ColumnElement[bool]:
    """quiet_counter by each counter's own guard (GUARD_RULES; else the charge guard's)."""
    rules = []
    for prefixes, settings in GUARD_RULES:
        ours = or_(*(FailureCounter.scope.startswith(p, autoescape=True) for p in prefixes))
        rules.append((ours, settings))
    others = not_(or_(*(ours for ours, _ in rules)))
    return or_(
        *(and_(ours, quiet_counter(settings, now_s)) for ours, settings in rules),
        and_(others, quiet_counter(charge_guard, now_s)),
    )


def quiet_counter(guard: GuardSettings, now_s: float) -> ColumnElement[bool]:
    """A counter whose window has ended and whose last block is older than the back-off
    maximum: its next failure would reset it to a fresh row (paycode.server.safety.guard), so
    deleting it
    changes nothing but the table's size."""
    return and_(
        FailureCounter.window_start_s + guard.window_s <= now_s,
        func.coalesce(FailureCounter.blocked_until_s, 0.0) + guard.backoff_max_s <= now_s,
    )


def _expire_pending(session: Session, now_s: float, batches_max: int) -> int:
    """Cancel payments left waiting for a confirmation past their deadline."""
    expired = 0
    for _batch in range(batches_max):
        count = step_up.expire_stale(session, now_s)
        session.commit()
        expired += count
        if count < step_up.EXPIRE_BATCH_ROWS:
            break
    return expired


def delete_in_batches(
    session: Session,
    model: type[Base],
    *,
    condition: ColumnElement[bool],
    key: Key,
    batch_rows: int,
    batches_max: int,
) -> int:
    """Delete up to batch_rows matching rows per transaction, at most batches_max times."""
    purged = 0
    batch = select(*key).where(condition).limit(batch_rows)
    target = key[0] if len(key) == 1 else tuple_(*key)
    for _batch in range(batches_max):
        result = session.execute(
            # The condition again: a row changed since the batch was read is kept.
            delete(model).where(target.in_(batch), condition),
            execution_options={"synchronize_session": False},
        )
        session.commit()
        deleted = int(result.rowcount)  # type: ignore[attr-defined]
        purged += deleted
        if deleted < batch_rows:
            break
    return purged


def sweep_allowances(
    session: Session,
    now_s: float,
    *,
    batch_rows: int = SWEEP_BATCH_ROWS,
    batches_max: int = SWEEP_BATCHES_MAX,
) -> list[escrow_return.Swept]:
    """Sweep every allowance due at `now_s` (docs/offline.md §2.4), committing after each batch
    so a backlog never holds a long transaction against live settlements; what was swept."""
    assert batch_rows > 0 and batches_max > 0
    swept: list[escrow_return.Swept] = []
    for _batch in range(batches_max):
        batch = escrow_return.sweep_due(session, now_s, batch_rows)
        session.commit()
        swept.extend(batch)
        if len(batch) < batch_rows:
            break
    return swept
