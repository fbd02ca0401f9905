"""The till's offline commands: `sync`, `offline status`, and the offline parts of `configure`,
`charge` and `query` (docs/offline.md 4.4 and 5).

    paycode-pos sync [--force]     exit 0 all forwarded and paid in full, 5 all forwarded but
                                   some paid short / refused / duplicates, 6 some not forwarded
                                   yet (run again: nothing is lost), 1 the usual errors
    paycode-pos offline status     what waits to sync, the keys' age, the limits
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from paycode.appkit.console import add_json_flag, emit, printable
from paycode.merchant_pos import offline_keys, settings
from paycode.merchant_pos.offline_charge import line_is_up, money_text, recover_interrupted
from paycode.merchant_pos.offline_keys import OfflineKeys, OfflineKeysInvalid
from paycode.merchant_pos.offline_log import LOG_FOLDER, open_log
from paycode.merchant_pos.offline_records import Acceptance, Synced
from paycode.merchant_pos.offline_sale import SYNC_DEADLINE_S
from paycode.merchant_pos.offline_sync import (
    EXIT_NOT_FORWARDED,
    EXIT_SETTLED_SHORT,
    SyncOutcome,
    load_backoff,
    sync,
)
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.shared.errors import PaycodeError, ServerRejected, ServerUnreachable

TAIL_RECORDS_MAX = 20
TAIL_S = 10.0
"""After an online sale, sync forwards at most this many records within this time (section 5)."""
NOT_FOUND = 404


def report_interrupted(home: Path) -> None:
    """At a start (charge, sync, query): a sale a crash interrupted is told before anything."""
    line = recover_interrupted(home)
    if line is not None:
        print(printable(line), file=sys.stderr, flush=True)


def refresh_keys(client: TerminalClient, home: Path) -> tuple[OfflineKeys | None, str]:
    """Fetches and stores the offline keys; (None, why) when the server does not offer them
    (404, an older server) or cannot be asked now: the stored copy stays as it was."""
    try:
        return offline_keys.fetch(client, home, local_now_s=time.time()), ""
    except ServerRejected as error:
        if error.status == NOT_FOUND:
            return None, "the server offers no offline payments"
        return None, f"offline keys refused: {error.code}: {error.message}"
    except (ServerUnreachable, OfflineKeysInvalid) as error:
        return None, f"offline keys not fetched: {error.code}: {error.message}"


def keys_summary(keys: OfflineKeys) -> dict[str, Any]:
    return {
        "fetched_at_s": keys.fetched_at_s,
        "age_s": round(keys.age_s(time.time())),
        "ready": keys.ready(time.time()),
        "keys": len(keys.keys),
        "denied": len(keys.denied),
        "currency": keys.currency,
        "limits": keys.document()["limits"],
    }


def configure_offline(client: TerminalClient, home: Path) -> tuple[dict[str, Any] | None, str]:
    """`configure`'s last step: the first copy of the offline keys, when the server has them."""
    keys, why = refresh_keys(client, home)
    if keys is None:
        return None, f"offline: {why}"
    floor = money_text(keys.limits.floor_minor, keys.currency)
    return keys_summary(keys), f"offline keys fetched: offline sales up to {floor} each"


def after_online_sale(client: TerminalClient, home: Path) -> None:
    """The tail of an online sale (the line is up): forwards a few waiting records and
    refreshes a keys copy older than `REFRESH_AGE_S`. Only for a till that sold offline or
    holds keys; what fails here is retried by the next run, so it is not the sale's concern
    (it is told on stderr, and the sale's exit status stays the sale's)."""
    if not (home / LOG_FOLDER).is_dir():
        return
    try:
        _after_online_sale(client, home)
    except (PaycodeError, OSError) as error:
        said = error.message if isinstance(error, PaycodeError) else str(error)
        print(f"offline sync after the sale: {printable(said)}", file=sys.stderr)


