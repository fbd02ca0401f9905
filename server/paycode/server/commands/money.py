"""paycode-server settlement | reconcile: the merchant's daily file and the ledger's check."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from paycode.appkit.console import EXIT_ERROR, emit, wants_json
from paycode.server.books import reconcile, settlement, settlement_csv
from paycode.server.commands.common import CliError, Subparsers, check_url, database_error
from paycode.server.commands.common import config as _config
from paycode.server.config import ServerConfig
from paycode.server.operations import admin
from paycode.shared.codes import ErrorCode


@contextmanager
def _snapshot(config: ServerConfig) -> Iterator[Session]:
    """A read-only session on one consistent snapshot (server.reconcile.snapshot_session)."""
    from paycode.server.database.engine import make_engine  # noqa: PLC0415 - keeps `--help` fast

    check_url(config.database_url)
    engine = make_engine(config.database_url)
    try:
        with reconcile.snapshot_session(engine) as session:
            yield session
    except DBAPIError as error:
        raise database_error(error) from None
    finally:
        engine.dispose()


def _write_atomically(path: Path, text: str) -> None:
    """The whole file or none: written beside the target, then renamed over it."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8", newline="") as out:
        out.write(text)
    os.replace(partial, path)


def cmd_settlement(args: argparse.Namespace) -> int:
    day = settlement.parse_day(args.date)
    config = _config()
    window = settlement.day_window(day, config.limits)
    with _snapshot(config) as session:
        merchant = admin.find_merchant(session, args.merchant)
        report = settlement.settle(session, merchant, window, config.settlement)
    text = settlement_csv.to_csv(report)
    data: dict[str, Any] = {
        "merchant": {"id": report.merchant_id, "name": report.merchant_name},
        "date": day.isoformat(),
        "window": {"start_s": window.start_s, "end_s": window.end_s},
        "fee_bps": config.settlement.fee_bps,
        "lines": len(report.lines),
        "totals": settlement_csv.totals_json(report),
        "points_totals": settlement_csv.points_totals_json(report),
    }
    if args.out is None:
        if wants_json(args):
            emit(args, "", data | {"csv": text})
        else:
            sys.stdout.write(text)
        return 0
    _write_atomically(Path(args.out), text)
    nets = "; ".join(
        f"{item['currency']}: {item['count']} movements, net {item['net']}, fees {item['fee']}"
        for item in data["totals"]
    )
    emit(
        args, f"wrote {args.out} ({report.merchant_name}, {day}): {nets}", data | {"out": args.out}
    )
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Exit 0 with a summary, or 1 naming each mismatch (at most 50) with its code."""
    if not 1 <= args.batch_rows <= reconcile.BATCH_ROWS_MAX:
        raise CliError(
            ErrorCode.INVALID_ARGUMENT, f"--batch-rows must be 1-{reconcile.BATCH_ROWS_MAX}"
        )
    with _snapshot(_config()) as session:
        report = reconcile.reconcile(session, batch_rows=args.batch_rows, now_s=time.time())
    data = reconcile.report_json(report)
    summary = (
        f"{report.accounts} accounts, {report.transactions} transactions, {report.entries} "
        f"entries, {report.payments} payments, {report.refunds} refunds"
    )
    if report.ok:
        emit(args, f"ledger reconciled: {summary}; no mismatches", data)
        return 0
    listed = len(report.mismatches)
    message = f"{report.mismatch_count} mismatch(es) in {summary} (first {listed} named)"
    if wants_json(args):
        error = {"code": ErrorCode.LEDGER_MISMATCH, "message": message}
        print(json.dumps({"ok": False, "error": error, **data}, sort_keys=True))
        return EXIT_ERROR
    for item in report.mismatches:
        print(f"mismatch [{item.code}] {item.subject}: {item.detail}")
    raise CliError(ErrorCode.LEDGER_MISMATCH, message)


def add_money_commands(sub: Subparsers) -> list[argparse.ArgumentParser]:
    """Top-level commands: build_parser gives them --json with the other top-level ones."""
    settle = sub.add_parser(
        "settlement", help="a merchant's settlement file (CSV) for one day of the ledger"
    )
    settle.add_argument("--merchant", required=True, help="merchant id or name")
    settle.add_argument(
        "--date", required=True, help="YYYY-MM-DD, a day in PAYCODE_LIMIT_DAY_OFFSET_MINUTES"
    )
    settle.add_argument("--out", default=None, help="write the CSV here (default: stdout)")
    settle.set_defaults(func=cmd_settlement)
    check = sub.add_parser(
        "reconcile", help="check the whole ledger against itself, payments and refunds"
    )
    check.add_argument(
        "--batch-rows",
        type=int,
        default=reconcile.BATCH_ROWS,
        help="rows per batch (default %(default)s)",
    )
    check.set_defaults(func=cmd_reconcile)
    return []
