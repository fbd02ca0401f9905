"""paycode-server users | merchants | terminals | devices: the operator's bookkeeping."""

from __future__ import annotations

import argparse
import base64
import getpass
import sys
import time

from paycode.appkit.console import emit
from paycode.server.charge.merchant_qr import collection_code_for
from paycode.server.commands.common import (
    CliError,
    Subparsers,
)
from paycode.server.commands.common import (
    config as _config,
)
from paycode.server.commands.common import (
    money_text as _money_text,
)
from paycode.server.commands.common import (
    session as _session,
)
from paycode.server.commands.notifications import add_notify_secret_command
from paycode.server.commands.offline_commands import (
    add_offline_gap_command,
    add_offline_unblock_command,
)
from paycode.server.commands.roster import NOTIFY_URL_HELP, add_roster_commands
from paycode.server.dashboard import access
from paycode.server.database.models import DEFAULT_CITY, DEFAULT_COUNTRY, Merchant, Terminal
from paycode.server.notifications import events
from paycode.server.operations import admin, merchant_names
from paycode.server.safety.limits import limits_json, limits_of
from paycode.server.safety.passwords import PASSWORD_CHARS_MAX
from paycode.server.safety.secretbox import SecretBox
from paycode.server.wallets import devices
from paycode.shared.codes import ErrorCode
from paycode.shared.credentials import POLICY_TEXT, password_problem
from paycode.shared.money import format_amount, parse_amount
from paycode.shared.timestamps import iso_time

DEFAULT_CURRENCY = "CNY"


def _read_password(from_stdin: bool) -> str:
    """One line from stdin, or a prompt (twice) on a terminal; never from the command line."""
    if from_stdin:
        line = sys.stdin.readline(PASSWORD_CHARS_MAX + 2)
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CliError(
            ErrorCode.PASSWORD_REQUIRED, "no terminal to prompt on: use --password-stdin"
        )
    password = getpass.getpass("Password: ")
    problem = password_problem(password)
    if problem is not None:  # before the second prompt, not after it
        raise CliError(ErrorCode.PASSWORD_INVALID, problem)
    if getpass.getpass("Repeat password: ") != password:
        raise CliError(ErrorCode.PASSWORD_MISMATCH, "the two passwords differ")
    return password


def cmd_users_create(args: argparse.Namespace) -> int:
    password = _read_password(args.password_stdin)
    config = _config()
    with _session(config) as session:
        user = admin.create_user(session, args.name, password, args.currency, now_s=time.time())
        currency = admin.default_currency(session, user.name)
        data = {"user": {"id": user.id, "name": user.name, "currency": currency}}
    emit(args, f"created user {user.name} ({user.id}) with a {currency} account", data)
    return 0


def cmd_users_top_up(args: argparse.Namespace) -> int:
    config = _config()
    with _session(config) as session:
        currency = admin.check_currency(args.currency) if args.currency else None
        currency = currency or admin.default_currency(session, args.name)
        balance_minor = admin.top_up(session, args.name, args.amount, time.time(), currency)
    amount = format_amount(parse_amount(args.amount, currency))
    balance = _money_text(balance_minor, currency)
    data = {
        "user": args.name,
        "currency": currency,
        "amount": amount,
        "balance": balance,
        "balance_minor": balance_minor,
    }
    emit(args, f"topped up {args.name} by {amount} {currency}; balance {balance} {currency}", data)
    return 0


def cmd_users_limits(args: argparse.Namespace) -> int:
    """Show (and with options, set) a user's password-free limits."""
    config = _config()
    settings = config.limits
    with _session(config) as session:
        currency = admin.check_currency(args.currency) if args.currency else None
        currency = currency or admin.default_currency(session, args.name)
        changing = args.reset or any(
            value is not None for value in (args.payment_max, args.daily_max, args.daily_count)
        )
        if changing:
            admin.set_limits(
                session,
                args.name,
                currency,
                payment_max=args.payment_max,
                daily_max=args.daily_max,
                daily_count_max=args.daily_count,
                reset=args.reset,
            )
        user = admin.find_user(session, args.name)
        found = [
            limits_json(item)
            for item in limits_of(session, user.id, settings, time.time())
            if item.currency == currency
        ]
    assert len(found) == 1
    shown = found[0]
    origin = "own" if shown["custom"] else "server defaults"
    human = (
        f"{args.name} ({currency}, {origin}): without PIN up to {shown['payment_max']} per "
        f"payment, {shown['daily_count_max']} payments and {shown['daily_max']} a day; "
        f"today {shown['today_count']} payments, {shown['today']}"
    )
    emit(args, human, {"user": args.name, "limits": shown})
    return 0