def _after_online_sale(client: TerminalClient, home: Path) -> None:
    line_is_up(home)
    try:
        keys = offline_keys.load(home)
    except OfflineKeysInvalid:
        keys = None
    if keys is not None and keys.age_s(time.time()) >= offline_keys.REFRESH_AGE_S:
        refresh_keys(client, home)
    started_s = time.monotonic()
    with open_log(home) as log:
        if log.unsynced():
            sync(
                _TailSender(dataclasses.replace(client, timeout_s=min(client.timeout_s, TAIL_S))),
                log,
                home,
                now_s=time.time(),
                records_max=TAIL_RECORDS_MAX,
                out_of_time=lambda: time.monotonic() - started_s > TAIL_S,
            )


class _TailSender:
    """One attempt per record, within the tail's time: the cashier is waiting for the next
    sale, and `paycode-pos sync` retries what this leaves."""

    def __init__(self, client: TerminalClient) -> None:
        self.client = client

    def offline_accept(self, record: Acceptance) -> dict[str, Any]:
        return self.client.offline_accept(record, attempts_max=1)


# -- sync --------------------------------------------------------------------------------------


def _settled_line(record: Acceptance, synced: Synced, payment_id: str | None) -> str:
    amount = money_text(record.amount_minor, record.currency)
    paid = money_text(synced.paid_minor, record.currency)
    loss = money_text(synced.loss_minor, record.currency)
    payment = f", payment {printable(payment_id)}" if payment_id else ""
    return (
        f"{record.id} seq {record.seq} order {printable(record.order)} {amount}: "
        f"{synced.result} (paid {paid}, loss {loss}){payment}"
    )


def _sync_report(outcome: SyncOutcome, keys_note: str) -> tuple[str, dict[str, Any]]:
    lines = [_settled_line(s.record, s.synced, s.payment_id) for s in outcome.settled]
    if outcome.left:
        lines.append(f"{outcome.left} not forwarded yet: {printable(outcome.why)}; run again")
    elif outcome.short:
        lines.append(f"{len(outcome.short)} not paid in full (see above)")
    else:
        lines.append(f"all forwarded ({len(outcome.settled)} this run)")
    if keys_note:
        lines.append(keys_note)
    data = {
        "forwarded": len(outcome.settled),
        "not_in_full": len(outcome.short),
        "left": outcome.left,
        "stopped_at": outcome.stopped_at.id if outcome.stopped_at else None,
        "code": outcome.code or None,
        "why": outcome.why or None,
        "next_try_at_s": outcome.next_try_at_s,
        "results": [
            {
                "id": s.record.id,
                "seq": s.record.seq,
                "order": s.record.order,
                "amount_minor": s.record.amount_minor,
                "result": s.synced.result,
                "paid_minor": s.synced.paid_minor,
                "loss_minor": s.synced.loss_minor,
                "payment_id": s.payment_id,
            }
            for s in outcome.settled
        ],
        "exit_status": outcome.exit_status,
    }
    return "\n".join(lines), data


def cmd_sync(args: argparse.Namespace) -> int:
    configured = settings.load(args.home)
    report_interrupted(args.home)
    client = configured.client()
    with open_log(args.home) as log:
        outcome = sync(client, log, args.home, now_s=time.time(), force=args.force)
    keys_note = ""
    if outcome.stopped_at is None and outcome.next_try_at_s is None:
        keys, why = refresh_keys(client, args.home)
        keys_note = why if keys is None else "offline keys refreshed"
    human, data = _sync_report(outcome, keys_note)
    emit(args, human, data)
    return outcome.exit_status


# -- offline status ----------------------------------------------------------------------------


