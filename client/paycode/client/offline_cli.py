"""paycode-wallet offline take | status | return, and what `code --offline` and `balance` show
of the allowance (client.offline keeps it, client.offline_calls talks to the server)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from paycode.appkit.console import add_json_flag, emit, printable
from paycode.client import offline, offline_calls, online
from paycode.client.devices_cli import PROG
from paycode.client.offline_state import Allowance, HeldCertificate, money_text
from paycode.client.pending import check_pin
from paycode.client.pending_cli import secret_line
from paycode.client.wallet import Wallet
from paycode.shared.binding import MerchantBinding
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import WalletError
from paycode.shared.money import (
    MAX_AMOUNT_MINOR,
    SUPPORTED_CURRENCIES,
    Money,
    format_amount,
    parse_amount,
)

SERVER_TEXT_CHARS_MAX = 64


def when(unix_s: float) -> str:
    """A time as a person reads it on this phone: local time, day and minute."""
    return time.strftime("%d %b %H:%M", time.localtime(unix_s))


def _amount(amount_minor: int, currency: str) -> str:
    return format_amount(Money(amount_minor, currency))


def _state(allowance: Allowance, device_now_s: float) -> str:
    if allowance.returning:
        return "handed back"
    if any(held.usable_at(device_now_s) for held in allowance.certificates):
        return "live"
    return "expired"


def _certificate_json(held: HeldCertificate, currency: str) -> dict[str, Any]:
    fields = held.fields
    return {
        "codes_used": held.next_counter,
        "codes_max": fields.count_max,
        "reserved": _amount(held.reserved_minor, currency),
        "total_cap": _amount(fields.total_cap_minor, currency),
        "per_payment_cap": _amount(fields.per_payment_cap_minor, currency),
        "left": _amount(held.left_minor if held.counters_left else 0, currency),
    }


def _allowance_json(allowance: Allowance, device_now_s: float) -> dict[str, Any]:
    currency = allowance.currency
    return {
        "allowance_id": allowance.allowance_id,
        "state": _state(allowance, device_now_s),
        "amount": _amount(allowance.amount_minor, currency),
        "currency": currency,
        "left": _amount(allowance.left_minor(device_now_s), currency),
        "expires_at_s": allowance.expires_at_s,
        "returns_at_s": allowance.returns_at_s,
        "certificates": [_certificate_json(held, currency) for held in allowance.certificates],
    }


def _allowance_lines(allowance: Allowance, device_now_s: float) -> list[str]:
    currency, state = allowance.currency, _state(allowance, device_now_s)
    head = (
        f"{allowance.allowance_id}: {money_text(allowance.amount_minor, currency)}, {state}; "
        f"{_amount(allowance.left_minor(device_now_s), currency)} left until "
        f"{when(allowance.expires_at_s)}; unused money returns by {when(allowance.returns_at_s)}"
    )
    lines = [head]
    for number, held in enumerate(allowance.certificates, start=1):
        item = _certificate_json(held, currency)
        lines.append(
            f"  certificate {number}: {item['codes_used']} of {item['codes_max']} codes used, "
            f"{item['reserved']} of {item['total_cap']} reserved, {item['left']} left"
        )
    return lines


def balance_lines(wallet: Wallet, local_now_s: float) -> tuple[list[str], list[dict[str, Any]]]:
    """What `balance` adds from the keystore (no call): each live allowance, and until when."""
    now = offline.device_now_s(wallet, local_now_s)
    live = offline.live_allowances(wallet, local_now_s=local_now_s)
    lines = [
        f"offline: {money_text(a.left_minor(now), a.currency)} until {when(a.expires_at_s)}"
        for a in live
    ]
    data = [
        {
            "allowance_id": a.allowance_id,
            "left": _amount(a.left_minor(now), a.currency),
            "currency": a.currency,
            "expires_at_s": a.expires_at_s,
        }
        for a in live
    ]
    return lines, data


def _currency(args: argparse.Namespace, wallet: Wallet) -> str:
    """--currency, else the one currency the wallet's account holds (asked online)."""
    if args.currency is not None:
        return str(args.currency)
    accounts = online.balance(wallet).get("accounts", [])
    currencies = sorted({str(item.get("currency")) for item in accounts if isinstance(item, dict)})
    if len(currencies) != 1:
        message = "say which account sets the money aside: pass --currency"
        raise WalletError(message, code=ErrorCode.CURRENCY_REQUIRED)
    return currencies[0]


