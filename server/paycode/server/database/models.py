"""Database tables (SQLAlchemy 2.0 typed models). Migrations: server/migrations.

Conventions: public ids are prefixed random strings (`pay_…`); money is BIGINT minor units plus
an ISO 4217 code; times are Unix seconds (`*_at_s`, float); secrets are sealed by SecretBox with
the master key id beside them. Races are decided by UNIQUE constraints and conditional updates,
never by check-then-insert; CHECK constraints are the database's own assertions.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from paycode.server.database import functions

DEFAULT_CITY = "Beijing"
DEFAULT_COUNTRY = "CN"
SYSTEM = "system"
"""Owner kind of the funding account: the only account allowed below zero (top-ups come from it)."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


TIME_ORDERED_HEX_DIGITS = 12
"""Milliseconds since 1970 in 12 hex digits: in order until the year 10889."""


def time_ordered_id(prefix: str, now_s: float) -> str:
    """`prefix_` + the time in ms + 64 random bits: unique like new_id, but a B-tree receives
    these at its right edge. A random key lands on a random index page, and each page's first
    change after a checkpoint writes the whole page to the WAL: on a table of a million
    ledger transactions that was most of a charge's WAL (docs/deploy.md, "WAL"). Only for ids
    nobody parses (a ledger transaction's): payment ids keep new_id's published format."""
    millis = int(now_s * 1000)
    assert 0 <= millis < 16**TIME_ORDERED_HEX_DIGITS
    return f"{prefix}_{millis:012x}{secrets.token_hex(8)}"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    pin_hash: Mapped[str | None] = mapped_column(String(256))
    """Payment PIN (scrypt, as passwords): confirms payments above the password-free limits."""
    created_at_s: Mapped[float] = mapped_column(Float)
    offline_blocked_at_s: Mapped[float | None] = mapped_column(Float)
    """Set when one of the user's offline allowances was over-spent (a cloned wallet): no new
    allowance until an operator clears it (docs/offline.md §6.4)."""


