"""paycode-pos: the cashier's till (docs/pos.md).

paycode-pos configure --server URL --key-id KEY --secret-stdin [--currency CNY] [--offline]
paycode-pos charge --amount 12.50 [--source camera:0|video:PATH|image:PATH|stdin]
paycode-pos charge --amount 12.50 --present [--present-wait-s 120]
paycode-pos refund PAYMENT_ID [--amount 5.00]
paycode-pos query (PAYMENT_ID | --order-id ORDER)
paycode-pos sync [--force]
paycode-pos offline status
paycode-pos inspect (--image FILE | --text STRING)
paycode-pos checkout --amount 12.50 [--return-url URL] [--link [--payments-max N]]
paycode-pos verify-return URL
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paycode.appkit.console import add_json_flag, emit, printable, run
from paycode.merchant_pos import (
    checkout_commands,
    offline_commands,
    points_commands,
    settings,
    setup_commands,
)
from paycode.merchant_pos.offline_charge import OfflineCharge
from paycode.merchant_pos.present import PRESENT_WAIT_S, PRESENT_WAIT_S_MAX
from paycode.merchant_pos.sale_run import (
    EXIT_NOT_PAID,
    EXIT_OUTCOME_UNKNOWN,
    FromStdin,
    exit_status,
    run_sale,
)
from paycode.merchant_pos.stopping import STOP_WAIT_S, STOP_WAIT_S_MAX, SaleStops
from paycode.merchant_pos.till import (
    CONFIRM_WAIT_S,
    CONFIRM_WAIT_S_MAX,
    ConfirmWait,
    Sale,
    SaleOutcome,
    new_order_id,
)
from paycode.merchant_pos.typed_input import charge_from_typed
from paycode.shared.emv.collection import read_collection
from paycode.shared.errors import AmountInvalid, CurrencyUnknown
from paycode.shared.money import currency as currency_named
from paycode.shared.money import parse_amount

PROG = "paycode-pos"
SCAN_TIMEOUT_S_DEFAULT = 60.0
SCAN_TIMEOUT_S_MAX = 3600.0
"""An hour: the most frames a source yields (frames.FRAMES_MAX at 30 fps)."""
HOLD_S_MAX = 60.0
SOURCE_DEFAULT = "camera:0"
HOLD_S_DEFAULT = 3.0


def _checked_amount(text: str, currency_code: str) -> str:
    """Refuse a bad amount or currency before scanning: the customer's code must not be
    burned for it. The message names the option that is wrong."""
    try:
        currency_named(currency_code)
    except CurrencyUnknown as error:
        raise settings.SettingsInvalid(f"--currency: {error.message}") from error
    try:
        parse_amount(text, currency_code)
    except AmountInvalid as error:
        raise settings.SettingsInvalid(f"--amount: {error.message}") from error
    return text


def _check_seconds(option: str, value_s: float, most_s: float, *, zero: bool = False) -> None:
    """A duration option within (0, most_s] ([0, most_s] with `zero`); NaN is refused too."""
    if not ((value_s >= 0 if zero else value_s > 0) and value_s <= most_s):
        least = "at least 0" if zero else "more than 0"
        raise settings.SettingsInvalid(f"{option} must be {least} and at most {most_s:g}")


def cmd_charge(args: argparse.Namespace) -> int:
    _check_seconds("--confirm-wait-s", args.confirm_wait_s, CONFIRM_WAIT_S_MAX)
    _check_seconds("--present-wait-s", args.present_wait_s, PRESENT_WAIT_S_MAX)
    _check_seconds("--timeout-s", args.timeout_s, SCAN_TIMEOUT_S_MAX)
    _check_seconds("--hold-s", args.hold_s, HOLD_S_MAX, zero=True)
    _check_seconds("--stop-wait-s", args.stop_wait_s, STOP_WAIT_S_MAX)
    if args.present and args.source is not None:
        raise settings.SettingsInvalid("--present shows a code, --source scans one: pick one")
    configured = settings.load(args.home)
    offline_commands.report_interrupted(args.home)
    currency = args.currency or configured.currency
    offline = OfflineCharge(args.home)
    order_id = args.order_id or new_order_id()
    sale = Sale(_checked_amount(args.amount, currency), currency, order_id, offline=offline)
    client = configured.client()
    try:
        with SaleStops(args.stop_wait_s) as stops:
            outcome = run_sale(client, sale, args, stops, _typed_charge(args.timeout_s))
            stops.settled()
            _report(args, outcome)
    finally:
        offline.close()  # after the outcome is shown: the sale no longer decides (4.3)
    if outcome.code == "paid":
        offline_commands.after_online_sale(client, args.home)
    return exit_status(outcome)


def _typed_charge(timeout_s: float) -> FromStdin:
    """The stdin source: a code typed or sent by a barcode gun (merchant_pos.typed_input)."""

    def charge(client: Any, sale: Sale, wait: ConfirmWait, stops: SaleStops) -> SaleOutcome:
        return charge_from_typed(client, sale, wait, timeout_s, sys.stdin, stops=stops)

    return charge


def _report(args: argparse.Namespace, outcome: SaleOutcome) -> None:
    human = f"{outcome.headline}\n{printable(outcome.message)}\norder {outcome.merchant_order_id}"
    if outcome.payment:
        human += f", payment {printable(outcome.payment.get('payment_id'))}"
    emit(args, human, outcome.as_json())


def cmd_poster(args: argparse.Namespace) -> int:
    # Deferred: the poster pulls in PIL drawing and the QR encoder; other commands need neither.
    from paycode.merchant_pos import poster  # noqa: PLC0415

    client = settings.load(args.home).client()
    if args.order is not None:
        if args.amount is None:
            raise poster.PosterInvalid("--order needs --amount (the order's amount)")
        order = client.create_order(
            args.amount,
            client.merchant()["currency"],
            merchant_order_id=args.order,
            expires_in_s=args.expires_in_s,
        )
        payload = str(order["qr_payload"])
    else:
        payload = client.collection_code(amount=args.amount, this_terminal=not args.any_terminal)
    code = read_collection(payload)
    path = poster.save_poster(poster.render_poster(code, payload), args.out)
    what = f"{code.amount} {code.currency}" if code.amount else "any amount"
    name = printable(code.display_name)
    if args.order is not None:
        what += f", order {args.order}, pays once"
    emit(
        args,
        f"poster for {name} ({what}) written to {path}",
        {
            "path": str(path),
            "merchant_id": code.merchant_id,
            "amount": code.amount,
            "order": args.order,
            "terminal_id": code.terminal_id,
            "qr_payload": payload,
        },
    )
    return 0


def cmd_refund(args: argparse.Namespace) -> int:
    client = settings.load(args.home).client()
    if args.points is None:
        reply = client.refund(args.payment_id, amount=args.amount)
    else:  # a points redemption's points leg, and its money leg only when --amount says so
        reply = client.refund_points(args.payment_id, points=args.points, amount=args.amount)
    said = {key: printable(str(reply.get(key, ""))) for key in ("amount", "currency", "refund_id")}
    parts = [f"{said['amount']} {said['currency']}"] if "amount" in reply else []
    if "points" in reply:  # a redemption's refund also (or only) gives points back
        parts.append(f"{printable(str(reply['points']))} points")
    refund_ids = " ".join(
        printable(str(reply[k])) for k in ("refund_id", "points_refund_id") if k in reply
    )
    human = f"refunded {' and '.join(parts)} of {printable(args.payment_id)} (refund {refund_ids})"
    emit(args, human, {"refund": reply})
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    client = settings.load(args.home).client()
    payment_id = args.payment_id or args.payment_id_option
    if not payment_id and offline_commands.query_offline(args, args.order_id):
        return 0
    if payment_id:
        payments = [client.payment(payment_id)]
    else:
        payments = client.payments_by_order(args.order_id)
    lines = [_payment_line(payment) for payment in payments]
    emit(args, "\n".join(lines) or "no payment with that order id", {"payments": payments})
    return 0


def _payment_line(payment: dict[str, Any]) -> str:
    """One payment as `query` lists it; every field is the server's text, so escaped."""
    p = {key: printable(value) for key, value in payment.items() if value is not None}
    failure = f"  ({p['failure_code']})" if p.get("failure_code") else ""
    return (
        f"{p.get('payment_id')}  {p.get('status', ''):<9} {p.get('amount')} {p.get('currency')}  "
        f"refunded {p.get('refunded')}  order {p.get('merchant_order_id')}{failure}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Merchant point of sale for Paycode: scan a customer's code and charge it.",
        epilog=f"The till's settings live in --home (default ${settings.HOME_ENV} or "
        "~/.paycode/pos). Errors print `error [code]: message`; --json prints one JSON object.",
    )
    add_json_flag(parser)
    parser.add_argument("--home", type=Path, default=settings.default_home(), help="POS home")
    sub = parser.add_subparsers(metavar="COMMAND")
    setup_commands.add_configure(sub)
    _add_charge(sub)
    _add_poster(sub)
    p = sub.add_parser("refund", help="refund a payment, wholly or in part")
    p.add_argument("payment_id")
    p.add_argument("--amount", help="decimal amount to refund (default: all that is left)")
    p.add_argument(
        "--points",
        type=int,
        help="a points redemption: whole points to give back (the money leg only with --amount)",
    )
    p.set_defaults(func=cmd_refund)
    p = sub.add_parser("query", help="show a payment by id, or by the merchant order id")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("payment_id", nargs="?", help="a payment id (pay_...)")
    target.add_argument("--payment", dest="payment_id_option", metavar="ID", help="the same")
    target.add_argument("--order", "--order-id", dest="order_id", metavar="ID", help="order id")
    p.set_defaults(func=cmd_query)
    setup_commands.add_inspect(sub)
    offline_commands.add_commands(sub)
    checkout_commands.add_commands(sub)
    points_commands.add_commands(sub)
    for action in sub.choices.values():
        add_json_flag(action)
    return parser