def cmd_take(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    offline.forget_expired(wallet, local_now_s=time.time())
    currency = _currency(args, wallet)
    amount_minor = parse_amount(args.amount, currency).amount_minor
    pin = check_pin(secret_line("payment PIN", args.pin_stdin, ErrorCode.PIN_REQUIRED))
    taken = offline_calls.take(wallet, amount_minor=amount_minor, currency=currency, pin=pin)
    allowance = taken.allowance
    human = (
        f"offline allowance {allowance.allowance_id}: {money_text(amount_minor, currency)} "
        f"until {when(allowance.expires_at_s)} (4 certificates); pay with "
        f"'{PROG} code --offline'"
    )
    answer: dict[str, Any] = {
        "allowance": _allowance_json(allowance, offline.device_now_s(wallet, time.time()))
    }
    if taken.balance_minor is not None:
        human += f"\nbalance: {money_text(taken.balance_minor, currency)}"
        answer["balance"] = _amount(taken.balance_minor, currency)
    emit(args, human, answer)
    return 0


ALPHA_CODES = frozenset(known.alpha for known in SUPPORTED_CURRENCIES)


def _server_line(item: dict[str, Any]) -> str:
    """One allowance as the server books it; fields it lacks or garbles show as '?'."""
    currency = item.get("currency")

    def amount(name: str) -> str:
        value = item.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) > MAX_AMOUNT_MINOR:
            return "?"
        if not isinstance(currency, str) or currency not in ALPHA_CODES:
            return "?"
        return f"{_amount(value, currency)} {currency}"

    text = (
        f"{item.get('allowance_id')} {item.get('state')}: {amount('amount_minor')}, "
        f"paid to shops {amount('settled_minor')}, returned {amount('returned_minor')}, "
        f"held {amount('held_minor')}"
    )
    return printable(f"server: {text[: SERVER_TEXT_CHARS_MAX * 3]}")


def _pending_json(amount_minor: int, currency: str) -> dict[str, str]:
    return {"amount": _amount(amount_minor, currency), "currency": currency}


