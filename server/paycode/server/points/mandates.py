"""Binding, listing and revoking points mandates (docs/spec.md §16, docs/api.md "Points
mandates").

A mandate is bound by a signed wallet request whose body carries the consent fields and the
device's signature over `paycode.shared.points.consent_message` of them: the request signature
proves who asked, the consent signature is the evidence kept on the row. Revocation is one
conditional UPDATE (`revoked_at_s IS NULL`), so it races a deduction's conditional UPDATE of the
same row cleanly: whichever commits first wins, and nothing is deducted after a revocation.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from paycode.server.database.models import Device, Merchant, new_id
from paycode.server.database.points_models import PointsMandate
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError
from paycode.shared.points import (
    LIFETIME_S_MAX,
    POINTS_ASSET,
    POINTS_MAX,
    RATE_TERM_MAX,
    REFERENCE_CHARS_MAX,
    Consent,
    consent_message,
    is_count,
)
from paycode.shared.wallet_auth import signature_valid

LIST_MAX: Final = 100
"""A list answers the newest 100 mandates (a user binds a handful; a merchant pages by time)."""
ID_CHARS_MAX: Final = 32
SIGNATURE_CHARS_MAX: Final = 128
BIND_FIELDS: Final = frozenset(
    {
        "merchant_id",
        "asset",
        "currency",
        "rate_points",
        "rate_minor",
        "cap_per_payment_points",
        "cap_per_day_points",
        "expires_at_s",
        "reference",
        "signature",
    }
)
ACTIVE, REVOKED, EXPIRED = "active", "revoked", "expired"


def _invalid(detail: str) -> ApiError:
    return ApiError(ErrorCode.MANDATE_INVALID, detail)


def _count(body: dict[str, Any], name: str, maximum: int) -> int:
    value = body.get(name)
    if not is_count(value, maximum):
        raise _invalid(f"'{name}' must be a whole number 1-{maximum}")
    assert isinstance(value, int)
    return value


def _text(body: dict[str, Any], name: str, max_chars: int, *, required: bool = True) -> str:
    value = body.get(name, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise _invalid(f"'{name}' must be a {'non-empty ' if required else ''}string")
    if len(value) > max_chars or not value.isascii() or not value.isprintable():
        raise _invalid(f"'{name}' must be at most {max_chars} printable ASCII characters")
    return value


def parse_consent(body: dict[str, Any], device_id: str) -> tuple[Consent, str]:
    """The consent the body states, and its signature; mandate_invalid naming the field."""
    unknown = sorted(set(body) - BIND_FIELDS)
    if unknown:
        raise _invalid(f"unknown member {unknown[0][:32]!r}: the consent has exactly its fields")
    if body.get("asset") != POINTS_ASSET:
        raise _invalid(f"'asset' must be {POINTS_ASSET!r}")
    per_payment = _count(body, "cap_per_payment_points", POINTS_MAX)
    per_day = _count(body, "cap_per_day_points", POINTS_MAX)
    if per_payment > per_day:
        raise _invalid("'cap_per_payment_points' must not exceed 'cap_per_day_points'")
    consent = Consent(
        merchant_id=_text(body, "merchant_id", ID_CHARS_MAX),
        currency=_text(body, "currency", 3),
        rate_points=_count(body, "rate_points", RATE_TERM_MAX),
        rate_minor=_count(body, "rate_minor", RATE_TERM_MAX),
        cap_per_payment_points=per_payment,
        cap_per_day_points=per_day,
        expires_at_s=_count(body, "expires_at_s", 2**53),
        device_id=device_id,
        reference=_text(body, "reference", REFERENCE_CHARS_MAX, required=False),
    )
    return consent, _text(body, "signature", SIGNATURE_CHARS_MAX)


def bind(
    session: Session,
    device: Device,
    body: dict[str, Any],
    *,
    device_key: bytes,
    now_s: float,
    day: int,
) -> dict[str, Any]:
    """Check the consent and its signature, then store the mandate; raises having stored
    nothing. The signature is checked before the merchant is looked up, so an unsigned
    request learns nothing about which merchants exist."""
    consent, signature = parse_consent(body, device.id)
    message = consent_message(consent)
    if not device_key or not signature_valid(device.version, device_key, message, signature):
        raise ApiError(
            ErrorCode.MANDATE_SIGNATURE_INVALID, "the consent's signature does not verify"
        )
    merchant = session.get(Merchant, consent.merchant_id)
    if merchant is None:
        raise ApiError(ErrorCode.NOT_FOUND, "no such merchant")
    if consent.currency != merchant.currency:
        raise ApiError(ErrorCode.CURRENCY_MISMATCH, f"this merchant takes {merchant.currency}")
    if not now_s < consent.expires_at_s <= now_s + LIFETIME_S_MAX:
        raise _invalid(
            f"'expires_at_s' must be in the future and at most {LIFETIME_S_MAX // 86_400} days away"
        )
    row = PointsMandate(
        id=new_id("mdt"),
        user_id=device.user_id,
        merchant_id=merchant.id,
        device_id=device.id,
        asset=consent.asset,
        currency=consent.currency,
        rate_points=consent.rate_points,
        rate_minor=consent.rate_minor,
        cap_per_payment_points=consent.cap_per_payment_points,
        cap_per_day_points=consent.cap_per_day_points,
        reference=consent.reference,
        expires_at_s=float(consent.expires_at_s),
        created_at_s=now_s,
        revoked_at_s=None,
        consent=message.decode("ascii"),
        signature=signature,
        day=day,
        day_used_points=0,
        used_points=0,
    )
    session.add(row)
    session.flush()
    return mandate_json(row, merchant.name, now_s=now_s, day=day)


def status_of(row: PointsMandate, now_s: float) -> str:
    if row.revoked_at_s is not None:
        return REVOKED
    return ACTIVE if now_s < row.expires_at_s else EXPIRED


def used_today(row: PointsMandate, day: int) -> int:
    return row.day_used_points if row.day >= day else 0


def mandate_json(
    row: PointsMandate, merchant_name: str, *, now_s: float, day: int
) -> dict[str, Any]:
    """What the wallet and the merchant see of a mandate (never the consent signature)."""
    used = used_today(row, day)
    return {
        "mandate_id": row.id,
        "merchant_id": row.merchant_id,
        "merchant": merchant_name,
        "asset": row.asset,
        "currency": row.currency,
        "rate_points": row.rate_points,
        "rate_minor": row.rate_minor,
        "cap_per_payment_points": row.cap_per_payment_points,
        "cap_per_day_points": row.cap_per_day_points,
        "used_today_points": used,
        "left_today_points": row.cap_per_day_points - used,
        "used_points": row.used_points,
        "reference": row.reference,
        "status": status_of(row, now_s),
        "created_at_s": row.created_at_s,
        "expires_at_s": row.expires_at_s,
        "revoked_at_s": row.revoked_at_s,
    }


def user_mandates(session: Session, user_id: str, *, now_s: float, day: int) -> list[Any]:
    """The user's mandates, newest first, revoked and expired ones too (with their status)."""
    rows = session.execute(
        select(PointsMandate, Merchant.name)
        .join(Merchant, Merchant.id == PointsMandate.merchant_id)
        .where(PointsMandate.user_id == user_id)
        .order_by(PointsMandate.created_at_s.desc(), PointsMandate.id)
        .limit(LIST_MAX)
    ).all()
    return [mandate_json(row, name, now_s=now_s, day=day) for row, name in rows]


