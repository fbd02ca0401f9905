"""Money going back from an allowance's escrow to its user (docs/offline.md §2.4): at once when
the wallet hands the allowance back, and by the worker's sweep once `returns_at_s` has come.

What escrow keeps at a hand-back is what codes made before it may still claim; everything here
runs inside the caller's transaction and moves money only with `ledger.transfer`, whose
conditional debit never takes an escrow below zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from paycode.server.books import ledger
from paycode.server.books.escrow import locked_escrow
from paycode.server.database.models import Account
from paycode.server.database.offline_models import (
    CLAIMING_RESULTS,
    RETURN_KIND,
    OfflineAcceptance,
    OfflineAllowance,
    OfflineCertificate,
)
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError


@dataclass(frozen=True, slots=True)
class CertificateUse:
    """What the wallet's own log says of one certificate at hand-back."""

    cert_id: str
    """32 hex."""
    counters_used: int
    """Codes made: counters 0..counters_used-1; codes above them are refused from now on."""
    reserved_minor: int
    """What those codes may still claim from escrow."""


@dataclass(frozen=True, slots=True)
class HandedBack:
    allowance_id: str
    returned_minor: int
    """Moved back to the user at once."""
    held_minor: int
    """Left in escrow for codes made before the hand-back; swept at `returns_at_s`."""
    balance_minor: int
    """The user's balance afterwards."""


@dataclass(frozen=True, slots=True)
class Swept:
    allowance_id: str
    user_id: str
    currency: str
    returned_minor: int


ENDABLE_STATES = ("live", "returned")
"""States whose escrow the sweep still has to empty."""


def _user_account(session: Session, allowance: OfflineAllowance) -> Account:
    """The account the allowance was funded from (it exists: fund_allowance debited it)."""
    found = ledger.account(session, "user", allowance.user_id, allowance.currency)
    assert found is not None, "an allowance is funded from its user's account"
    return found


def _settled_by_certificate(session: Session, cert_ids: Sequence[str]) -> dict[str, int]:
    """cert id -> what escrow already paid for its codes (committed settlements only: one
    still running waits on the escrow lock this transaction holds, and its code is among the
    reserved ones the hand-back keeps)."""
    rows = session.execute(
        select(OfflineAcceptance.cert_id, func.coalesce(func.sum(OfflineAcceptance.paid_minor), 0))
        .where(
            OfflineAcceptance.cert_id.in_(cert_ids),
            OfflineAcceptance.result.in_(CLAIMING_RESULTS),
        )
        .group_by(OfflineAcceptance.cert_id)
    ).all()
    return {str(cert_id): int(paid) for cert_id, paid in rows}


def _owned_allowance(session: Session, user_id: str, allowance_id: str) -> OfflineAllowance:
    allowance = session.get(OfflineAllowance, allowance_id)
    if allowance is None or allowance.user_id != user_id:
        # Another user's allowance is answered as a missing one: its id tells nothing.
        raise ApiError(ErrorCode.NOT_FOUND, "no such offline allowance")
    return allowance


def _checked_uses(
    certificates: Sequence[OfflineCertificate], uses: Sequence[CertificateUse]
) -> dict[str, CertificateUse]:
    """`uses` name every certificate of the allowance exactly once, within its caps."""
    by_id = {use.cert_id: use for use in uses}
    ours = {certificate.cert_id for certificate in certificates}
    if len(by_id) != len(uses) or set(by_id) != ours:
        raise ApiError(
            ErrorCode.INVALID_REQUEST,
            f"'certificates' must name each of the allowance's {len(ours)} certificates once",
        )
    for certificate in certificates:
        use = by_id[certificate.cert_id]
        if not 0 <= use.counters_used <= certificate.count_max:
            raise ApiError(
                ErrorCode.INVALID_REQUEST,
                f"'counters_used' must be within 0..{certificate.count_max}",
            )
        if not 0 <= use.reserved_minor <= certificate.total_cap_minor:
            raise ApiError(
                ErrorCode.INVALID_REQUEST,
                f"'reserved_minor' must be within 0..{certificate.total_cap_minor}",
            )
    return by_id


