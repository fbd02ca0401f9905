"""paycode-wallet mandates bind | list | revoke: let a partner merchant redeem your loyalty
points under caps you set, see what it used, take it back (client.mandates does the calls;
docs/api.md "Points mandates")."""

from __future__ import annotations

import argparse
from typing import Any

from paycode.appkit.console import add_json_flag, emit, printable
from paycode.client import mandates
from paycode.client.wallet import Wallet
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import WalletError
from paycode.shared.points import POINTS_MAX


def _points(value: int, flag: str) -> int:
    if not 1 <= value <= POINTS_MAX:
        raise WalletError(f"{flag} must be 1-{POINTS_MAX} points", code=ErrorCode.USAGE)
    return value


def mandate_line(item: dict[str, Any]) -> str:
    """One mandate as a line of the table `mandates list` prints (server text made printable)."""
    return printable(
        f"{item.get('mandate_id')}  {item.get('status')}  {item.get('merchant')} "
        f"({item.get('merchant_id')})  {item.get('rate_points')} points = "
        f"{item.get('rate_minor')} minor {item.get('currency')}  per payment "
        f"{item.get('cap_per_payment_points')}, per day {item.get('cap_per_day_points')} "
        f"(used today {item.get('used_today_points')})"
    )


def cmd_bind(args: argparse.Namespace) -> int:
    mandate = mandates.bind(
        Wallet.open(args.home),
        merchant_id=args.merchant,
        currency=args.currency,
        rate=mandates.parse_rate(args.rate),
        per_payment_points=_points(args.per_payment, "--per-payment"),
        per_day_points=_points(args.per_day, "--per-day"),
        expires_in_days=args.expires_in_days,
        reference=args.reference,
    )
    mandate.pop("server_time", None)
    emit(args, f"bound: {mandate_line(mandate)}", {"mandate": mandate})
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    items = mandates.mandates(Wallet.open(args.home))
    human = "\n".join(mandate_line(item) for item in items) or "no mandates"
    emit(args, human, {"items": items})
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    mandate = mandates.revoke(Wallet.open(args.home), args.mandate_id)
    mandate.pop("server_time", None)
    emit(args, f"revoked: {mandate_line(mandate)}", {"mandate": mandate})
    return 0


def _no_action(_args: argparse.Namespace) -> int:
    raise WalletError(
        "name an action: 'mandates bind', 'list' or 'revoke' (--help says more)",
        code=ErrorCode.USAGE,
    )


def add_mandate_commands(sub: Any) -> None:
    group = sub.add_parser(
        "mandates",
        help="let partner merchants redeem your points: bind, list, revoke (online)",
        description="A mandate lets one merchant deduct your loyalty points at an agreed rate, "
        "within a cap per payment and per day, until it expires or you revoke it.",
    )
    group.set_defaults(func=_no_action)
    commands = group.add_subparsers(metavar="ACTION")
    p = commands.add_parser("bind", help="sign a mandate for a merchant")
    p.add_argument("--merchant", required=True, help="the merchant's id (mch_...)")
    p.add_argument("--rate", required=True, help="POINTS:MINOR, e.g. 100:100 (100 points = 1.00)")
    p.add_argument("--per-payment", type=int, required=True, help="most points in one payment")
    p.add_argument("--per-day", type=int, required=True, help="most points in one day")
    p.add_argument(
        "--expires-in-days",
        type=int,
        default=90,
        help=f"1-{mandates.EXPIRES_IN_DAYS_MAX} (default %(default)s)",
    )
    p.add_argument("--currency", default="CNY", help="the merchant's currency (default CNY)")
    p.add_argument("--reference", default="", help="your customer number at the merchant")
    p.set_defaults(func=cmd_bind)
    p = commands.add_parser("list", help="your mandates, revoked and expired ones too")
    p.set_defaults(func=cmd_list)
    p = commands.add_parser("revoke", help="revoke a mandate at once")
    p.add_argument("mandate_id", metavar="MANDATE_ID", help="as 'mandates list' shows it (mdt_...)")
    p.set_defaults(func=cmd_revoke)
    for action in commands.choices.values():
        add_json_flag(action)
