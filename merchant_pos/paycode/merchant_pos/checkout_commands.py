"""paycode-pos checkout and verify-return: a hosted checkout from the command line (docs/api.md,
"Hosted checkout"; docs/spec.md, section 15).

paycode-pos checkout --amount 12.50 [--order-id ID] [--return-url URL] [--expires-in-s N]
paycode-pos checkout --amount 12.50 --link [--payments-max N]
paycode-pos verify-return URL

`checkout` prints the page to send the customer to (or to put on an invoice); `verify-return`
checks the signed result a customer came back with, using the server's public QR keys, and
exits EXIT_NOT_VALID when it does not verify. Both use the till's terminal key.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from paycode.appkit.console import emit, printable
from paycode.merchant_pos import settings
from paycode.shared.checkout_return import ReturnVerdict, verify_return
from paycode.shared.emv.qr_signature import from_b64url

EXIT_NOT_VALID = 3
"""As a sale that was not paid: the answer is no, the command itself worked."""
URL_CHARS_MAX = 4096
"""A return URL is the shop's (at most 2000 characters) plus the signed parameters."""


def cmd_checkout(args: argparse.Namespace) -> int:
    till = settings.load(args.home)
    body: dict[str, Any] = {
        "kind": "link" if args.link else "checkout",
        "amount": args.amount,
        "currency": args.currency or till.currency,
    }
    optional = {
        "merchant_order_id": args.order_id,
        "return_url": args.return_url,
        "expires_in_s": args.expires_in_s,
        "payments_max": args.payments_max,
    }
    body |= {name: value for name, value in optional.items() if value is not None}
    made = till.client().create_checkout(body)
    said = {key: printable(str(made.get(key, ""))) for key in ("pay_url", "amount", "currency")}
    human = f"{said['pay_url']}\n{said['amount']} {said['currency']}, until {made['expires_at']}"
    emit(args, human, {"checkout": made})
    return 0


def cmd_verify_return(args: argparse.Namespace) -> int:
    if len(args.url) > URL_CHARS_MAX:
        raise settings.SettingsInvalid(f"the URL is longer than {URL_CHARS_MAX} characters")
    client = settings.load(args.home).client()
    keys: dict[str, bytes] = {}
    for key in client.qr_keys():
        public = from_b64url(str(key.get("public_key", "")))
        if public is not None and len(public) == 32:
            keys[str(key.get("key_id"))] = public
    query = urllib.parse.urlsplit(args.url).query
    check = verify_return(urllib.parse.parse_qsl(query, keep_blank_values=True), keys)
    fields = {name: printable(value) for name, value in check.fields.items()}
    if check.verdict is ReturnVerdict.VALID:
        human = (
            f"valid: {fields['status']} {fields['amount']} {fields['currency']}, order "
            f"{fields['merchant_order_id']} ({fields['order']}), payment {fields['payment']}"
        )
    else:
        human = f"NOT VALID: {check.verdict} (do not treat this order as paid from this URL)"
    emit(args, human, {"verdict": str(check.verdict), "fields": dict(check.fields)})
    return 0 if check.valid else EXIT_NOT_VALID


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "checkout",
        help="create a hosted checkout (or a payment link) and print the page to send to",
        description="Create an order the customer pays on the server's page (pay_url). With "
        "--return-url the page sends the customer back there once paid, with a result signed "
        "by the server (check it with verify-return). With --link several customers may pay "
        "it (--payments-max; 1, the default, is an invoice).",
    )
    p.add_argument("--amount", required=True, help="decimal amount, e.g. 12.50")
    p.add_argument("--currency", help="ISO 4217 code (default: the configured one)")
    p.add_argument("--order-id", help="your order number (default: a new one)")
    p.add_argument("--return-url", help="https URL the customer comes back to once paid")
    p.add_argument(
        "--expires-in-s",
        type=int,
        help="seconds until it expires (checkout 30-86400, default 1800; link up to 30 days, "
        "default 7 days)",
    )
    p.add_argument("--link", action="store_true", help="a payment link instead of a checkout")
    p.add_argument("--payments-max", type=int, help="with --link: how many may pay it")
    p.set_defaults(func=cmd_checkout)
    p = sub.add_parser(
        "verify-return",
        help="check the signed result a checkout's customer came back with",
        description="Verify the paycode_* parameters of a return URL with the server's public "
        f"QR keys. Exit 0 when valid, {EXIT_NOT_VALID} when not (altered, unknown key or "
        "malformed), 1 on other errors.",
    )
    p.add_argument("url", help="the full return URL, as the shop's page received it")
    p.set_defaults(func=cmd_verify_return)
