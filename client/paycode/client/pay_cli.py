"""paycode-wallet pay: read a merchant's QR, say who is really paid, confirm, pay online.

The payee is verified offline against the server's QR keys (client.merchant_qr) before the
question is asked; an altered Paycode QR is refused without a call. Above the password-free
limits the server answers pin_required and the PIN is asked for (or read with --pin-stdin).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from paycode.appkit.console import confirm_or_stop, emit, printable
from paycode.client import merchant_qr, online
from paycode.client.devices_cli import advice_notice
from paycode.client.pending_cli import secret_line
from paycode.client.wallet import Wallet
from paycode.shared.codes import ErrorCode
from paycode.shared.emv.qr_signature import Verdict
from paycode.shared.errors import ServerRejected, WalletError


def _payload(args: argparse.Namespace) -> str:
    if args.qr_text is not None:
        return str(args.qr_text)
    # Deferred: OpenCV and zxing load in ~0.2 s, which `code` (the hot path) should not pay.
    from paycode.appkit.decoding import decode_image_file  # noqa: PLC0415

    found = [d for d in decode_image_file(args.qr_image) if d.format == "qr"]
    if not found:
        raise WalletError(f"no QR code found in {args.qr_image}", code=ErrorCode.QR_NOT_FOUND)
    return found[0].text


def _checked(wallet: Wallet, payload: str) -> merchant_qr.CheckedQr:
    """Verified with the keys held; a key the wallet lacks is fetched once (a rotation)."""
    checked = merchant_qr.check(wallet, payload)
    if checked.verdict is Verdict.UNKNOWN_KEY and wallet.server_url is not None:
        online.refresh_qr_keys(wallet)
        checked = merchant_qr.check(wallet, payload)
    return checked


def _amount(checked: merchant_qr.CheckedQr, asked: str | None) -> str:
    """The amount to confirm: the QR's own (an order's, a fixed poster's) or the typed one."""
    fixed = checked.code.amount
    if fixed is not None:
        if asked is not None and asked != fixed:
            raise WalletError(f"this QR fixes the amount at {fixed}", code=ErrorCode.AMOUNT_INVALID)
        return fixed
    if asked is None:
        raise WalletError("this QR has no amount: pass --amount", code=ErrorCode.AMOUNT_INVALID)
    return asked


def cmd_pay(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    payload = _payload(args)
    checked = _checked(wallet, payload)
    amount = _amount(checked, args.amount)
    if checked.verdict is not Verdict.VERIFIED:
        print(f"warning: {merchant_qr.WARNINGS[checked.verdict]}", file=sys.stderr)
    question = f"pay {amount} {checked.code.currency} to {checked.payee}"
    if checked.code.reference:
        question += f" (order {checked.code.reference})"
    confirm_or_stop(args, question)
    body = _pay_with_pin_if_asked(args, wallet, payload)
    paid = f"{body.get('amount')} {body.get('currency')}"
    human = printable(f"paid {paid} to {checked.code.display_name}: {body.get('status')}")
    notice = advice_notice(args, online.reenroll_of(body))
    payment = {k: v for k, v in body.items() if k != "reenroll"}
    emit(args, human, {"payment": payment, "payee": merchant_qr.checked_json(checked), **notice})
    return 0


def _pay_with_pin_if_asked(args: argparse.Namespace, wallet: Wallet, payload: str) -> Any:
    amount = args.amount
    try:
        return online.pay(wallet, qr_payload=payload, amount=amount)
    except ServerRejected as error:
        if error.code != ErrorCode.PIN_REQUIRED:
            raise
    pin = secret_line("payment PIN", args.pin_stdin, ErrorCode.PIN_REQUIRED)
    return online.pay(wallet, qr_payload=payload, amount=amount, pin=pin)


def add_pay_command(sub: Any) -> None:
    p = sub.add_parser(
        "pay",
        help="pay a merchant's QR (poster or a till's order QR; online)",
        description=(
            "Read a merchant's QR, show who is paid (verified against your server's keys, "
            "offline) and how much, confirm, and pay. Above your password-free limits the "
            "PIN is asked for. An altered QR is refused."
        ),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--qr-image", type=Path, help="photo, screenshot or PNG of the QR")
    source.add_argument("--qr-text", help="the QR's text (EMV payload), e.g. pasted")
    p.add_argument("--amount", help="amount as a decimal string, e.g. 12.50 (if the QR has none)")
    p.add_argument("--yes", action="store_true", help="pay without asking to confirm")
    p.add_argument(
        "--pin-stdin",
        action="store_true",
        help="read the payment PIN, if the server asks for it, from standard input",
    )
    p.set_defaults(func=cmd_pay)
