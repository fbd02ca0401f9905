"""paycode-pos mandates and redeem: a partner shop redeems its customers' points from the
command line (docs/api.md, "Points mandates"; docs/spec.md, section 16).

paycode-pos mandates [--reference CUSTOMER-NUMBER]
paycode-pos redeem --mandate MDT --amount 10.00 --points 300 [--order-id ID]

`mandates` lists what the customers allowed this shop (the mandate ids `redeem` takes);
`redeem` takes `--points` under the mandate and money for the rest of `--amount`, in one
transaction. A redemption whose answer was lost is sent again with the same order id and
Idempotency-Key (`--idempotency-key`, printed on stderr), so it is taken once.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

from paycode.appkit.console import emit, printable
from paycode.merchant_pos import settings
from paycode.merchant_pos.messages import cashier_message
from paycode.shared.errors import ServerRejected


def _mandate_line(mandate: dict[str, Any]) -> str:
    fields = (
        mandate.get("mandate_id"),
        mandate.get("reference") or "-",
        f"{mandate.get('rate_points')} points = {mandate.get('rate_minor')} minor",
        f"per payment {mandate.get('cap_per_payment_points')}",
        f"left today {mandate.get('left_today_points')}/{mandate.get('cap_per_day_points')}",
        f"until {mandate.get('expires_at_s')}",
    )
    return printable("  ".join(str(field) for field in fields))


def cmd_mandates(args: argparse.Namespace) -> int:
    client = settings.load(args.home).client()
    items = client.points_mandates(reference=args.reference).get("items", [])
    human = "\n".join(_mandate_line(item) for item in items) or "no live mandates"
    emit(args, human, {"items": items})
    return 0


def cmd_redeem(args: argparse.Namespace) -> int:
    till = settings.load(args.home)
    order_id = args.order_id or f"pts-{uuid.uuid4().hex[:16]}"
    key = args.idempotency_key or str(uuid.uuid4())
    print(
        f"order {printable(order_id)}, Idempotency-Key {printable(key)} (send both again to retry)",
        file=sys.stderr,
    )
    try:
        paid = till.client().redeem_points(
            mandate_id=args.mandate,
            merchant_order_id=order_id,
            amount=args.amount,
            currency=args.currency or till.currency,
            points=args.points,
            idempotency_key=key,
        )
    except ServerRejected as error:
        # The cashier's line, and the server's detail (how many points are left today, say).
        said = cashier_message(error.code, error.message)
        if error.message and error.message not in said:
            said = f"{said} ({printable(error.message)})"
        raise ServerRejected(error.code, said, status=error.status) from error
    leg = paid.get("points") or {}
    currency = printable(str(paid.get("currency", "")))
    human = (
        f"paid {printable(str(paid.get('amount')))} {currency}: {leg.get('points')} points "
        f"({printable(str(leg.get('value')))}) + {printable(str(leg.get('money')))} {currency} "
        f"money, payment {printable(str(paid.get('payment_id')))}"
    )
    emit(args, human, {"payment": paid})
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "mandates",
        help="the points mandates customers gave this shop",
        description="List the live points mandates of this merchant: id, the customer's "
        "number with you, rate, caps and what is left of today's.",
    )
    p.add_argument("--reference", help="only the mandates of this customer number")
    p.set_defaults(func=cmd_mandates)
    p = sub.add_parser(
        "redeem",
        help="take a customer's points (and money for the rest) under their mandate",
        description="Redeem --points under --mandate for an order of --amount: the points pay "
        "their value at the mandate's rate (it must be whole minor units), the customer's money "
        "pays the rest, in one transaction. Refund either leg with 'refund PAYMENT --points N' "
        "or '--amount'.",
    )
    p.add_argument("--mandate", required=True, help="the mandate id (mdt_...), see 'mandates'")
    p.add_argument("--amount", required=True, help="the whole price, e.g. 10.00")
    p.add_argument("--points", required=True, type=int, help="whole points to take")
    p.add_argument("--currency", help="ISO 4217 code (default: the configured one)")
    p.add_argument("--order-id", help="your order number (default: a new one)")
    p.add_argument(
        "--idempotency-key", help="to retry a redemption whose answer was lost: the same key"
    )
    p.set_defaults(func=cmd_redeem)
