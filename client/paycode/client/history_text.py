"""A payment of `paycode-wallet history` as one line of text (the --json answer is the
server's item as it came)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from paycode.appkit.console import printable


def history_line(item: dict[str, Any]) -> str:
    """A payment as the wallet lists it, with what was refunded of it (a refund is money back
    the customer should see without --json), a points redemption's split, and whether the
    code that paid was issued online. The merchant's name is the server's text."""
    status = str(item.get("status", ""))
    refunded = str(item.get("refunded") or "0")
    try:
        any_refund = Decimal(refunded) > 0
    except InvalidOperation:  # a server's odd answer is shown, not trusted as a number
        any_refund = refunded != "0"
    if any_refund:
        status += f", refunded {refunded} {item.get('currency', '')}".rstrip()
    status += _points_part(item)
    if item.get("issued_online") is True:
        status += ", code issued online"
    columns = (item.get("created_at", ""), item.get("amount", ""), item.get("currency", ""))
    return printable("  ".join(str(field) for field in (*columns, status, item.get("merchant"))))


def _points_part(item: dict[str, Any]) -> str:
    """A points redemption's split: its `amount` is the whole price, and only the money part
    left the balance."""
    leg = item.get("points")
    if not isinstance(leg, dict):
        return ""
    currency = item.get("currency", "")
    return f", {leg.get('money')} {currency} money + {leg.get('points')} points"
