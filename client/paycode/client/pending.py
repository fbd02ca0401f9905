"""Payments waiting for this customer's PIN (above the password-free limits), and the PIN.

A shop's POS charged a code for more than the customer lets go without confirmation; the
payment waits on the server for a short while. The wallet lists it, then confirms it with the
PIN (the money moves then) or declines it (nothing moves). All calls are online and signed by
the wallet's device (client.online.signed_call); the PIN travels only in the confirm request.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from paycode.client.online import signed_call
from paycode.client.wallet import Wallet
from paycode.shared.codes import ErrorCode
from paycode.shared.credentials import pin_problem
from paycode.shared.errors import WalletError

PIN_DIGITS = 6
PAYMENT_ID = re.compile(r"pay_[0-9a-f]{16}")


def check_pin(pin: str) -> str:
    if len(pin) != PIN_DIGITS or not pin.isascii() or not pin.isdigit():
        raise WalletError(f"a PIN is {PIN_DIGITS} digits", code=ErrorCode.PIN_INVALID)
    return pin


def check_payment_id(payment_id: str) -> str:
    if PAYMENT_ID.fullmatch(payment_id) is None:
        raise WalletError(
            f"{payment_id[:40]!r} is not a payment id (pay_ and 16 hex digits)",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return payment_id


def pending(wallet: Wallet) -> list[dict[str, Any]]:
    """Payments this customer may still confirm, newest first."""
    items = signed_call(wallet, "GET", "/v1/wallet/pending").body.get("items", [])
    return [item for item in items if isinstance(item, dict)]


def only_pending(wallet: Wallet) -> str:
    """The id of the one waiting payment; an error naming how many there are otherwise."""
    items = pending(wallet)
    if len(items) != 1:
        detail = "no payment is" if not items else f"{len(items)} payments are"
        raise WalletError(
            f"{detail} waiting: name one (paycode-wallet pending lists them)",
            code=ErrorCode.PAYMENT_NOT_PENDING if not items else ErrorCode.INVALID_ARGUMENT,
        )
    return str(items[0].get("payment_id", ""))


def confirm(wallet: Wallet, payment_id: str, pin: str) -> dict[str, Any]:
    path = f"/v1/wallet/payments/{check_payment_id(payment_id)}/confirm"
    body = {"pin": check_pin(pin)}
    return signed_call(wallet, "POST", path, body, idempotency_key=str(uuid.uuid4())).body


def decline(wallet: Wallet, payment_id: str) -> dict[str, Any]:
    path = f"/v1/wallet/payments/{check_payment_id(payment_id)}/decline"
    return signed_call(wallet, "POST", path, {}, idempotency_key=str(uuid.uuid4())).body


def set_pin(wallet: Wallet, *, password: str, pin: str) -> None:
    problem = pin_problem(pin)
    if problem is not None:
        raise WalletError(problem, code=ErrorCode.PIN_INVALID)
    body = {"password": password, "pin": check_pin(pin)}
    signed_call(wallet, "POST", "/v1/wallet/pin", body, idempotency_key=str(uuid.uuid4()))


def limits(wallet: Wallet) -> list[dict[str, Any]]:
    accounts = signed_call(wallet, "GET", "/v1/wallet/limits").body.get("accounts", [])
    return [item for item in accounts if isinstance(item, dict)]