def cmd_merchants_create(args: argparse.Namespace) -> int:
    """Also issues the merchant's notification secret: shown here once, kept only sealed."""
    from paycode.server.commands.notifications import secret_lines  # noqa: PLC0415 - it imports this module's peers

    config = _config()
    with _session(config) as session:
        merchant = admin.create_merchant(
            session,
            args.name,
            args.currency,
            args.notify_url,
            city=args.city,
            country=args.country,
            allow_ips=args.allow_ip,
            ascii_name=args.ascii_name,
            ascii_city=args.ascii_city,
            language=args.language,
            now_s=time.time(),
            allow_private_notify=config.delivery.allow_private,
        )
        secret = events.issue_secret(session, SecretBox.from_config(config), merchant)
    secret_human, secret_data = secret_lines(merchant.id, secret)
    emv_human, emv_data = _emv_lines(args, merchant)
    data = {
        "notify_secret": secret_data["notify_secret"],
        "merchant": {
            "id": merchant.id,
            "name": merchant.name,
            "currency": merchant.currency,
            "city": merchant.city,
            "country": merchant.country,
            "allowed_networks": merchant.allowed_cidrs.split(",") if merchant.allowed_cidrs else [],
            "notify_url": merchant.notify_url,
            "ascii_name": merchant.ascii_name,
            "ascii_city": merchant.ascii_city,
            "language": merchant.language,
            "emv": emv_data,
        },
    }
    human = f"created merchant {merchant.name} ({merchant.id}), {merchant.currency}"
    emit(args, "\n".join(filter(None, (human, emv_human, secret_human))), data)
    return 0


def _emv_lines(args: argparse.Namespace, merchant: Merchant) -> tuple[str, dict[str, object]]:
    """What the merchant's collection QR says in EMV tags 59, 60 and 64, and whether we
    transliterated it; no line when the name and city are ASCII and print as they are."""
    code = collection_code_for(merchant)
    transliterated = [
        what
        for what, stored, given in (
            ("name", merchant.ascii_name, args.ascii_name),
            ("city", merchant.ascii_city, args.ascii_city),
        )
        if stored is not None and given is None
    ]
    data: dict[str, object] = {
        "name": code.merchant_name,
        "city": code.merchant_city,
        "language": code.language,
        "local_name": code.local_name,
        "local_city": code.local_city,
        "transliterated": transliterated,
    }
    if code.local_name is None:
        return "", data

    def how(what: str) -> str:
        return " (transliterated)" if what in transliterated else ""

    human = (
        f"EMV name: {code.merchant_name}{how('name')}\n"
        f"EMV city: {code.merchant_city}{how('city')}\n"
        f"EMV tag 64 ({code.language}): "
        + ", ".join(filter(None, (code.local_name, code.local_city)))
    )
    return human, data


def cmd_merchants_set_password(args: argparse.Namespace) -> int:
    """The merchant's dashboard log-in (/dashboard); setting it again ends open sessions."""
    password = None if args.close else _read_password(args.password_stdin)
    with _session(_config()) as session:
        merchant = admin.find_merchant(session, args.merchant)
        if password is None:
            access.close_dashboard(session, merchant.id)
        else:
            access.set_password(session, merchant.id, password)
        data = {"merchant": {"id": merchant.id, "name": merchant.name}, "open": bool(password)}
    if password is None:
        human = f"closed the dashboard of {merchant.name}: it can no longer log in"
    else:
        human = f"set the dashboard password of {merchant.name}: log in at /dashboard/login"
    emit(args, human, data)
    return 0


def cmd_terminals_create(args: argparse.Namespace) -> int:
    """Print the terminal's key id and secret: the only time the secret is ever shown."""
    config = _config()
    with _session(config) as session:
        terminal, secret = admin.create_terminal(
            session, SecretBox.from_config(config), args.merchant, time.time()
        )
        merchant_id = terminal.merchant_id
    secret_b64 = base64.b64encode(secret).decode("ascii")
    human = "\n".join(
        (
            f"terminal for merchant {merchant_id}",
            f"key id: {terminal.id}",
            f"secret: {secret_b64}",
            "Store the secret now: it is not shown again (the server keeps it sealed).",
            f"Configure the POS: paycode-pos configure --server URL --key-id {terminal.id} "
            "--secret-stdin",
        )
    )
    emit(args, human, {"key_id": terminal.id, "secret": secret_b64, "merchant_id": merchant_id})
    return 0


