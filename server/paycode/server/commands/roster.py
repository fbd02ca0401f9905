"""paycode-server users list | merchants list | merchants update (operations.roster)."""

from __future__ import annotations

import argparse

from paycode.appkit.console import emit
from paycode.server.commands.common import Subparsers, money_text
from paycode.server.commands.common import config as _config
from paycode.server.commands.common import session as _session
from paycode.server.database.directory import MERCHANT_SETTINGS_TTL_S
from paycode.server.operations import roster

NOTIFY_URL_HELP = (
    "where signed notifications are POSTed: a public http(s) URL (loopback, private and "
    "link-local hosts need PAYCODE_NOTIFY_ALLOW_PRIVATE=1)"
)


def cmd_users_list(args: argparse.Namespace) -> int:
    with _session(_config()) as session:
        rows = roster.list_users(session, args.limit)
    lines = []
    for row in rows:
        accounts = ", ".join(
            f"{money_text(int(str(a['balance_minor'])), str(a['currency']))} {a['currency']}"
            for a in row["accounts"]  # type: ignore[attr-defined]
        )
        pin = "PIN set" if row["pin_set"] else "no PIN"
        devices = f"{row['live_devices']} live devices"
        lines.append(f"{row['name']}  {row['id']}  {accounts}  {devices}  {pin}")
    emit(args, "\n".join(lines) or "no users", {"users": rows})
    return 0


def cmd_merchants_list(args: argparse.Namespace) -> int:
    with _session(_config()) as session:
        rows = roster.list_merchants(session, args.limit)
    lines = [
        f"{row['name']}  {row['id']}  {row['currency']}  {row['city']}  "
        f"{row['live_terminals']} live terminals"
        + (f"  notify {row['notify_url']}" if row["notify_url"] else "")
        + (f"  allow {','.join(row['allowed_networks'])}" if row["allowed_networks"] else "")  # type: ignore[arg-type]
        for row in rows
    ]
    emit(args, "\n".join(lines) or "no merchants", {"merchants": rows})
    return 0


def cmd_merchants_update(args: argparse.Namespace) -> int:
    config = _config()
    change = roster.MerchantChange(
        name=args.name,
        city=args.city,
        ascii_name=args.ascii_name,
        ascii_city=args.ascii_city,
        language=args.language,
        notify_url=args.notify_url,
        clear_notify_url=args.no_notify_url,
        allow_ips=args.allow_ip,
        allow_anywhere=args.allow_anywhere,
        allow_private_notify=config.delivery.allow_private,
        offline_floor=args.offline_floor,
    )
    with _session(config) as session:
        merchant = roster.update_merchant(session, args.merchant, change)
        data = roster.merchant_json(merchant)
    human = (
        f"updated merchant {data['name']} ({data['id']}); running servers follow within "
        f"{MERCHANT_SETTINGS_TTL_S:.0f} s"
    )
    emit(args, human, {"merchant": data})
    return 0


def add_roster_commands(users: Subparsers, merchants: Subparsers) -> list[argparse.ArgumentParser]:
    """`users list`, `merchants list` and `merchants update` under the existing groups."""
    users_list = users.add_parser("list", help="every user: balances, live devices, PIN set")
    users_list.add_argument("--limit", type=int, default=roster.LIST_ROWS_MAX)
    users_list.set_defaults(func=cmd_users_list)
    merchants_list = merchants.add_parser(
        "list", help="every merchant: terminals, notify URL, allow-list"
    )
    merchants_list.add_argument("--limit", type=int, default=roster.LIST_ROWS_MAX)
    merchants_list.set_defaults(func=cmd_merchants_list)
    update = merchants.add_parser(
        "update",
        help="change a merchant's name, city, notify URL, allow-list or offline floor",
        description="Change a merchant after it was created. A new name or city changes what "
        "its QR posters say: print them again (posters printed before are refused as "
        f"qr_invalid). Running servers follow within {MERCHANT_SETTINGS_TTL_S:.0f} s.",
    )
    update.add_argument("merchant", help="the merchant's name or id")
    update.add_argument("--name", help="a new name")
    update.add_argument("--city", help="a new city")
    update.add_argument("--ascii-name", help="the EMV form of a name that is not ASCII")
    update.add_argument("--ascii-city", help="the EMV form of a city that is not ASCII")
    update.add_argument("--language", help="ISO 639-1 language of a name that is not ASCII")
    update.add_argument("--notify-url", help=NOTIFY_URL_HELP)
    update.add_argument("--no-notify-url", action="store_true", help="stop notifications")
    update.add_argument(
        "--allow-ip", action="append", metavar="CIDR", help="the allow-list (repeatable)"
    )
    update.add_argument("--allow-anywhere", action="store_true", help="drop the allow-list")
    update.add_argument(
        "--offline-floor",
        metavar="AMOUNT",
        help="the most one offline payment may be at its tills (0.00: no offline sales)",
    )
    update.set_defaults(func=cmd_merchants_update)
    return [users_list, merchants_list, update]
