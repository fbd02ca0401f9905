"""paycode-server offline sweep | users offline-unblock | terminals offline-gap: what an
operator does about offline payments (docs/offline.md §2.4, §5, §6.4).

`offline sweep` is the worker's escrow sweep run once by hand, e.g. after the worker was
stopped past some allowance's `returns_at_s`; the other two are the operator's decisions."""

from __future__ import annotations

import argparse
import time

from paycode.appkit.console import emit
from paycode.server.books.offline_chain import record_gap
from paycode.server.commands.common import Subparsers, money_text
from paycode.server.commands.common import config as _config
from paycode.server.commands.common import session as _session
from paycode.server.database.models import Terminal
from paycode.server.operations import admin, purge
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


def cmd_sweep(args: argparse.Namespace) -> int:
    """Return every due escrow to its user now; lists what went back (nothing due: exit 0)."""
    with _session(_config()) as session:
        swept = purge.sweep_allowances(session, time.time())
    rows = [
        {
            "allowance_id": one.allowance_id,
            "user_id": one.user_id,
            "currency": one.currency,
            "returned_minor": one.returned_minor,
        }
        for one in swept
    ]
    lines = [
        f"{one.allowance_id}  {one.user_id}  returned "
        f"{money_text(one.returned_minor, one.currency)} {one.currency}"
        for one in swept
    ]
    summary = f"swept {len(swept)} offline allowance(s)"
    emit(args, "\n".join([*lines, summary]), {"swept": rows, "count": len(rows)})
    return 0


def add_offline_commands(sub: Subparsers) -> list[argparse.ArgumentParser]:
    group = sub.add_parser("offline", help="offline allowances: sweep due escrows").add_subparsers(
        metavar="ACTION"
    )
    sweep = group.add_parser(
        "sweep",
        help="return to their users the escrows of allowances past their sync grace",
        description=(
            "Return to each user what the escrow of an allowance still holds once its sync "
            "grace (PAYCODE_OFFLINE_GRACE_S after the certificates expire) is over: no till "
            "can forward a sale of it any more. 'paycode-server worker' does this on every "
            "pass; run it by hand after the worker was stopped. Safe to run on several hosts "
            "at once: each escrow is returned once."
        ),
    )
    sweep.set_defaults(func=cmd_sweep)
    return [sweep]