def _terminal_json(terminal: Terminal) -> dict[str, object]:
    return {
        "key_id": terminal.id,
        "merchant_id": terminal.merchant_id,
        "created_at": iso_time(terminal.created_at_s),
        "revoked": terminal.revoked_at_s is not None,
        "revoked_at": iso_time(terminal.revoked_at_s) if terminal.revoked_at_s else None,
    }


def cmd_terminals_revoke(args: argparse.Namespace) -> int:
    """A lost or stolen till: its signatures are refused from the next request on."""
    with _session(_config()) as session:
        terminal = admin.revoke_terminal(session, args.key_id, time.time())
        row = _terminal_json(terminal)
    human = f"terminal {row['key_id']} revoked at {row['revoked_at']}: its requests now answer 401"
    emit(args, human, row)
    return 0


def cmd_terminals_list(args: argparse.Namespace) -> int:
    with _session(_config()) as session:
        rows = [_terminal_json(row) for row in admin.list_terminals(session, args.merchant)]
    lines = [
        f"{row['key_id']}  created {row['created_at']}  "
        + (f"revoked {row['revoked_at']}" if row["revoked"] else "live")
        for row in rows
    ]
    emit(args, "\n".join(lines) or "no terminals", {"terminals": rows})
    return 0


def cmd_devices_revoke(args: argparse.Namespace) -> int:
    config = _config()
    with _session(config) as session:
        revoked = admin.revoke_device(session, args.device_id, time.time())
    state = "revoked" if revoked else "was already revoked"
    emit(
        args, f"device {args.device_id} {state}", {"device_id": args.device_id, "revoked": revoked}
    )
    return 0


def cmd_devices_list(args: argparse.Namespace) -> int:
    """A user's devices: live ones first, then the most recently revoked (no keys, no handles)."""
    with _session(_config()) as session:
        rows = [
            devices.device_json(device)
            for device in admin.list_devices(session, args.name, args.limit)
        ]
    lines = [
        f"{row['device_id']}  {row['version']}  created {row['created_at']}  "
        + (f"revoked {row['revoked_at']}" if row["revoked"] else "live")
        + (f"  {row['label']}" if row["label"] else "")
        for row in rows
    ]
    emit(
        args,
        "\n".join(lines) or f"{args.name} has no devices",
        {"user": args.name, "devices": rows},
    )
    return 0


def _add_terminal_commands(sub: Subparsers) -> list[argparse.ArgumentParser]:
    terminals = sub.add_parser("terminals", help="POS terminal keys").add_subparsers(
        metavar="ACTION"
    )
    terminal = terminals.add_parser("create", help="create a terminal key (secret shown once)")
    terminal.add_argument("merchant", help="merchant id or name")
    terminal.set_defaults(func=cmd_terminals_create)
    terminal_revoke = terminals.add_parser(
        "revoke",
        help="stop accepting a terminal's requests at once (a lost or stolen till)",
        description="Revoke a terminal key: every request it signs is refused from now on, on "
        "every worker and host. Payments it made stay. Revoking twice keeps the first time. "
        "To replace the till, `terminals create` a new key.",
    )
    terminal_revoke.add_argument("key_id", help="the terminal's key id (term_...)")
    terminal_revoke.set_defaults(func=cmd_terminals_revoke)
    terminal_list = terminals.add_parser("list", help="a merchant's terminals, live ones first")
    terminal_list.add_argument("merchant", help="merchant id or name")
    terminal_list.set_defaults(func=cmd_terminals_list)
    return [terminal, terminal_revoke, terminal_list, add_offline_gap_command(terminals)]


