"""paycode-wallet pending | confirm | decline | set-pin | limits (client.pending does the calls)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from paycode.appkit.console import emit, printable
from paycode.client import pending
from paycode.client.wallet import Wallet
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import WalletError

SECRET_LINE_CHARS_MAX = 1026


def secret_line(prompt: str, from_stdin: bool, code: ErrorCode, *, repeat: bool = False) -> str:
    """One line from stdin, or a hidden prompt on a terminal; never from the command line."""
    if from_stdin:
        return sys.stdin.readline(SECRET_LINE_CHARS_MAX).rstrip("\r\n")
    if not sys.stdin.isatty():
        raise WalletError(f"no terminal to ask for the {prompt}: use --stdin", code=code)
    value = getpass.getpass(f"{prompt}: ")
    if repeat and getpass.getpass(f"repeat the {prompt}: ") != value:
        raise WalletError(f"the two {prompt}s differ", code=code)
    return value


def _line(item: dict[str, Any]) -> str:
    return printable(
        f"{item.get('payment_id')}  {item.get('amount')} {item.get('currency')}  "
        f"{item.get('merchant', item.get('merchant_id'))}  confirm by {item.get('confirm_by')}"
    )


def cmd_pending(args: argparse.Namespace) -> int:
    items = pending.pending(Wallet.open(args.home))
    human = "\n".join(_line(item) for item in items) or "nothing waiting for your confirmation"
    emit(args, human, {"items": items})
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    payment_id = args.payment_id or pending.only_pending(wallet)
    pending.check_payment_id(payment_id)
    pin = pending.check_pin(secret_line("payment PIN", args.stdin, ErrorCode.PIN_REQUIRED))
    payment = pending.confirm(wallet, payment_id, pin)
    human = f"paid {payment.get('amount')} {payment.get('currency')} ({payment.get('payment_id')})"
    emit(args, human, {"payment": payment})
    return 0


def cmd_decline(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    payment_id = args.payment_id or pending.only_pending(wallet)
    payment = pending.decline(wallet, payment_id)
    human = f"declined {payment.get('amount')} {payment.get('currency')}; nothing was paid"
    emit(args, human, {"payment": payment})
    return 0


def cmd_set_pin(args: argparse.Namespace) -> int:
    """The account password proves the owner; the PIN then confirms large payments."""
    password = secret_line("account password", args.stdin, ErrorCode.PASSWORD_REQUIRED)
    if not password:
        raise WalletError("the password is empty", code=ErrorCode.PASSWORD_REQUIRED)
    pin = pending.check_pin(
        secret_line("new payment PIN", args.stdin, ErrorCode.PIN_REQUIRED, repeat=True)
    )
    pending.set_pin(Wallet.open(args.home), password=password, pin=pin)
    emit(args, "payment PIN set", {"pin_set": True})
    return 0


def cmd_limits(args: argparse.Namespace) -> int:
    accounts = pending.limits(Wallet.open(args.home))
    lines = [
        f"{item.get('currency')}: without PIN up to {item.get('payment_max')} a payment, "
        f"{item.get('daily_count_max')} payments and {item.get('daily_max')} a day "
        f"(today: {item.get('today_count')} payments, {item.get('today')})"
        for item in accounts
    ]
    emit(args, "\n".join(lines) or "no accounts", {"accounts": accounts})
    return 0


def add_pending_commands(sub: Any) -> None:
    p = sub.add_parser(
        "pending", help="payments waiting for your PIN (above your password-free limit; online)"
    )
    p.set_defaults(func=cmd_pending)
    p = sub.add_parser(
        "confirm",
        help="confirm a waiting payment with your PIN: the money moves now (online)",
        description="Confirm a payment a shop charged above your password-free limit. "
        "Without PAYMENT_ID, the one waiting payment.",
    )
    p.add_argument("payment_id", nargs="?", help="from 'paycode-wallet pending'")
    p.add_argument("--stdin", action="store_true", help="read the PIN from stdin")
    p.set_defaults(func=cmd_confirm)
    p = sub.add_parser("decline", help="refuse a waiting payment; nothing is paid (online)")
    p.add_argument("payment_id", nargs="?", help="from 'paycode-wallet pending'")
    p.set_defaults(func=cmd_decline)
    p = sub.add_parser(
        "set-pin",
        help="set or change the 6-digit payment PIN (needs your account password; online)",
    )
    p.add_argument(
        "--stdin", action="store_true", help="read the password, then the PIN, one line each"
    )
    p.set_defaults(func=cmd_set_pin)
    p = sub.add_parser("limits", help="your password-free limits and today's use (online)")
    p.set_defaults(func=cmd_limits)