def merchant_mandates(
    session: Session, merchant_id: str, *, now_s: float, day: int, reference: str | None = None
) -> list[dict[str, Any]]:
    """The merchant's live mandates (neither revoked nor expired), newest first; only those
    the user gave `reference` (its customer number) when it is given."""
    chosen = () if reference is None else (PointsMandate.reference == reference,)
    rows = session.execute(
        select(PointsMandate, Merchant.name)
        .join(Merchant, Merchant.id == PointsMandate.merchant_id)
        .where(
            PointsMandate.merchant_id == merchant_id,
            PointsMandate.revoked_at_s.is_(None),
            PointsMandate.expires_at_s > now_s,
            *chosen,
        )
        .order_by(PointsMandate.created_at_s.desc(), PointsMandate.id)
        .limit(LIST_MAX)
    ).all()
    return [mandate_json(row, name, now_s=now_s, day=day) for row, name in rows]


def revoke(
    session: Session, user_id: str, mandate_id: str, *, now_s: float, day: int
) -> dict[str, Any]:
    """Revoke one of the user's mandates, at once; revoking a revoked one answers it as it is
    (idempotent without a key too). The conditional UPDATE waits for a deduction holding the
    row, and a deduction waiting for it then finds the row revoked."""
    session.execute(
        update(PointsMandate)
        .where(
            PointsMandate.id == mandate_id[:ID_CHARS_MAX],
            PointsMandate.user_id == user_id,
            PointsMandate.revoked_at_s.is_(None),
        )
        .values(revoked_at_s=now_s),
        execution_options={"synchronize_session": False},
    )
    found = session.execute(
        select(PointsMandate, Merchant.name)
        .join(Merchant, Merchant.id == PointsMandate.merchant_id)
        .where(PointsMandate.id == mandate_id[:ID_CHARS_MAX], PointsMandate.user_id == user_id)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if found is None:
        raise ApiError(ErrorCode.NOT_FOUND, "no such mandate of yours")
    row, name = found
    return mandate_json(row, name, now_s=now_s, day=day)


def deduct(
    session: Session, mandate: PointsMandate, points: int, *, now_s: float, day: int
) -> None:
    """Count `points` against the mandate in one conditional UPDATE: live, within the
    per-payment cap and what is left today (a new day starts from zero). Refused: the row is
    read again to say which rule refused, having changed nothing."""
    today = case((PointsMandate.day >= day, PointsMandate.day_used_points), else_=0)
    counted = session.execute(
        update(PointsMandate)
        .where(
            PointsMandate.id == mandate.id,
            PointsMandate.revoked_at_s.is_(None),
            PointsMandate.expires_at_s > now_s,
            PointsMandate.cap_per_payment_points >= points,
            today + points <= PointsMandate.cap_per_day_points,
        )
        .values(
            day=case((PointsMandate.day > day, PointsMandate.day), else_=day),
            day_used_points=today + points,
            used_points=PointsMandate.used_points + points,
        ),
        execution_options={"synchronize_session": False},
    )
    if counted.rowcount == 1:  # type: ignore[attr-defined]
        return
    session.refresh(mandate)
    if mandate.revoked_at_s is not None:
        raise ApiError(ErrorCode.MANDATE_REVOKED, "the user revoked this mandate")
    if mandate.expires_at_s <= now_s:
        raise ApiError(ErrorCode.MANDATE_EXPIRED, "this mandate has expired")
    if points > mandate.cap_per_payment_points:
        raise ApiError(
            ErrorCode.MANDATE_PAYMENT_CAP,
            f"at most {mandate.cap_per_payment_points} points in one payment",
        )
    left = mandate.cap_per_day_points - used_today(mandate, day)
    raise ApiError(ErrorCode.MANDATE_DAY_CAP, f"{left} points are left under this mandate today")
