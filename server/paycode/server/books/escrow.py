"""Offline allowances in the ledger (docs/offline.md §2): money moved from a user's account into
an escrow account of its own, and the certificates that let a wallet spend it offline.

One escrow account per allowance (owner_kind `escrow`, owner_id the allowance id): what an
over-spent allowance can pay is one balance, and a cloned allowance can only ever drain its
own escrow. Every function here runs inside the caller's transaction.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.books import ledger
from paycode.server.database.models import Account, User, new_id
from paycode.server.database.offline_models import (
    ESCROW,
    FUND_KIND,
    OfflineAllowance,
    OfflineCertificate,
)
from paycode.server.safety.limits import LimitSettings
from paycode.server.safety.offline_keys import OfflineKeys
from paycode.server.safety.offline_settings import CERTIFICATES_PER_ALLOWANCE, OfflineSettings
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError
from paycode.shared.offline import CERT_ID_BYTES, CertificateFields
from paycode.shared.timestep import STEP_SECONDS

HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class IssuedAllowance:
    allowance_id: str
    amount_minor: int
    currency: str
    expires_at_s: int
    returns_at_s: int
    certificates: tuple[bytes, ...]
    """137 bytes each, in the order of the public keys asked for."""


def locked_escrow(session: Session, allowance: OfflineAllowance) -> Account:
    """The allowance's escrow row, locked (PostgreSQL; SQLite's write transaction already is)
    and read fresh: every payment from it, a hand-back and a sweep each see the one before."""
    return session.scalars(
        select(Account)
        .where(
            Account.owner_kind == ESCROW,
            Account.owner_id == allowance.id,
            Account.currency == allowance.currency,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def _window_s(now_s: float, lifetime_s: int) -> tuple[int, int]:
    """(not_before, expiry) rounded to whole hours, so every certificate made in the same hour
    with the same ladder amount carries the same times (docs/offline.md §2.3, §3.4). The start
    is one time step earlier than the hour when the hour began less than a step ago, so a
    wallet's code made at once is inside the window on a clock a step behind."""
    not_before_s = math.floor((now_s - STEP_SECONDS) / HOUR_S) * HOUR_S
    expiry_s = math.ceil((now_s + lifetime_s) / HOUR_S) * HOUR_S
    return not_before_s, expiry_s


def _check_limits(
    session: Session, user: User, settings: OfflineSettings, days: LimitSettings, now_s: float
) -> None:
    """Called after the debit locked the user's account row: two requests of one user are
    serialised there, so each sees the other's allowance (never check-then-insert unlocked)."""
    # Read again, not from `user`: the row was loaded before the lock, and a settlement may
    # have blocked the user since (its commit is visible to this statement).
    blocked_at_s = session.scalar(select(User.offline_blocked_at_s).where(User.id == user.id))
    if blocked_at_s is not None:
        raise ApiError(
            ErrorCode.OFFLINE_BLOCKED,
            "offline payments are blocked for this user after an over-spent allowance",
        )
    live = session.scalar(
        select(func.count()).where(
            OfflineAllowance.user_id == user.id,
            OfflineAllowance.state == "live",
            OfflineAllowance.expires_at_s > now_s,
        )
    )
    if live:
        raise ApiError(
            ErrorCode.OFFLINE_ALLOWANCE_LIVE,
            "an offline allowance is still live: hand it back or let it expire first",
        )
    day_start_s = days.day(now_s) * 86_400 - days.day_offset_minutes * 60
    today = session.scalar(
        select(func.count()).where(
            OfflineAllowance.user_id == user.id, OfflineAllowance.created_at_s >= day_start_s
        )
    )
    if int(today or 0) >= settings.per_day:
        raise ApiError(
            ErrorCode.OFFLINE_DAILY_LIMIT,
            f"at most {settings.per_day} offline allowances a day",
        )