def cmd_status(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    local_now_s = time.time()
    offline.forget_expired(wallet, local_now_s=local_now_s)
    now = offline.device_now_s(wallet, local_now_s)
    held = offline.allowances(wallet)
    lines = [line for allowance in held for line in _allowance_lines(allowance, now)]
    waiting = offline.pending_take(wallet)
    if waiting is not None:
        asked = money_text(waiting.amount_minor, waiting.currency)
        lines.append(
            f"waiting: the request for {asked} was never answered: "
            f"run '{PROG} offline take --amount {_amount(waiting.amount_minor, waiting.currency)}'"
        )
    returning = [pending.allowance_id for pending in offline.pending_returns(wallet)]
    lines += [
        f"waiting: the hand-back of {name}: run '{PROG} offline return'" for name in returning
    ]
    answer: dict[str, Any] = {
        "allowances": [_allowance_json(allowance, now) for allowance in held],
        "pending_take": waiting and _pending_json(waiting.amount_minor, waiting.currency),
        "pending_returns": returning,
    }
    if args.online:
        listed = offline_calls.list_allowances(wallet)
        lines += [_server_line(item) for item in listed] or ["server: no allowances"]
        answer["server"] = listed
    emit(args, "\n".join(lines) or "no offline allowance", answer)
    return 0


def cmd_return(args: argparse.Namespace) -> int:
    wallet = Wallet.open(args.home)
    currencies = {a.allowance_id: a.currency for a in offline.allowances(wallet)}
    done = offline_calls.hand_back(wallet, args.allowance_id)
    lines, items = [], []
    for returned in done:
        currency = currencies.get(returned.allowance_id, "")
        back, held = (
            (_amount(returned.returned_minor, currency), _amount(returned.held_minor, currency))
            if currency
            else (str(returned.returned_minor), str(returned.held_minor))
        )
        lines.append(
            f"{returned.allowance_id}: {back} {currency} back on your balance now; {held} held "
            "for codes already made until their tills' deadline".replace("  ", " ")
        )
        items.append(
            {
                "allowance_id": returned.allowance_id,
                "state": returned.state,
                "currency": currency or None,
                "returned_minor": returned.returned_minor,
                "held_minor": returned.held_minor,
                "balance_minor": returned.balance_minor,
            }
        )
    emit(args, "\n".join(lines), {"returned": items})
    return 0


def _no_action(args: argparse.Namespace) -> int:
    raise WalletError(
        f"name an action: '{PROG} offline take', 'status' or 'return' (--help says more)",
        code=ErrorCode.USAGE,
    )


def offline_code(
    wallet: Wallet, amount: str | None, binding: MerchantBinding | None, local_now_s: float
) -> offline.OfflineCodeMade:
    """`code --offline`: the amount typed is read in the allowance's currency."""
    amount_minor = None
    if amount is not None:
        live = offline.live_allowances(wallet, local_now_s=local_now_s)
        if live:
            amount_minor = parse_amount(amount, live[0].currency).amount_minor
    return offline.next_offline_code(
        wallet, local_now_s=local_now_s, amount_minor=amount_minor, binding=binding
    )


def offline_code_line(made: offline.OfflineCodeMade) -> str:
    limit = money_text(made.amount_limit_minor, made.currency)
    return f"offline code: pays at most {limit} (certificate {made.certificate_index + 1} of 4)"


def offline_code_json(made: offline.OfflineCodeMade) -> dict[str, Any]:
    return {
        "allowance_id": made.allowance_id,
        "amount_limit": _amount(made.amount_limit_minor, made.currency),
        "currency": made.currency,
        "certificate": made.certificate_index + 1,
        "counter": made.code.counter,
    }


def add_offline_commands(sub: Any) -> None:
    group = sub.add_parser(
        "offline",
        help="money set aside to pay at tills that are offline: take, status, return",
        description=(
            "An offline allowance sets money aside from your balance (online, with your PIN) "
            f"so that '{PROG} code --offline' can pay at a till that cannot reach the server. "
            "What you do not spend returns by itself after it expires, or at once with "
            f"'{PROG} offline return'."
        ),
    )
    group.set_defaults(func=_no_action)
    commands = group.add_subparsers(metavar="ACTION")
    p = commands.add_parser(
        "take",
        help="set money aside for offline payment (online; asks for your PIN)",
        description=(
            "Set money aside for offline payment: the server moves AMOUNT from your balance "
            "into an allowance held for 24 h (by default) and certifies four fresh keys this "
            "wallet made for it. The amounts allowed are the server's (e.g. 40.00, 100.00, "
            "200.00, 500.00); one allowance at a time. If the answer is lost, run the same "
            "command again: the same request is sent and nothing is set aside twice."
        ),
    )
    p.add_argument("--amount", required=True, help="as a decimal string, e.g. 500.00")
    p.add_argument(
        "--currency", help="the account's currency (default: your one account's, asked online)"
    )
    p.add_argument("--pin-stdin", action="store_true", help="read the payment PIN from stdin")
    p.set_defaults(func=cmd_take)
    p = commands.add_parser(
        "status",
        help="what this wallet holds offline, per certificate (no network unless --online)",
        description=(
            "The allowances this wallet holds: amount, what is left, expiry, and per "
            "certificate the codes made and the money they reserved (each code reserves the "
            "most it may pay). --online adds the server's view (settled, returned)."
        ),
    )
    p.add_argument("--online", action="store_true", help="also ask the server for its list")
    p.set_defaults(func=cmd_status)
    p = commands.add_parser(
        "return",
        help="hand the allowance back now: unspent money returns to your balance (online)",
        description=(
            "Hand back the allowance (or ALLOWANCE_ID): this wallet deletes its offline keys "
            "first, then tells the server which codes it made. Money those codes may still "
            "take stays held until their tills' deadline; the rest returns at once. An "
            "interrupted hand-back is finished by running the command again."
        ),
    )
    p.add_argument("allowance_id", nargs="?", help="as 'offline status' shows it (alw_...)")
    p.set_defaults(func=cmd_return)
    for action in commands.choices.values():  # the group's own is added with every command's
        add_json_flag(action)
