"""paycode-server notifications list | retry, merchants notify-secret: the outbox for operators.

Rows are shown without their bodies (those are the merchant's business) and never with a
secret; `merchants notify-secret NAME --rotate` is the only command besides `merchants create`
that prints a notification secret, once, when it issues it.
"""

from __future__ import annotations

import argparse
import base64
import time

from paycode.appkit.console import emit
from paycode.server.commands.common import CliError, Subparsers
from paycode.server.commands.common import config as _config
from paycode.server.commands.common import session as _session
from paycode.server.notifications import events
from paycode.server.operations import admin
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.codes import ErrorCode

LIST_LIMIT_DEFAULT = 100
VERIFY_HINT = "verify each notification with it (docs/operations.md, Merchant notifications)"


def secret_lines(merchant_id: str, secret: bytes) -> tuple[str, dict[str, str]]:
    """How a freshly issued notification secret is shown: (human lines, JSON members)."""
    secret_b64 = base64.b64encode(secret).decode("ascii")
    human = "\n".join(
        (
            f"notification secret: {secret_b64}",
            f"Store it now: it is not shown again; {VERIFY_HINT}.",
        )
    )
    return human, {"merchant_id": merchant_id, "notify_secret": secret_b64}


def cmd_notify_secret(args: argparse.Namespace) -> int:
    """--rotate: issue a new notification secret (shown once); without: say whether one is set."""
    config = _config()
    with _session(config) as session:
        merchant = admin.find_merchant(session, args.merchant)
        merchant_id, has_secret = merchant.id, merchant.notify_secret_sealed is not None
        if args.rotate:
            secret = events.issue_secret(session, SecretBox.from_config(config), merchant)
    if not args.rotate:
        state = "is set" if has_secret else "is not set (issue one with --rotate)"
        status = {"merchant_id": merchant_id, "notify_secret_set": has_secret}
        emit(args, f"the notification secret of {merchant_id} {state}", status)
        return 0
    human, issued = secret_lines(merchant_id, secret)
    emit(
        args,
        f"new notification secret for {merchant_id}; the old one no longer signs\n{human}",
        dict(issued),
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= events.LISTED_MAX:
        raise CliError(ErrorCode.INVALID_ARGUMENT, f"--limit must be 1-{events.LISTED_MAX}")
    with _session(_config()) as session:
        merchant_id = admin.find_merchant(session, args.merchant).id if args.merchant else None
        wanted = events.ListFilter(
            merchant_id=merchant_id,
            dead_only=args.dead,
            include_delivered=args.all,
            limit=args.limit,
        )
        rows = [events.row_json(row) for row in events.list_rows(session, wanted)]
    lines = [
        f"{row['event_id']}  {row['state']:<9} {row['event_type']:<28} {row['payment_id']}  "
        f"attempts {row['attempts']}" + (f"  ({row['last_error']})" if row["last_error"] else "")
        for row in rows
    ]
    emit(args, "\n".join(lines) or "no notifications", {"notifications": rows})
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    with _session(_config()) as session:
        row = events.retry(session, args.event_id[:64], time.time())
        if row is None:
            raise CliError(ErrorCode.NOT_FOUND, f"no notification {args.event_id[:64]!r}")
        data = events.row_json(row)
    emit(args, f"{data['event_id']} is due now, with a fresh set of attempts", data)
    return 0


def add_notification_commands(sub: Subparsers) -> list[argparse.ArgumentParser]:
    group = sub.add_parser(
        "notifications", help="merchant notifications waiting, delivered or dead"
    ).add_subparsers(metavar="ACTION")
    listing = group.add_parser("list", help="undelivered notifications, newest first")
    listing.add_argument("--dead", action="store_true", help="only those that gave up")
    listing.add_argument("--all", action="store_true", help="delivered ones too")
    listing.add_argument("--merchant", default=None, help="merchant id or name")
    listing.add_argument("--limit", type=int, default=LIST_LIMIT_DEFAULT, help="at most N (1-1000)")
    listing.set_defaults(func=cmd_list)
    retry = group.add_parser("retry", help="send a notification again (e.g. a dead one)")
    retry.add_argument("event_id")
    retry.set_defaults(func=cmd_retry)
    return [listing, retry]


def add_notify_secret_command(merchants: Subparsers) -> argparse.ArgumentParser:
    """`merchants notify-secret NAME [--rotate]`, under the `merchants` group."""
    command: argparse.ArgumentParser = merchants.add_parser(
        "notify-secret", help="whether a merchant's notification secret is set; --rotate issues"
    )
    command.add_argument("merchant", help="merchant id or name")
    command.add_argument(
        "--rotate", action="store_true", help="issue a new secret (shown once; the old one stops)"
    )
    command.set_defaults(func=cmd_notify_secret)
    return command