def _add_poster(sub: Any) -> None:
    p = sub.add_parser(
        "poster",
        help="print an A6 collection QR poster customers scan to pay",
        description="Render the merchant's collection QR, signed by the server, as a printable "
        "A6 poster (PNG or PDF). Without --amount the customer enters the amount; with it the "
        "amount is fixed; with --order too, the poster is one server order that pays once.",
    )
    p.add_argument("--out", type=Path, required=True, help="poster.png or poster.pdf")
    p.add_argument("--amount", help="fix the amount (paid any number of times, unless --order)")
    p.add_argument(
        "--order",
        metavar="ORDER_ID",
        help="make the poster one order of --amount, paid once (a server order; it expires)",
    )
    p.add_argument(
        "--expires-in-s",
        type=int,
        default=3600,
        help="with --order: seconds until the order expires (30-3600, default 3600)",
    )
    p.add_argument(
        "--any-terminal", action="store_true", help="leave this terminal's id off the QR"
    )
    p.set_defaults(func=cmd_poster)


def _add_charge(sub: Any) -> None:
    p = sub.add_parser(
        "charge",
        help="scan a payment code and charge it, or --present a code the customer scans",
        description="Scan the customer's payment code and charge it once; or, with --present, "
        "show the customer a QR code for this sale's order (in the window, or drawn on stderr "
        "without a display) for them to scan and pay with their wallet. Exit 0 when paid, "
        f"{EXIT_NOT_PAID} when not paid (the reason is printed), {EXIT_OUTCOME_UNKNOWN} when the "
        "outcome is unknown (query the order id printed), 1 on other errors.",
    )
    p.add_argument("--amount", required=True, help="decimal amount, e.g. 12.50")
    p.add_argument("--currency", help="ISO 4217 code (default: the configured one)")
    p.add_argument(
        "--source",
        help="camera:N, video:PATH, image:PATH, or stdin (a barcode gun, or the code typed "
        "as the wallet shows it); default camera:0",
    )
    p.add_argument(
        "--present",
        action="store_true",
        help="customer scans the till: create an order on the server and show its QR code "
        "until it is paid; PAID only for the payment of this amount",
    )
    p.add_argument(
        "--present-wait-s",
        type=float,
        default=PRESENT_WAIT_S,
        help="with --present: cancel the order when it is not paid after this many seconds "
        f"(default {PRESENT_WAIT_S:g}, at most {PRESENT_WAIT_S_MAX:g}); Ctrl-C (or Esc in the "
        "window) cancels it at once. A payment that beat the cancel is still PAID",
    )
    p.add_argument("--order-id", help="your order number (default: a new one per sale)")
    p.add_argument(
        "--timeout-s",
        type=float,
        default=SCAN_TIMEOUT_S_DEFAULT,
        help="stop scanning (or waiting for a typed code) after this many seconds "
        f"(default {SCAN_TIMEOUT_S_DEFAULT:g})",
    )
    p.add_argument(
        "--confirm-wait-s",
        type=float,
        default=CONFIRM_WAIT_S,
        help="above the customer's password-free limit the payment waits for their PIN; "
        f"cancel it after this many seconds (default {CONFIRM_WAIT_S:g}, at most "
        f"{CONFIRM_WAIT_S_MAX:g})",
    )
    p.add_argument(
        "--stop-wait-s",
        type=float,
        default=STOP_WAIT_S,
        help="after Ctrl-C (or SIGTERM) while a charge is on its way, wait at most this long "
        f"for its answer (default {STOP_WAIT_S:g}, at most {STOP_WAIT_S_MAX:g}); Ctrl-C again "
        "stops waiting and prints the order id to query",
    )
    p.add_argument("--headless", action="store_true", help="no window, even with a display")
    p.add_argument(
        "--windowed",
        action="store_true",
        help="a movable 1280x720 window instead of the full screen (for development)",
    )
    p.add_argument(
        "--hold-s",
        type=float,
        default=HOLD_S_DEFAULT,
        help=f"seconds the result stays on screen (default {HOLD_S_DEFAULT:g})",
    )
    # Tests: grab the screen (the result; with --present, the order's QR as it is first shown).
    p.add_argument("--screenshot", type=Path, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_charge)


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
