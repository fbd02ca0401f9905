"""Merchant notifications: which payment state changes are told, the JSON body, the outbox row.

Every state change of a payment whose merchant has a notify_url writes one row to the outbox
(`notification_outbox`, server/models.Notification) in the same transaction as the change, so
a change is never lost and never told without having happened. `paycode-server worker` then
delivers the rows (paycode.server.notifications.delivery), at least once, each signed with the
merchant's
notification secret.

    charge           -> payment.succeeded | payment.pending_confirmation | payment.failed
    confirm          -> payment.succeeded | payment.failed | payment.cancelled (expired)
    decline          -> payment.declined
    POS cancel       -> payment.cancelled
    deadline passed  -> payment.cancelled (worker sweep)
    refund           -> payment.refunded
    collection QR    -> payment.succeeded

The charge path (paycode.server.charge.transaction,
server/paycode/server/database/migrations/sql/0007_charge_function.sql) renders its bodies while
planning and inserts the row itself, at no extra round trip; every other path calls `record`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from paycode.server.database.models import Merchant, Notification, Payment, new_id
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.codes import PaymentStatus
from paycode.shared.timestamps import iso_time

SUCCEEDED: Final = "payment.succeeded"
FAILED: Final = "payment.failed"
PENDING_CONFIRMATION: Final = "payment.pending_confirmation"
DECLINED: Final = "payment.declined"
CANCELLED: Final = "payment.cancelled"
REFUNDED: Final = "payment.refunded"
EVENT_TYPES: Final = (SUCCEEDED, FAILED, PENDING_CONFIRMATION, DECLINED, CANCELLED, REFUNDED)
EVENT_BY_STATUS: Final[Mapping[str, str]] = {
    PaymentStatus.SUCCEEDED: SUCCEEDED,
    PaymentStatus.FAILED: FAILED,
    PaymentStatus.PENDING_CONFIRMATION: PENDING_CONFIRMATION,
    PaymentStatus.DECLINED: DECLINED,
    PaymentStatus.CANCELLED: CANCELLED,
}
"""The event a payment's new status is told as."""
SECRET_BYTES: Final = 32
LISTED_MAX: Final = 1000
UNDELIVERED_LISTED_MAX: Final = 100
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))
"""Compact JSON, made once: the charge path renders several bodies per charge."""


def new_event_id() -> str:
    return new_id("evt")


def render(
    event_id: str,
    event_type: str,
    payment: Mapping[str, Any],
    now_s: float,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The body sent for this event, rendered once: every delivery sends these bytes.
    `payment` is the payment as server.charging.payment_json shows it after the change."""
    assert event_type in EVENT_TYPES
    body: dict[str, Any] = {
        "event_id": event_id,
        "type": event_type,
        "created_at": iso_time(now_s),
        "merchant_id": payment["merchant_id"],
        "payment": dict(payment),
    }
    body.update(extra or {})
    return _ENCODER.encode(body)


def takes_notifications(session: Session, merchant_id: str) -> bool:
    url = session.scalar(select(Merchant.notify_url).where(Merchant.id == merchant_id))
    return url is not None


def record(
    session: Session,
    payment: Mapping[str, Any],
    event_type: str,
    now_s: float,
    *,
    extra: Mapping[str, Any] | None = None,
    notify: bool | None = None,
) -> str | None:
    """Write the event to the outbox, in the caller's transaction, if the payment's merchant
    takes notifications (`notify`, or looked up when None); its event id (None: it does not)."""
    merchant_id = str(payment["merchant_id"])
    if notify is None:
        notify = takes_notifications(session, merchant_id)
    if not notify:
        return None
    event_id = new_event_id()
    session.execute(
        insert(Notification).values(
            event_id=event_id,
            merchant_id=merchant_id,
            payment_id=str(payment["payment_id"]),
            event_type=event_type,
            payload=render(event_id, event_type, payment, now_s, extra),
            created_at_s=now_s,
            attempts=0,
            next_attempt_at_s=now_s,
        )
    )
    return event_id


def record_status(session: Session, payment: Mapping[str, Any], now_s: float) -> str | None:
    """Tell the payment's current status (its event type follows from it)."""
    return record(session, payment, EVENT_BY_STATUS[str(payment["status"])], now_s)


# -- the merchant's notification secret -----------------------------------------------------


def issue_secret(session: Session, box: SecretBox, merchant: Merchant) -> bytes:
    """A new notification signing key for `merchant`, stored sealed (like terminal secrets);
    the raw key is returned to be shown once. Replaces any earlier key at once."""
    secret = os.urandom(SECRET_BYTES)
    merchant.key_id, merchant.notify_secret_sealed = box.seal(secret, row_id=merchant.id)
    session.flush()
    return secret


# -- what operators and merchants see --------------------------------------------------------


def state_of(row: Notification) -> str:
    if row.delivered_at_s is not None:
        return "delivered"
    return "dead" if row.dead_at_s is not None else "pending"


def _time_or_none(unix_s: float | None) -> str | None:
    return None if unix_s is None else iso_time(unix_s)


def row_json(row: Notification) -> dict[str, Any]:
    """An outbox row for the operator: never its body (it is the merchant's business)."""
    return {
        "event_id": row.event_id,
        "event_type": row.event_type,
        "state": state_of(row),
        "merchant_id": row.merchant_id,
        "payment_id": row.payment_id,
        "attempts": row.attempts,
        "created_at": iso_time(row.created_at_s),
        "next_attempt_at": _time_or_none(row.next_attempt_at_s),
        "delivered_at": _time_or_none(row.delivered_at_s),
        "dead_at": _time_or_none(row.dead_at_s),
        "last_error": row.last_error,
    }


@dataclass(frozen=True, slots=True)
class ListFilter:
    merchant_id: str | None = None
    dead_only: bool = False
    include_delivered: bool = False
    limit: int = 100


def list_rows(session: Session, wanted: ListFilter) -> list[Notification]:
    """Outbox rows, newest first: undelivered ones (pending and dead) unless told otherwise."""
    assert 1 <= wanted.limit <= LISTED_MAX
    statement = select(Notification).order_by(Notification.created_at_s.desc())
    if wanted.merchant_id is not None:
        statement = statement.where(Notification.merchant_id == wanted.merchant_id)
    if wanted.dead_only:
        statement = statement.where(Notification.dead_at_s.is_not(None))
    elif not wanted.include_delivered:
        statement = statement.where(Notification.delivered_at_s.is_(None))
    return list(session.scalars(statement.limit(wanted.limit)))


def retry(session: Session, event_id: str, now_s: float) -> Notification | None:
    """Make a row due now with a fresh set of attempts (a dead one, or one to send again)."""
    result = session.execute(
        update(Notification)
        .where(Notification.event_id == event_id)
        .values(attempts=0, next_attempt_at_s=now_s, dead_at_s=None, delivered_at_s=None),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(Notification, event_id, populate_existing=True)


def undelivered(
    session: Session, merchant_id: str, *, older_than_s: float, now_s: float
) -> list[tuple[Notification, Payment]]:
    """This merchant's events still undelivered `older_than_s` after they happened, oldest
    first, with each payment as it stands now (the merchant's requery)."""
    rows = session.execute(
        select(Notification, Payment)
        .join(Payment, Payment.id == Notification.payment_id)
        .where(
            Notification.merchant_id == merchant_id,
            Notification.delivered_at_s.is_(None),
            Notification.created_at_s <= now_s - older_than_s,
        )
        .order_by(Notification.created_at_s)
        .limit(UNDELIVERED_LISTED_MAX)
    ).all()
    return [(row[0], row[1]) for row in rows]
