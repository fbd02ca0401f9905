"""Tables of offline payments (docs/offline.md §6.2): allowances, their certificates, the
acceptances tills forward, and each till's position in its hash chain.

Money set aside for an allowance sits in its own escrow account (`accounts`, owner_kind
`escrow`, owner_id the allowance id); these tables record why it moved. Races are decided by
the UNIQUE constraints named here, never by check-then-insert.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from paycode.server.database.models import Base

ESCROW = "escrow"
"""Owner kind of an allowance's escrow account (owner_id: the allowance id)."""
LOSS = "loss"
"""Owner kind of a merchant's offline-loss account (owner_id: the merchant id): credited with
what an over-spent allowance could not pay, so the loss is visible and never mixed with money."""
SHORTFALL_OWNER = "offline-shortfall"
"""Owner id of the system account that books every offline loss (it may go below zero)."""
FUND_KIND = "offline_fund"
"""Ledger transaction kinds (ledger_transactions.kind): user -> escrow when an allowance is
taken, escrow -> user when it is handed back or swept, shortfall -> loss:<merchant> for what an
over-spent escrow could not pay. An offline payment itself is an ordinary `charge`."""
RETURN_KIND = "offline_return"
LOSS_KIND = "offline_loss"

ALLOWANCE_STATES = ("live", "returned", "swept")
CLAIMING_RESULTS = ("paid", "paid_short", "unpaid", "late")
"""Results that pay or book a loss for a code: at most one per (merchant, certificate, counter)."""
RESULTS = (*CLAIMING_RESULTS, "refused_invalid", "duplicate", "duplicate_order")
_CLAIMING_SQL = "result IN ('paid', 'paid_short', 'unpaid', 'late')"


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


class OfflineAllowance(Base):
    """Money moved from a user's account into escrow for offline spending (docs/offline.md §2)."""

    __tablename__ = "offline_allowances"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="ck_allowance_amount_positive"),
        CheckConstraint(f"state IN ({_quoted(ALLOWANCE_STATES)})", name="ck_allowance_state"),
        Index("ix_offline_allowances_user_created", "user_id", "created_at_s"),
        Index("ix_offline_allowances_state_returns", "state", "returns_at_s"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """`alw_…`, also the owner id of its escrow account."""
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    device_id: Mapped[str] = mapped_column(String(32))
    """The device that asked: locked if a certificate of this allowance is over-spent."""
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    """'live' until handed back ('returned': only what codes may still claim stays in escrow)
    or swept after `returns_at_s` ('swept': escrow emptied back to the user)."""
    created_at_s: Mapped[float] = mapped_column(Float)
    expires_at_s: Mapped[float] = mapped_column(Float)
    """The certificates' expiry: no code of this allowance is valid from then on."""
    returns_at_s: Mapped[float] = mapped_column(Float)
    """expiry + the sync grace: what escrow still holds then goes back to the user."""
    ended_at_s: Mapped[float | None] = mapped_column(Float)
    """When it was handed back or swept."""


class OfflineCertificate(Base):
    """One of an allowance's certificates (docs/offline.md §2.3): 137 signed bytes."""

    __tablename__ = "offline_certificates"
    cert_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """32 hex: the certificate's random id, the only handle a v4 code carries."""
    allowance_id: Mapped[str] = mapped_column(ForeignKey("offline_allowances.id"), index=True)
    server_key_id: Mapped[str] = mapped_column(String(8))
    """8 hex: which server offline key signed it."""
    body: Mapped[bytes] = mapped_column(LargeBinary(137))
    """The whole certificate (body and signature), as the wallet holds it."""
    offline_pk: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    """UNIQUE: a key the wallet offers twice is refused (weak_key), never certified twice."""
    total_cap_minor: Mapped[int] = mapped_column(BigInteger)
    count_max: Mapped[int] = mapped_column(Integer)
    expires_at_s: Mapped[float] = mapped_column(Float)
    returned_counter: Mapped[int | None] = mapped_column(Integer)
    """At hand-back: how many counters the wallet had used (codes above it are refused)."""
    returned_spent_minor: Mapped[int | None] = mapped_column(BigInteger)
    """At hand-back: what the wallet had reserved for codes it made (kept in escrow)."""
    denied_at_s: Mapped[float | None] = mapped_column(Float)
    """Set when the certificate was handed back or its user was offline-blocked: tills that
    fetch keys after it refuse it (docs/offline.md §4.1 `denied`)."""


class OfflineAcceptance(Base):
    """What a till accepted offline (or a v4 code charged online), and how it settled."""

    __tablename__ = "offline_acceptances"
    __table_args__ = (
        UniqueConstraint("terminal_id", "seq", name="uq_acceptance_terminal_seq"),
        # One payment per code per merchant, whichever of its tills saw it (docs/offline.md §6.1).
        Index(
            "uq_acceptance_merchant_code",
            "merchant_id",
            "cert_id",
            "counter",
            unique=True,
            postgresql_where=text(_CLAIMING_SQL),
            sqlite_where=text(_CLAIMING_SQL),
        ),
        Index("ix_acceptance_cert_counter", "cert_id", "counter"),
        Index("ix_acceptance_merchant_arrived", "merchant_id", "arrived_at_s"),
        CheckConstraint(f"result IN ({_quoted(RESULTS)})", name="ck_acceptance_result"),
        CheckConstraint(
            "paid_minor >= 0 AND loss_minor >= 0 AND amount_minor > 0",
            name="ck_acceptance_amounts",
        ),
        CheckConstraint(
            "paid_minor + loss_minor = amount_minor"
            " OR (result IN ('duplicate', 'duplicate_order')"
            " AND paid_minor = 0 AND loss_minor = 0)",
            name="ck_acceptance_settled_whole",
        ),
    )
    terminal_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """The till's `acc_…` (its receipt reference and Idempotency-Key); a payment id online."""
    merchant_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int | None] = mapped_column(Integer)
    """Position in the till's hash chain; NULL for a v4 code charged online."""
    allowance_id: Mapped[str | None] = mapped_column(String(32), index=True)
    cert_id: Mapped[str | None] = mapped_column(String(32))
    """NULL only when the code did not parse (refused_invalid)."""
    counter: Mapped[int | None] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    merchant_order_id: Mapped[str | None] = mapped_column(String(64))
    at_s: Mapped[float] = mapped_column(Float)
    """The till's acceptance time (its clock)."""
    arrived_at_s: Mapped[float] = mapped_column(Float)
    result: Mapped[str] = mapped_column(String(16))
    paid_minor: Mapped[int] = mapped_column(BigInteger)
    loss_minor: Mapped[int] = mapped_column(BigInteger)
    payment_id: Mapped[str | None] = mapped_column(String(32))
    loss_transaction_id: Mapped[str | None] = mapped_column(String(32))


class OfflineTerminal(Base):
    """Each till's position in its acceptance chain: the next record must follow it."""

    __tablename__ = "offline_terminals"
    terminal_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 hex of the last accepted line; NULL after an operator recorded a lost log
    (`terminals offline-gap`): the next record's `prev` is then taken as it comes."""
