"""Tables of points mandates (docs/spec.md §16): a user's consent that a merchant may deduct
loyalty points, and the refunds of a redemption's points leg.

Points sit in ledger accounts of their own owner kinds (`pts_user`, `pts_mrch`; the funding
account is the `system` one of asset PTS), so no query that lists a user's or a merchant's
money accounts ever meets a points balance. A deduction is one conditional UPDATE of its
mandate row (live, within both caps), which also races with revocation; the CHECK constraints
are the database's own assertions of the caps.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from paycode.server.database.models import Base

POINTS_USER = "pts_user"
"""Owner kind of a user's points account (owner_id: the user id)."""
POINTS_MERCHANT = "pts_mrch"
"""Owner kind of a merchant's points account (owner_id: the merchant id)."""
POINTS_FUNDING = "points"
"""Owner id of the system account points are granted from (it may go below zero)."""
GRANT_KIND = "points_grant"
CHARGE_KIND = "points_charge"
REFUND_KIND = "points_refund"
"""Ledger transaction kinds: funding -> user (`points grant`), user -> merchant (a
redemption's points leg), merchant -> user (a refund of it)."""


class PointsMandate(Base):
    __tablename__ = "points_mandates"
    __table_args__ = (
        CheckConstraint("rate_points > 0 AND rate_minor > 0", name="ck_mandate_rate_positive"),
        CheckConstraint(
            "cap_per_payment_points > 0 AND cap_per_payment_points <= cap_per_day_points",
            name="ck_mandate_caps",
        ),
        CheckConstraint(
            "day_used_points >= 0 AND day_used_points <= cap_per_day_points",
            name="ck_mandate_day_within_cap",
        ),
        CheckConstraint("used_points >= 0", name="ck_mandate_used_not_negative"),
        Index("ix_points_mandates_user_created", "user_id", "created_at_s"),
        Index("ix_points_mandates_merchant_created", "merchant_id", "created_at_s"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """`mdt_…`"""
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    device_id: Mapped[str] = mapped_column(String(32))
    """The device that signed the consent."""
    asset: Mapped[str] = mapped_column(String(3))
    currency: Mapped[str] = mapped_column(String(3))
    """The merchant's currency when bound: what the rate's minor units are of."""
    rate_points: Mapped[int] = mapped_column(BigInteger)
    rate_minor: Mapped[int] = mapped_column(BigInteger)
    cap_per_payment_points: Mapped[int] = mapped_column(BigInteger)
    cap_per_day_points: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str] = mapped_column(String(64))
    expires_at_s: Mapped[float] = mapped_column(Float)
    created_at_s: Mapped[float] = mapped_column(Float)
    revoked_at_s: Mapped[float | None] = mapped_column(Float)
    consent: Mapped[str] = mapped_column(Text)
    """The exact message the device signed (paycode.shared.points.consent_message): evidence."""
    signature: Mapped[str] = mapped_column(String(128))
    """The device's signature over `consent`, base64 (never logged)."""
    day: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The day `day_used_points` counts (LimitSettings.day: the settlement's days)."""
    day_used_points: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    used_points: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Every point ever deducted under the mandate (refunds do not lower it): reconcile
    checks it against the payments."""


class PointsRefund(Base):
    __tablename__ = "points_refunds"
    __table_args__ = (CheckConstraint("points > 0", name="ck_points_refund_positive"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """`prf_…`"""
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    points: Mapped[int] = mapped_column(BigInteger)
    created_at_s: Mapped[float] = mapped_column(Float)