class Merchant(Base):
    __tablename__ = "merchants"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    city: Mapped[str] = mapped_column(String(15), default=DEFAULT_CITY, server_default=DEFAULT_CITY)
    """EMV tag 60 on the merchant's collection QR (at most 15 characters)."""
    country: Mapped[str] = mapped_column(
        String(2), default=DEFAULT_COUNTRY, server_default=DEFAULT_COUNTRY
    )
    """ISO 3166-1 alpha-2, EMV tag 58."""
    notify_url: Mapped[str | None] = mapped_column(String(512))
    """Where payment notifications are POSTed (paycode.server.notifications.events); NULL: none
    are."""
    key_id: Mapped[str | None] = mapped_column(String(16))
    """The master key sealing `notify_secret_sealed` (paycode.server.safety.rotation re-wraps
    it)."""
    notify_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary(64))
    """The notification signing key (32 bytes), sealed; NULL for merchants made before 0007."""
    allowed_cidrs: Mapped[str | None] = mapped_column(Text)
    """Comma-separated networks its terminals may call from; NULL: from anywhere."""
    password_hash: Mapped[str | None] = mapped_column(String(256))
    """The dashboard log-in (scrypt), held by no terminal; NULL: the dashboard is closed to it."""
    ascii_name: Mapped[str | None] = mapped_column(String(25))
    """EMV tag 59 when `name` is not printable ASCII (given by the operator or transliterated);
    `name` then goes in the language template 64. NULL: `name` is ASCII and is tag 59."""
    ascii_city: Mapped[str | None] = mapped_column(String(15))
    """EMV tag 60 when `city` is not printable ASCII; NULL: `city` is."""
    language: Mapped[str | None] = mapped_column(String(2))
    """ISO 639-1 (capitals) of `name` when it is not ASCII: EMV 64/00."""
    offline_floor_minor: Mapped[int | None] = mapped_column(BigInteger)
    """The most one offline payment may be at its tills (docs/offline.md §4.1); NULL: the
    server's default, 0: its tills take no offline payment."""
    created_at_s: Mapped[float] = mapped_column(Float)


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("owner_kind", "owner_id", "currency", name="uq_account_owner_currency"),
        CheckConstraint(
            f"balance_minor >= 0 OR owner_kind = '{SYSTEM}'", name="ck_account_not_negative"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_kind: Mapped[str] = mapped_column(String(8))
    """'user', 'merchant', 'system', or offline: 'escrow' (one per allowance) and 'loss'."""
    owner_id: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    balance_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # The user's own password-free limits (paycode.server.safety.limits); NULL: the server default.
    pinless_payment_max_minor: Mapped[int | None] = mapped_column(BigInteger)
    pinless_daily_max_minor: Mapped[int | None] = mapped_column(BigInteger)
    pinless_daily_count_max: Mapped[int | None] = mapped_column(Integer)
    # Password-free use on day `pinless_day`: kept on the row every charge locks anyway.
    pinless_day: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pinless_day_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pinless_day_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    """'top_up', 'charge', 'refund', 'offline_fund', 'offline_return', 'offline_loss', or for
    points (docs/spec.md §16) 'points_grant', 'points_charge' or 'points_refund'."""
    payment_id: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at_s: Mapped[float] = mapped_column(Float, index=True)


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    """Signed: negative debits the account, positive credits it; a transaction sums to zero."""
    currency: Mapped[str] = mapped_column(String(3))


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("version", "handle", name="uq_device_version_handle"),
        # One online issuer per requesting device and version (docs/spec.md §14): the
        # constraint, not a prior SELECT, decides two first requests racing.
        UniqueConstraint("online_for_device_id", "version", name="uq_device_online_for_version"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    version: Mapped[str] = mapped_column(String(8))
    handle: Mapped[bytes] = mapped_column(LargeBinary(16))
    key_id: Mapped[str | None] = mapped_column(String(16))
    key_sealed: Mapped[bytes | None] = mapped_column(LargeBinary(64))
    """v1/v2: the device HMAC key, sealed under the master key `key_id`."""
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    """v3: the device's Ed25519 public key (nothing secret is stored)."""
    drift_steps: Mapped[int] = mapped_column(Integer, default=0)
    label: Mapped[str] = mapped_column(String(64), default="")
    created_at_s: Mapped[float] = mapped_column(Float)
    revoked_at_s: Mapped[float | None] = mapped_column(Float)
    locked_at_s: Mapped[float | None] = mapped_column(Float)
    """Set after repeated bad codes naming this device; its next signed wallet call clears it."""
    online_for_device_id: Mapped[str | None] = mapped_column(String(32))
    """Set on a server-held issuer of codes issued online (docs/spec.md §14): the user's device
    that asks for them. Its key never leaves the server; NULL on every enrolled device."""


class ServerKey(Base):
    """Verifier keys: v1/v2 hiding keys and v3 seal keys, sealed under the master key."""

    __tablename__ = "server_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), index=True)
    """'hiding:v1', 'hiding:v2', 'seal', 'qr' or 'offline' (signs offline certificates)."""
    key_id: Mapped[str] = mapped_column(String(16))
    key_sealed: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at_s: Mapped[float] = mapped_column(Float)
    retired_at_s: Mapped[float | None] = mapped_column(Float)


class Terminal(Base):
    __tablename__ = "terminals"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Also the key id the terminal signs with."""
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(16))
    secret_sealed: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at_s: Mapped[float] = mapped_column(Float)
    revoked_at_s: Mapped[float | None] = mapped_column(Float)


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="ck_payment_amount_positive"),
        CheckConstraint(
            "refunded_minor >= 0 AND refunded_minor <= amount_minor",
            name="ck_payment_refund_bounded",
        ),
        # A merchant's order id names at most one successful payment; failed attempts may repeat it.
        Index(
            "uq_payment_merchant_order",
            "merchant_id",
            "merchant_order_id",
            unique=True,
            postgresql_where=text("status = 'succeeded'"),
            sqlite_where=text("status = 'succeeded'"),
        ),
        Index("ix_payment_merchant_order", "merchant_id", "merchant_order_id"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    terminal_id: Mapped[str | None] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    device_id: Mapped[str | None] = mapped_column(String(32))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(24))
    """'succeeded', 'failed' (failure_code says why), 'pending_confirmation' (above the
    password-free limits, waiting for the customer's PIN), then 'declined' or 'cancelled'."""
    failure_code: Mapped[str | None] = mapped_column(String(32))
    merchant_order_id: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str | None] = mapped_column(String(8))
    created_at_s: Mapped[float] = mapped_column(Float, index=True)
    confirm_by_s: Mapped[float | None] = mapped_column(Float)
    """A pending payment's deadline: after it, it can only be cancelled."""
    allowance_id: Mapped[str | None] = mapped_column(String(32))
    """An offline (v4) payment: the allowance whose escrow paid it (docs/offline.md §6.1)."""
    online_issuer_id: Mapped[str | None] = mapped_column(String(32))
    """A payment by a code issued online (docs/spec.md §14): the server-held issuer whose code
    paid; `device_id` is then the device that asked for the code. NULL for every other."""
    # A points redemption (docs/spec.md §16): `amount_minor` is the whole price, of which
    # `points_value_minor` was paid with `points` under the mandate and the rest with money;
    # `refunded_minor` counts the money leg only, `points_refunded` the points leg.
    mandate_id: Mapped[str | None] = mapped_column(String(32), index=True)
    points: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    points_value_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    points_refunded: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="ck_refund_amount_positive"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    created_at_s: Mapped[float] = mapped_column(Float)


class Claim(Base):
    """Single use: one row per (version, handle, step, counter); the primary key decides races."""

    __tablename__ = "claims"
    claim_key: Mapped[str] = mapped_column(String(96), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(32))
    expires_at_s: Mapped[float] = mapped_column(Float, index=True)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    """Who sent it: 'terminal:<id>' or 'device:<id>' or 'session:<user>'."""
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
    created_at_s: Mapped[float] = mapped_column(Float, index=True)


class WalletSession(Base):
    __tablename__ = "wallet_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    expires_at_s: Mapped[float] = mapped_column(Float, index=True)


class MerchantSession(Base):
    """A dashboard log-in: the cookie carries the token, the table only its SHA-256."""

    __tablename__ = "merchant_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    expires_at_s: Mapped[float] = mapped_column(Float, index=True)


class RequestNonce(Base):
    """Seen request-signature nonces: a replayed signed request is refused."""

    __tablename__ = "request_nonces"
    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at_s: Mapped[float] = mapped_column(Float, index=True)


class FailureCounter(Base):
    """Failed code verifications per scope (terminal:, merchant:, ip:); see
    paycode.server.safety.guard."""

    __tablename__ = "failure_counters"
    scope: Mapped[str] = mapped_column(String(80), primary_key=True)
    window_start_s: Mapped[float] = mapped_column(Float)
    failures: Mapped[int] = mapped_column(Integer)
    strikes: Mapped[int] = mapped_column(Integer)
    """Blocks so far: the next block lasts base x 2^strikes (bounded)."""
    blocked_until_s: Mapped[float | None] = mapped_column(Float)


class VersionState(Base):
    """An operator's lifecycle decision for a code version (paycode.server.operations.lifecycle).
    No row: the
    registry's default status, so a version added in code needs no row."""

    __tablename__ = "version_states"
    __table_args__ = (
        CheckConstraint(
            "status IN ('active', 'deprecated', 'retired')", name="ck_version_state_status"
        ),
    )
    version: Mapped[str] = mapped_column(String(8), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    changed_at_s: Mapped[float] = mapped_column(Float)


class Notification(Base):
    """The outbox: one row per payment state change a merchant with a notify_url is told about,
    written in the transaction that made the change; `paycode-server worker` delivers it.

    Due rows have `next_attempt_at_s` <= now; a worker that claims a row moves it into the
    future (its lease), so a killed worker's row becomes due again when the lease ends.
    Delivered and dead rows have it NULL. No foreign keys: the row is written on the charge
    path, and an outbox entry is a record of what was said, not a live reference."""

    __tablename__ = "notification_outbox"
    __table_args__ = (
        Index("ix_notification_outbox_merchant_created", "merchant_id", "created_at_s"),
    )
    event_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """`evt_…`: stable across redeliveries, the merchant de-duplicates on it."""
    merchant_id: Mapped[str] = mapped_column(String(32))
    payment_id: Mapped[str] = mapped_column(String(32), index=True)
    event_type: Mapped[str] = mapped_column(String(40))
    """payment.succeeded | failed | pending_confirmation | declined | cancelled | refunded"""
    payload: Mapped[str] = mapped_column(Text)
    """The JSON body, rendered once: every delivery sends these exact bytes."""
    created_at_s: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at_s: Mapped[float | None] = mapped_column(Float, index=True)
    delivered_at_s: Mapped[float | None] = mapped_column(Float, index=True)
    """Delivered rows are purged a while after it (paycode.server.notifications.delivery)."""
    dead_at_s: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(String(200))
    """Why the last attempt failed, short ("http 500", "timeout"); never a body or a secret."""


@event.listens_for(Base.metadata, "after_create")
def _after_create(_target: Any, connection: Connection, **_kw: Any) -> None:
    """Schemas made by metadata.create_all (tests, benchmarks) get what migrations add."""
    functions.install_current(connection)


class Order(Base):
    """A dynamic order a till created (POST /v1/orders): the amount, currency and merchant come
    from this row, never from the payer. Its token (in the QR, 26/03) is the only way to pay
    it; `status` moves from open to paid or cancelled once, by a conditional UPDATE."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("merchant_id", "merchant_order_id", name="uq_order_merchant_order"),
        CheckConstraint("amount_minor > 0", name="ck_order_amount_positive"),
        CheckConstraint(
            "paid_count >= 0 AND (payments_max IS NULL OR paid_count <= payments_max)",
            name="ck_order_paid_count",
        ),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token: Mapped[str] = mapped_column(String(24), unique=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    terminal_id: Mapped[str | None] = mapped_column(ForeignKey("terminals.id"))
    merchant_order_id: Mapped[str] = mapped_column(String(64))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    """'open', 'paid' or 'cancelled'; an open order past `expires_at_s` reads as expired."""
    payment_id: Mapped[str | None] = mapped_column(String(32))
    created_at_s: Mapped[float] = mapped_column(Float)
    expires_at_s: Mapped[float] = mapped_column(Float)
    ended_at_s: Mapped[float | None] = mapped_column(Float)
    # Hosted checkout (docs/spec.md, section 15): a till's order, a checkout a web shop sends
    # its customer to (return_url), or a payment link several customers may pay.
    kind: Mapped[str] = mapped_column(String(16), server_default="till")
    return_url: Mapped[str | None] = mapped_column(String(2000))
    payments_max: Mapped[int | None] = mapped_column(Integer)
    paid_count: Mapped[int] = mapped_column(Integer, server_default="0")
