"""The table of codes issued online (docs/spec.md §14): one row per code the server made with
a user's issuer device, whose primary key allocates the code's (step, counter).

The primary key, not a prior SELECT, decides two requests racing for the same counter, and the
counter's bound makes the table's growth per issuer bounded by time: at most
ONLINE_CODES_PER_STEP rows per issuer per 30-s step, deleted by the purge once expired.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from paycode.server.database.models import Base

ONLINE_CODES_PER_STEP = 10
"""Codes one device may be issued per 30-s step: v1's whole counter range (0-9), and for v2
a bound that keeps a chatty or hostile wallet from growing the table (the 11th is refused)."""


class OnlineCode(Base):
    __tablename__ = "online_codes"
    __table_args__ = (
        CheckConstraint(
            f"counter >= 0 AND counter < {ONLINE_CODES_PER_STEP}", name="ck_online_code_counter"
        ),
    )
    issuer_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """The server-held issuer device (devices.online_for_device_id names who asked)."""
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    counter: Mapped[int] = mapped_column(Integer, primary_key=True)
    issued_at_s: Mapped[float] = mapped_column(Float)
    expires_at_s: Mapped[float] = mapped_column(Float, index=True)
    """When the code stops paying (the end of its window, docs/spec.md §2); the purge deletes
    the row after it."""
