"""paycode-server points grant | points balance: the operator credits a user's loyalty points
from the system PTS account, as `users top-up` credits money (docs/spec.md §16)."""

from __future__ import annotations

import argparse
import time

from paycode.appkit.console import emit
from paycode.server.commands.common import CliError, Subparsers
from paycode.server.commands.common import config as _config
from paycode.server.commands.common import session as _session
from paycode.server.operations import admin
from paycode.server.points.redemption import grant, points_balance
from paycode.shared.codes import ErrorCode
from paycode.shared.points import POINTS_MAX, is_count


def cmd_points_grant(args: argparse.Namespace) -> int:
    if not is_count(args.points, POINTS_MAX):
        raise CliError(ErrorCode.INVALID_ARGUMENT, f"--points must be 1-{POINTS_MAX}")
    with _session(_config()) as session:
        user = admin.find_user(session, args.user)
        balance = grant(session, user.id, args.points, time.time())
        user_id = user.id
    data = {"user": args.user, "user_id": user_id, "points": args.points, "balance": balance}
    emit(args, f"granted {args.user} {args.points} points; balance {balance} points", data)
    return 0


def cmd_points_balance(args: argparse.Namespace) -> int:
    with _session(_config()) as session:
        user = admin.find_user(session, args.user)
        balance = points_balance(session, user.id)
    emit(args, f"{args.user} holds {balance} points", {"user": args.user, "balance": balance})
    return 0


def add_points_commands(sub: Subparsers) -> list[argparse.ArgumentParser]:
    group = sub.add_parser("points", help="loyalty points: grant, balance").add_subparsers(
        metavar="ACTION"
    )
    granting = group.add_parser("grant", help="credit a user points from the system account")
    granting.add_argument("--user", required=True, help="user name")
    granting.add_argument("--points", required=True, type=int, help="whole points, 1 or more")
    granting.set_defaults(func=cmd_points_grant)
    balance = group.add_parser("balance", help="a user's points")
    balance.add_argument("--user", required=True, help="user name")
    balance.set_defaults(func=cmd_points_balance)
    return [granting, balance]