def add_account_commands(sub: Subparsers) -> list[argparse.ArgumentParser]:
    users = sub.add_parser("users", help="wallet users").add_subparsers(metavar="ACTION")
    create = users.add_parser(
        "create",
        help="create a user and an empty account",
        description=f"Create a wallet user. The password is prompted twice (or one line with "
        f"--password-stdin): {POLICY_TEXT}.",
    )
    create.add_argument("name")
    create.add_argument("--password-stdin", action="store_true", help="read one line as password")
    create.add_argument("--currency", default=DEFAULT_CURRENCY)
    create.set_defaults(func=cmd_users_create)
    top_up = users.add_parser("top-up", help="credit a user from the funding account")
    top_up.add_argument("name")
    top_up.add_argument("amount", help='decimal string, e.g. "100.00"')
    top_up.add_argument("--currency", default=None, help="default: the user's first account")
    top_up.set_defaults(func=cmd_users_top_up)
    limits = users.add_parser(
        "limits",
        help="show or set a user's password-free limits (above them a payment waits for the "
        "customer's PIN)",
    )
    limits.add_argument("name")
    limits.add_argument("--currency", default=None, help="default: the user's first account")
    limits.add_argument("--payment-max", help='one payment without the PIN, e.g. "500.00"')
    limits.add_argument("--daily-max", help="today's total without the PIN")
    limits.add_argument("--daily-count", type=int, help="payments a day without the PIN")
    limits.add_argument("--reset", action="store_true", help="back to the server defaults first")
    limits.set_defaults(func=cmd_users_limits)
    merchants = sub.add_parser("merchants", help="merchants").add_subparsers(metavar="ACTION")
    merchant = merchants.add_parser(
        "create",
        help="create a merchant and its account",
        description="Create a merchant and its settlement account. The name and city may be in "
        "any script (a name that is not ASCII has at most 25 characters, a city 15: EMV tag 64 "
        "carries them). EMV tags 59 and 60 take ASCII only: give it with --ascii-name and "
        "--ascii-city, or it is transliterated, Chinese as pinyin without tones with each "
        "word capitalised (北京烤鸭店 -> Beijing Kaoya Dian), other scripts with anyascii, "
        "and cut to 25 and 15 characters; the output says which.",
    )
    merchant.add_argument("name", help="as customers know it, any script (<= 64; 25 if not ASCII)")
    merchant.add_argument("--currency", default=DEFAULT_CURRENCY)
    merchant.add_argument("--notify-url", default=None, help=NOTIFY_URL_HELP)
    merchant.add_argument("--city", default=DEFAULT_CITY, help="city on its QR posters (<= 15)")
    merchant.add_argument(
        "--ascii-name",
        help="EMV tag 59 for a name that is not ASCII (<= 25; default: transliterated)",
    )
    merchant.add_argument(
        "--ascii-city",
        help="EMV tag 60 for a city that is not ASCII (<= 15; default: transliterated)",
    )
    merchant.add_argument(
        "--language",
        help="ISO 639-1 of a name or city that is not ASCII, EMV tag 64/00 (default: from the "
        f"script: {merchant_names.INFERRED_SCRIPTS}; others must name it)",
    )
    merchant.add_argument("--country", default=DEFAULT_COUNTRY, help="ISO 3166 alpha-2 (CN)")
    merchant.add_argument(
        "--allow-ip",
        action="append",
        metavar="CIDR",
        help="only accept its terminals' requests from this network (repeatable; default any)",
    )
    merchant.set_defaults(func=cmd_merchants_create)
    notify_secret = add_notify_secret_command(merchants)
    password = merchants.add_parser(
        "set-password",
        help="the merchant's dashboard password (prompted twice, or --password-stdin)",
        description="Set the password the merchant logs in to /dashboard with. It is the "
        "merchant's own: no terminal holds it, and it cannot charge. Setting it again, or "
        f"--close, ends every open dashboard session. At least "
        f"{access.PASSWORD_CHARS_MIN} characters.",
    )
    password.add_argument("merchant", help="merchant id or name")
    password.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    password.add_argument("--close", action="store_true", help="remove it: no log-in at all")
    password.set_defaults(func=cmd_merchants_set_password)
    roster_parsers = add_roster_commands(users, merchants)
    roster_parsers.append(add_offline_unblock_command(users))
    terminal_parsers = _add_terminal_commands(sub)
    device_commands = sub.add_parser("devices", help="enrolled devices").add_subparsers(
        metavar="ACTION"
    )
    revoke = device_commands.add_parser("revoke", help="stop accepting a device's codes")
    revoke.add_argument("device_id")
    revoke.set_defaults(func=cmd_devices_revoke)
    listing = device_commands.add_parser("list", help="a user's devices, live ones first")
    listing.add_argument("name", metavar="USER_NAME")
    listing.add_argument(
        "--limit", type=int, default=devices.DEVICES_LISTED_MAX, help="at most N (1-1000)"
    )
    listing.set_defaults(func=cmd_devices_list)
    return [
        create,
        top_up,
        limits,
        merchant,
        notify_secret,
        password,
        *roster_parsers,
        *terminal_parsers,
        revoke,
        listing,
    ]
