"""paycode-server users offline-unblock | terminals offline-gap: the operator's two decisions
about offline payments (docs/offline.md §5, §6.4)."""

from __future__ import annotations

import argparse

from paycode.appkit.console import emit
from paycode.server.books.offline_chain import record_gap
from paycode.server.commands.common import Subparsers
from paycode.server.commands.common import config as _config
from paycode.server.commands.common import session as _session
from paycode.server.database.models import Terminal
from paycode.server.operations import admin
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError


def cmd_users_offline_unblock(args: argparse.Namespace) -> int:
    """Lets the user take offline allowances again; the revoked device stays revoked."""
    with _session(_config()) as session:
        user = admin.find_user(session, args.name)
        was_blocked = user.offline_blocked_at_s is not None
        user.offline_blocked_at_s = None
        user_id = user.id
    state = "unblocked" if was_blocked else "was not blocked"
    emit(
        args,
        f"user {args.name} {state}: offline allowances may be taken again",
        {"user": args.name, "user_id": user_id, "was_blocked": was_blocked},
    )
    return 0


def cmd_terminals_offline_gap(args: argparse.Namespace) -> int:
    """Records a till's lost offline records: its next record follows them with any prev."""
    with _session(_config()) as session:
        if session.get(Terminal, args.key_id) is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no terminal {args.key_id[:40]!r}")
        next_seq = record_gap(session, args.key_id, from_seq=args.from_seq, to_seq=args.to_seq)
    emit(
        args,
        f"terminal {args.key_id}: records {args.from_seq}-{args.to_seq} recorded as lost; "
        f"its next record is {next_seq}, their sales are the merchant's loss",
        {"key_id": args.key_id, "from_seq": args.from_seq, "to_seq": args.to_seq,
         "next_seq": next_seq},
    )  # fmt: skip
    return 0


def add_offline_unblock_command(users: Subparsers) -> argparse.ArgumentParser:
    unblock: argparse.ArgumentParser = users.add_parser(
        "offline-unblock",
        help="let a user take offline allowances again after an over-spend lock",
        description="Clear the offline block an over-spent allowance put on a user (a copied "
        "wallet). The device that was revoked stays revoked: the user enrolls again.",
    )
    unblock.add_argument("name", metavar="USER_NAME")
    unblock.set_defaults(func=cmd_users_offline_unblock)
    return unblock


def add_offline_gap_command(terminals: Subparsers) -> argparse.ArgumentParser:
    gap: argparse.ArgumentParser = terminals.add_parser(
        "offline-gap",
        help="record that a till's offline records FROM..TO are lost (a dead disk)",
        description="A till whose offline log was lost cannot forward those records: record "
        "the gap and the till's next record (TO + 1) is accepted with any prev. The lost "
        "sales are the merchant's loss. FROM must be the till's next expected seq.",
    )
    gap.add_argument("key_id", help="the terminal's key id (term_...)")
    gap.add_argument("--from-seq", type=int, required=True)
    gap.add_argument("--to-seq", type=int, required=True)
    gap.set_defaults(func=cmd_terminals_offline_gap)
    return gap