def cmd_offline_status(args: argparse.Namespace) -> int:
    configured = settings.load(args.home)
    report_interrupted(args.home)
    now_s = time.time()
    try:
        keys = offline_keys.load(args.home)
        keys_error = ""
    except OfflineKeysInvalid as error:
        keys, keys_error = None, error.message
    with open_log(args.home) as log:
        unsynced = log.unsynced()
    total_minor = sum(a.amount_minor for a in unsynced)
    oldest_s = min((a.at_s for a in unsynced), default=None)
    backoff = load_backoff(args.home)
    lines = [
        f"unsynced: {len(unsynced)} sales, {money_text(total_minor, configured.currency)}"
        + ("" if oldest_s is None else f", oldest {round(now_s - oldest_s)} s ago")
    ]
    if keys is None:
        lines.append(f"offline keys: {keys_error or 'none: go online once (paycode-pos sync)'}")
    else:
        limits = keys.limits
        ready = "ready" if keys.ready(now_s) else "TOO OLD: go online once"
        lines.append(f"offline keys: {round(keys.age_s(now_s))} s old, {ready}")
        lines.append(
            f"limits: {money_text(limits.floor_minor, keys.currency)} a sale, "
            f"{money_text(limits.till_total_minor, keys.currency)} and {limits.till_count_max} "
            f"sales unsynced, synced within {limits.unsynced_age_max_s} s"
        )
    if oldest_s is not None and now_s - oldest_s >= SYNC_DEADLINE_S:
        lines.append("SYNC OVERDUE: no offline sale until `paycode-pos sync` goes through")
    if backoff.failures:
        lines.append(
            f"sync backing off: next try in {max(0, round(backoff.next_try_at_s - now_s))} s"
        )
    data = {
        "unsynced": [
            {"id": a.id, "seq": a.seq, "order": a.order, "amount_minor": a.amount_minor,
             "currency": a.currency, "at_s": a.at_s}
            for a in unsynced
        ],
        "unsynced_minor": total_minor,
        "keys": None if keys is None else keys_summary(keys),
        "keys_error": keys_error or None,
        "sync_next_try_at_s": backoff.next_try_at_s if backoff.failures else None,
        "sync_overdue": oldest_s is not None and now_s - oldest_s >= SYNC_DEADLINE_S,
    }  # fmt: skip
    emit(args, "\n".join(lines), data)
    return 0


# -- query ---------------------------------------------------------------------------------------


def query_offline(args: argparse.Namespace, order: str) -> bool:
    """`query --order ID` for an order paid offline: the log answers (the line may be down).
    False when the log has no acceptance for it."""
    if not (args.home / LOG_FOLDER).is_dir():
        return False
    report_interrupted(args.home)
    with open_log(args.home) as log:
        record = log.by_order(order)
        synced = None if record is None else log.synced(record.id)
    if record is None:
        return False
    amount = money_text(record.amount_minor, record.currency)
    state = "not synced yet" if synced is None else f"synced: {synced.result}"
    human = f"{record.id}  paid offline {amount}  order {printable(record.order)}  ({state})"
    data = {
        "offline_acceptance": {
            "id": record.id, "seq": record.seq, "order": record.order,
            "amount_minor": record.amount_minor, "currency": record.currency,
            "at_s": record.at_s, "cert": record.cert[:8], "counter": record.counter,
            "synced": None if synced is None else {
                "result": synced.result, "paid_minor": synced.paid_minor,
                "loss_minor": synced.loss_minor,
            },
        },
        "payments": [],
    }  # fmt: skip
    emit(args, human, data)
    return True


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "sync",
        help="forward the sales taken offline to the server",
        description="Forward every sale accepted offline, in order, and record the server's "
        f"answer. Exit 0 when all are forwarded and paid in full, {EXIT_SETTLED_SHORT} when "
        "all are forwarded but some were paid short, refused or are duplicates (each "
        f"printed), {EXIT_NOT_FORWARDED} when some are not forwarded yet (run again: nothing "
        "is lost). Meant for cron or a timer every minute; failed runs back off (30 s "
        "doubling, at most 900 s).",
    )
    p.add_argument("--force", action="store_true", help="try now, whatever the back-off says")
    p.set_defaults(func=cmd_sync)
    p = sub.add_parser("offline", help="the till's offline state")
    inner = p.add_subparsers(metavar="WHAT", required=True)
    status = inner.add_parser(
        "status",
        help="what waits to sync, the keys' age, the limits",
        description=(
            "What this till holds for offline sales: the sales accepted offline and not yet "
            "synced (count, total, the oldest), how old its copy of the server's offline keys "
            "is (older than 48 h: no offline sale until the till goes online once), and the "
            "limits the server set: the most one offline sale may be, and the unsynced total "
            "and count after which the till takes no offline sale until it syncs. A sale a "
            "crash interrupted is reported first."
        ),
    )
    status.set_defaults(func=cmd_offline_status)
    add_json_flag(status)