def return_allowance(
    session: Session,
    *,
    user_id: str,
    allowance_id: str,
    uses: Sequence[CertificateUse],
    now_s: float,
) -> HandedBack:
    """Hand a live allowance back: its certificates are denied from now on, escrow keeps what
    codes already made may still claim, the rest goes back to the user at once.

    Raises ApiError not_found (unknown, or another user's), allowance_not_live (handed back or
    swept already), invalid_request (the certificates do not match the allowance)."""
    allowance = _owned_allowance(session, user_id, allowance_id)
    # The conditional update decides a race with the sweep or a second hand-back: on
    # PostgreSQL the loser waits for this row, then finds it no longer live.
    moved = session.execute(
        update(OfflineAllowance)
        .where(OfflineAllowance.id == allowance.id, OfflineAllowance.state == "live")
        .values(state="returned", ended_at_s=now_s),
        execution_options={"synchronize_session": False},
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise ApiError(ErrorCode.ALLOWANCE_NOT_LIVE, "this allowance was already handed back")
    certificates = session.scalars(
        select(OfflineCertificate)
        .where(OfflineCertificate.allowance_id == allowance.id)
        .order_by(OfflineCertificate.cert_id)
    ).all()
    by_id = _checked_uses(certificates, uses)
    escrow = locked_escrow(session, allowance)
    settled = _settled_by_certificate(session, [c.cert_id for c in certificates])
    # What codes made before the hand-back may still claim: each certificate's reservation
    # less what its codes were already paid (never below zero: an over-spent certificate
    # claims nothing more of the others' share).
    claimable_minor = sum(
        max(0, by_id[c.cert_id].reserved_minor - settled.get(c.cert_id, 0)) for c in certificates
    )
    held_minor = min(escrow.balance_minor, claimable_minor)
    returned_minor = escrow.balance_minor - held_minor
    payee = _user_account(session, allowance)
    if returned_minor > 0:
        ledger.transfer(
            session,
            kind=RETURN_KIND,
            debit=escrow,
            credit=payee,
            amount_minor=returned_minor,
            now_s=now_s,
        )
    for certificate in certificates:
        use = by_id[certificate.cert_id]
        certificate.returned_counter = use.counters_used
        certificate.returned_spent_minor = use.reserved_minor
        certificate.denied_at_s = now_s
    session.flush()
    return HandedBack(
        allowance.id, returned_minor, held_minor, ledger.balance_minor(session, payee.id)
    )


def sweep_due(session: Session, now_s: float, limit: int) -> list[Swept]:
    """Empty, back to their users, the escrows of up to `limit` allowances whose `returns_at_s`
    has come (live or handed back), and mark them swept. In the caller's transaction; the
    caller commits and calls again while a whole batch came back."""
    assert limit > 0
    due = session.scalars(
        select(OfflineAllowance.id)
        .where(OfflineAllowance.state.in_(ENDABLE_STATES), OfflineAllowance.returns_at_s <= now_s)
        .order_by(OfflineAllowance.returns_at_s, OfflineAllowance.id)
        .limit(limit)
    ).all()
    swept = []
    for allowance_id in due:
        one = _sweep_one(session, allowance_id, now_s)
        if one is not None:
            swept.append(one)
    return swept


def _sweep_one(session: Session, allowance_id: str, now_s: float) -> Swept | None:
    # Two workers read the same batch: the conditional update lets one of them sweep it.
    moved = session.execute(
        update(OfflineAllowance)
        .where(
            OfflineAllowance.id == allowance_id,
            OfflineAllowance.state.in_(ENDABLE_STATES),
            OfflineAllowance.returns_at_s <= now_s,
        )
        # A handed-back allowance keeps the time it was handed back.
        .values(state="swept", ended_at_s=func.coalesce(OfflineAllowance.ended_at_s, now_s)),
        execution_options={"synchronize_session": False},
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return None
    allowance = session.get(OfflineAllowance, allowance_id, populate_existing=True)
    assert allowance is not None
    escrow = locked_escrow(session, allowance)
    returned_minor = escrow.balance_minor
    if returned_minor > 0:
        ledger.transfer(
            session,
            kind=RETURN_KIND,
            debit=escrow,
            credit=_user_account(session, allowance),
            amount_minor=returned_minor,
            now_s=now_s,
        )
    return Swept(allowance.id, allowance.user_id, allowance.currency, returned_minor)
