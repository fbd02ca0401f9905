"""Who is in the bank, and changing a merchant after it was created (`paycode-server users list`,
`merchants list`, `merchants update`). Listing never shows a secret or a hash."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database.models import Account, Device, Merchant, Terminal, User
from paycode.server.operations import admin
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import AmountInvalid, ApiError
from paycode.shared.money import parse_amount

LIST_ROWS_MAX = 1000


@dataclass(frozen=True)
class MerchantChange:
    """What `merchants update` asks for; None leaves a field as it is."""

    name: str | None = None
    city: str | None = None
    ascii_name: str | None = None
    ascii_city: str | None = None
    language: str | None = None
    notify_url: str | None = None
    clear_notify_url: bool = False
    allow_ips: list[str] | None = None
    allow_anywhere: bool = False
    allow_private_notify: bool = False
    """PAYCODE_NOTIFY_ALLOW_PRIVATE: the notify URL may name a private network's host."""
    offline_floor: str | None = None
    """The most one offline payment may be at its tills, a decimal amount ("0": none)."""


def list_users(session: Session, limit: int = LIST_ROWS_MAX) -> list[dict[str, object]]:
    """Users by name, each with its balances and live devices."""
    users = session.scalars(select(User).order_by(User.name).limit(limit)).all()
    ids = [user.id for user in users]
    balances: dict[str, list[dict[str, object]]] = {}
    for account in session.scalars(
        select(Account).where(Account.owner_kind == "user", Account.owner_id.in_(ids))
    ):
        row = {"currency": account.currency, "balance_minor": account.balance_minor}
        balances.setdefault(account.owner_id, []).append(row)
    live = dict(
        session.execute(
            select(Device.user_id, func.count())
            .where(
                Device.user_id.in_(ids),
                Device.revoked_at_s.is_(None),
                Device.online_for_device_id.is_(None),  # the server's issuers (spec §14)
            )
            .group_by(Device.user_id)
        ).all()
    )
    return [
        {
            "id": user.id,
            "name": user.name,
            "created_at_s": user.created_at_s,
            "pin_set": user.pin_hash is not None,
            "live_devices": int(live.get(user.id, 0)),
            "accounts": sorted(balances.get(user.id, []), key=lambda a: str(a["currency"])),
        }
        for user in users
    ]


def list_merchants(session: Session, limit: int = LIST_ROWS_MAX) -> list[dict[str, object]]:
    merchants = session.scalars(select(Merchant).order_by(Merchant.name).limit(limit)).all()
    live = dict(
        session.execute(
            select(Terminal.merchant_id, func.count())
            .where(Terminal.revoked_at_s.is_(None))
            .group_by(Terminal.merchant_id)
        ).all()
    )
    return [
        merchant_json(merchant) | {"live_terminals": int(live.get(merchant.id, 0))}
        for merchant in merchants
    ]


def merchant_json(merchant: Merchant) -> dict[str, object]:
    return {
        "id": merchant.id,
        "name": merchant.name,
        "currency": merchant.currency,
        "city": merchant.city,
        "country": merchant.country,
        "notify_url": merchant.notify_url,
        "allowed_networks": merchant.allowed_cidrs.split(",") if merchant.allowed_cidrs else [],
        "ascii_name": merchant.ascii_name,
        "ascii_city": merchant.ascii_city,
        "language": merchant.language,
        "dashboard_password_set": merchant.password_hash is not None,
        "offline_floor_minor": merchant.offline_floor_minor,
    }


def update_merchant(session: Session, name_or_id: str, change: MerchantChange) -> Merchant:
    """Apply `change` to one merchant, checked as `merchants create` checks it. A new name or
    city changes what its QR posters must say: posters printed before are refused as
    qr_invalid (their signed fields no longer match) and must be printed again."""
    merchant = admin.find_merchant(session, name_or_id)
    if change.notify_url is not None and change.clear_notify_url:
        raise ApiError(ErrorCode.INVALID_ARGUMENT, "--notify-url and --no-notify-url conflict")
    if change.allow_ips is not None and change.allow_anywhere:
        raise ApiError(ErrorCode.INVALID_ARGUMENT, "--allow-ip and --allow-anywhere conflict")
    if change.notify_url is not None:
        merchant.notify_url = admin.check_notify_url(
            change.notify_url, allow_private=change.allow_private_notify
        )
    elif change.clear_notify_url:
        merchant.notify_url = None
    if change.allow_ips is not None or change.allow_anywhere:
        merchant.allowed_cidrs = admin.check_networks(change.allow_ips or [])
    if change.offline_floor is not None:
        try:
            floor = parse_amount(change.offline_floor, merchant.currency, allow_zero=True)
        except AmountInvalid as error:
            raise ApiError(ErrorCode.AMOUNT_INVALID, f"--offline-floor: {error.message}") from error
        merchant.offline_floor_minor = floor.amount_minor
    names = (change.name, change.city, change.ascii_name, change.ascii_city, change.language)
    if any(value is not None for value in names):
        _rename(session, merchant, change)
    wanted_name = merchant.name
    try:
        session.flush()  # the UNIQUE index on the name decides, also between two operators
    except IntegrityError as error:  # the row is unreadable now: the name was kept above
        message = f"a merchant named {wanted_name!r} exists"
        raise ApiError(ErrorCode.MERCHANT_EXISTS, message) from error
    return merchant


def _rename(session: Session, merchant: Merchant, change: MerchantChange) -> None:
    name = admin.check_merchant_name(change.name) if change.name is not None else merchant.name
    city = admin.check_city(change.city) if change.city is not None else merchant.city
    emv = admin.emv_names(
        name,
        city,
        ascii_name=change.ascii_name,
        ascii_city=change.ascii_city,
        language=change.language,
    )
    merchant.name, merchant.city = name, city
    merchant.ascii_name, merchant.ascii_city, merchant.language = emv