def _certify(
    session: Session,
    allowance: OfflineAllowance,
    *,
    public_keys: Sequence[bytes],
    keys: OfflineKeys,
    settings: OfflineSettings,
    window_s: tuple[int, int],
) -> tuple[bytes, ...]:
    per_payment_cap_minor, total_cap_minor = settings.caps_minor(allowance.amount_minor)
    certificates = []
    for public_key in public_keys:
        fields = CertificateFields(
            cert_id=os.urandom(CERT_ID_BYTES),
            server_key_id=keys.signing.key_id,
            offline_pk=public_key,
            currency=allowance.currency,
            per_payment_cap_minor=per_payment_cap_minor,
            total_cap_minor=total_cap_minor,
            count_max=settings.count,
            not_before_s=window_s[0],
            expiry_s=window_s[1],
        )
        certificate = keys.sign(fields)
        try:
            with session.begin_nested():
                session.add(
                    OfflineCertificate(
                        cert_id=fields.cert_id.hex(),
                        allowance_id=allowance.id,
                        server_key_id=fields.server_key_id.hex(),
                        body=certificate,
                        offline_pk=public_key,
                        total_cap_minor=total_cap_minor,
                        count_max=settings.count,
                        expires_at_s=float(window_s[1]),
                    )
                )
        except IntegrityError as error:
            raise ApiError(ErrorCode.WEAK_KEY, "an offline key was certified before") from error
        certificates.append(certificate)
    return tuple(certificates)


def fund_allowance(
    session: Session,
    *,
    user: User,
    device_id: str,
    currency: str,
    amount_minor: int,
    public_keys: Sequence[bytes],
    keys: OfflineKeys,
    settings: OfflineSettings,
    days: LimitSettings,
    now_s: float,
) -> IssuedAllowance:
    """Move `amount_minor` into a new escrow and certify one key per certificate.

    Raises ApiError (offline_amount_invalid, insufficient_funds, offline_blocked,
    offline_allowance_live, offline_daily_limit, weak_key); the caller's transaction then rolls
    back and nothing moved. The keys' proofs are the caller's to check."""
    if amount_minor not in settings.allowances_minor:
        ladder = ", ".join(str(step) for step in settings.allowances_minor)
        raise ApiError(ErrorCode.OFFLINE_AMOUNT_INVALID, f"amount_minor must be one of {ladder}")
    if len(public_keys) != CERTIFICATES_PER_ALLOWANCE or len(set(public_keys)) != len(public_keys):
        raise ApiError(
            ErrorCode.WEAK_KEY, f"exactly {CERTIFICATES_PER_ALLOWANCE} distinct keys are needed"
        )
    payer = ledger.account(session, "user", user.id, currency)
    if payer is None:
        raise ApiError(ErrorCode.CURRENCY_MISMATCH, f"the user holds no {currency} account")
    not_before_s, expiry_s = _window_s(now_s, settings.lifetime_s)
    allowance = OfflineAllowance(
        id=new_id("alw"),
        user_id=user.id,
        device_id=device_id,
        currency=currency,
        amount_minor=amount_minor,
        state="live",
        created_at_s=now_s,
        expires_at_s=float(expiry_s),
        returns_at_s=float(expiry_s + settings.grace_s),
    )
    escrow = ledger.open_account(session, ESCROW, allowance.id, currency)
    ledger.transfer(
        session, kind=FUND_KIND, debit=payer, credit=escrow, amount_minor=amount_minor, now_s=now_s
    )
    _check_limits(session, user, settings, days, now_s)
    session.add(allowance)
    session.flush()
    certificates = _certify(
        session,
        allowance,
        public_keys=public_keys,
        keys=keys,
        settings=settings,
        window_s=(not_before_s, expiry_s),
    )
    assert len(certificates) == CERTIFICATES_PER_ALLOWANCE
    return IssuedAllowance(
        allowance.id,
        amount_minor,
        currency,
        expiry_s,
        expiry_s + settings.grace_s,
        certificates,
    )
