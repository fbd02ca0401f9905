"""Over-spend evidence and the lock it triggers (docs/offline.md §6.1 step 10, §6.4).

An honest wallet never lets a certificate pay more than its total cap nor more than its count,
and never shows one code twice: anything else means its keystore was copied. The lock then
refuses the allowance's device (every code version of it), blocks new allowances for the user,
and puts every live certificate of the user into `denied`, which tills fetch. Runs inside the
settling transaction, so the evidence and the lock commit together.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from paycode.server.database.models import Device, User
from paycode.server.database.offline_models import (
    CLAIMING_RESULTS,
    OfflineAcceptance,
    OfflineAllowance,
    OfflineCertificate,
)


def overspent(
    session: Session,
    *,
    merchant_id: str,
    certificate: OfflineCertificate,
    counter: int,
    short_minor: int,
) -> str | None:
    """Why this settlement proves a copied wallet (its reason, for logs); None: it does not.

    `short_minor` is what escrow could not pay of an acceptance that arrived before the sweep
    (after it, an empty escrow proves nothing)."""
    if short_minor > 0:
        return "escrow could not pay an acceptance in full"
    claiming = (
        OfflineAcceptance.cert_id == certificate.cert_id,
        OfflineAcceptance.result.in_(CLAIMING_RESULTS),
    )
    elsewhere = session.scalar(
        select(func.count()).where(
            *claiming,
            OfflineAcceptance.counter == counter,
            OfflineAcceptance.merchant_id != merchant_id,
        )
    )
    if elsewhere:
        return "the same code was accepted by another merchant"
    accepted_minor, counters = session.execute(
        select(
            func.coalesce(func.sum(OfflineAcceptance.amount_minor), 0),
            func.count(func.distinct(OfflineAcceptance.counter)),
        ).where(*claiming)
    ).one()
    if int(accepted_minor) > certificate.total_cap_minor:
        return "the certificate's accepted sum is above its total cap"
    if int(counters) > certificate.count_max:
        return "the certificate was used more often than its count"
    return None


def lock_allowance_holder(session: Session, allowance: OfflineAllowance, now_s: float) -> None:
    """§6.4: device revoked, user offline-blocked, the user's live certificates denied. Each
    update is conditional, so the first lock's times are kept and a second lock changes
    nothing."""
    session.execute(
        update(Device)
        .where(Device.id == allowance.device_id, Device.revoked_at_s.is_(None))
        .values(revoked_at_s=now_s),
        execution_options={"synchronize_session": False},
    )
    session.execute(
        update(User)
        .where(User.id == allowance.user_id, User.offline_blocked_at_s.is_(None))
        .values(offline_blocked_at_s=now_s),
        execution_options={"synchronize_session": False},
    )
    users_allowances = select(OfflineAllowance.id).where(
        OfflineAllowance.user_id == allowance.user_id
    )
    session.execute(
        update(OfflineCertificate)
        .where(
            OfflineCertificate.allowance_id.in_(users_allowances),
            OfflineCertificate.expires_at_s > now_s,
            OfflineCertificate.denied_at_s.is_(None),
        )
        .values(denied_at_s=now_s),
        execution_options={"synchronize_session": False},
    )
