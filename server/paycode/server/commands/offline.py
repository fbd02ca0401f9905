"""paycode-server offline sweep: the worker's escrow sweep (docs/offline.md §2.4), run once by
hand, e.g. after the worker was stopped past some allowance's `returns_at_s`."""

from __future__ import annotations

import argparse
import time

from paycode.appkit.console import emit
from paycode.server.commands.common import Subparsers, money_text
from paycode.server.commands.common import config as _config
from paycode.server.commands.common import session as _session
from paycode.server.operations import purge


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
        "sweep", help="return to their users the escrows of allowances past their sync grace"
    )
    sweep.set_defaults(func=cmd_sweep)
    return [sweep]
