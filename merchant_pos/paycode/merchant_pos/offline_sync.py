"""Forwarding the till's offline acceptances to the server (docs/offline.md section 5).

Every `accept` record without a `synced` one goes, in `seq` order, one request each, as
`POST /v1/offline/acceptances` with its id as the Idempotency-Key; the server's answer is
appended as a `synced` record (fsynced) before the next is sent. The server checks the chain,
so a record that was not answered stops the run: nothing after it is sent until it is.

What stops a run, and what is final:

- no answer (network, 5xx after the terminal client's bounded retries), `409
  idempotency_in_progress`, `409 offline_out_of_order` / `offline_chain_broken` (the server
  stored nothing and expects the till to retry), `429`: the run stops, the record stays
  unsynced, `offline/sync.json` holds when to try again (30 s, doubling per failed run, at most
  900 s);
- any other 4xx (a refusal of the request itself: the till's key or clock, a body the server
  will not read): final for this run's request, but the record is *not* marked synced. A
  `synced` record states what the server booked (paid and loss add up to the amount), and a
  refused request booked nothing and took no `seq`: skipping it would break the chain for
  every later record. The run stops with the server's code, exit 6, for an operator;
- an answer `result` (paid, paid_short, unpaid, late, refused_invalid, duplicate,
  duplicate_order): final, stored. Only `paid` in full counts as settled for exit 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from paycode.appkit.private_files import write_private
from paycode.merchant_pos.offline_log import LOG_FOLDER, OfflineLog, OfflineRecordInvalid
from paycode.merchant_pos.offline_records import Acceptance, Synced
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ServerRejected, ServerUnreachable

SYNC_FILE = "sync.json"
FORMAT = 1
BACKOFF_FIRST_S = 30
BACKOFF_MAX_S = 900
FAILURES_MAX = 64
"""The stored count of failed runs is capped: past 5 doublings it changes nothing."""
RECORDS_MAX = 20_000
"""A run forwards at most a whole log (offline_log.RECORDS_MAX)."""
RETRY_LATER = frozenset(
    {
        ErrorCode.IDEMPOTENCY_IN_PROGRESS,
        ErrorCode.RATE_LIMITED,
        ErrorCode.DATABASE_BUSY,
        ErrorCode.OFFLINE_OUT_OF_ORDER,
        ErrorCode.OFFLINE_CHAIN_BROKEN,
    }
)
"""Refusals that say "not now": the server stored nothing and the same request may pass later."""

EXIT_SYNCED = 0
EXIT_SETTLED_SHORT = 5
EXIT_NOT_FORWARDED = 6


class AcceptanceSender(Protocol):
    def offline_accept(self, record: Acceptance) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Settled:
    """One acceptance the server answered, as the run reports it."""

    record: Acceptance
    synced: Synced
    payment_id: str | None

    @property
    def in_full(self) -> bool:
        return self.synced.result == "paid" and self.synced.paid_minor == self.record.amount_minor


@dataclass
class SyncOutcome:
    """What one run did: the CLI's exit status and lines come from here."""

    settled: list[Settled] = field(default_factory=list)
    left: int = 0
    """Acceptances still unsynced after the run."""
    stopped_at: Acceptance | None = None
    why: str = ""
    """Why the run stopped early (a code and the server's words), or why it did not start."""
    code: str = ""
    next_try_at_s: float | None = None

    @property
    def short(self) -> list[Settled]:
        """Answered, but not paid in full: paid short, refused, duplicates, late."""
        return [s for s in self.settled if not s.in_full]

    @property
    def exit_status(self) -> int:
        """0 every record forwarded and paid in full, 5 all forwarded but some not in full, 6
        some not forwarded yet (run again: nothing is lost)."""
        if self.left:
            return EXIT_NOT_FORWARDED
        return EXIT_SETTLED_SHORT if self.short else EXIT_SYNCED


# -- the back-off file -----------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    failures: int = 0
    next_try_at_s: float = 0.0

    def after_failure(self, now_s: float) -> Backoff:
        failures = min(self.failures + 1, FAILURES_MAX)
        wait_s = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(failures - 1, 10))
        return Backoff(failures, now_s + wait_s)


def sync_path(home: Path) -> Path:
    return home / LOG_FOLDER / SYNC_FILE


def load_backoff(home: Path) -> Backoff:
    """The stored back-off; a missing or unreadable file is no back-off (it only delays)."""
    try:
        data = json.loads(sync_path(home).read_bytes()[:4096])
        failures, next_try_at_s = data["failures"], data["next_try_at_s"]
        if (
            type(failures) is int
            and 0 <= failures <= FAILURES_MAX
            and isinstance(next_try_at_s, int | float)
            and math.isfinite(next_try_at_s)
        ):
            return Backoff(failures, float(next_try_at_s))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return Backoff()


def save_backoff(home: Path, backoff: Backoff) -> None:
    document = {"failures": backoff.failures, "next_try_at_s": backoff.next_try_at_s, "v": FORMAT}
    write_private(sync_path(home), json.dumps(document, sort_keys=True).encode())


# -- one run ---------------------------------------------------------------------------------


def _answer(reply: dict[str, Any]) -> tuple[str, int, int, str | None]:
    """The server's answer; ValueError when it is not one a `synced` record can hold."""
    result, paid, loss = reply.get("result"), reply.get("paid_minor"), reply.get("loss_minor")
    if not isinstance(result, str) or type(paid) is not int or type(loss) is not int:
        raise ValueError("the answer lacks result, paid_minor or loss_minor")
    payment_id = reply.get("payment_id")
    return result, paid, loss, payment_id if isinstance(payment_id, str) else None


def forward(
    client: AcceptanceSender,
    log: OfflineLog,
    *,
    records_max: int = RECORDS_MAX,
    out_of_time: Callable[[], bool] = lambda: False,
) -> SyncOutcome:
    """Sends the log's unsynced acceptances in seq order until one is not answered (or
    `records_max` went, or `out_of_time()`); each answer is in the log when the next goes."""
    outcome = SyncOutcome()
    pending = log.unsynced()
    for record in pending[: max(0, min(records_max, RECORDS_MAX))]:
        if out_of_time():
            break
        try:
            reply = client.offline_accept(record)
            result, paid, loss, payment_id = _answer(reply)
            synced = log.mark_synced(record.id, result=result, paid_minor=paid, loss_minor=loss)
        except ServerRejected as refused:
            how = "try again later" if refused.code in RETRY_LATER else "operator: look"
            outcome.stopped_at, outcome.code = record, refused.code
            outcome.why = f"{refused.code} ({refused.status}): {refused.message}; {how}"
            break
        except ServerUnreachable as silent:
            outcome.stopped_at, outcome.code = record, silent.code
            outcome.why = silent.message
            break
        except (ValueError, OfflineRecordInvalid) as bad:
            why = bad.message if isinstance(bad, OfflineRecordInvalid) else str(bad)
            outcome.stopped_at, outcome.code = record, ErrorCode.INVALID_REQUEST
            outcome.why = f"the server's answer cannot be stored: {why}"
            break
        outcome.settled.append(Settled(record, synced, payment_id))
    outcome.left = len(log.unsynced())
    return outcome


def sync(
    client: AcceptanceSender,
    log: OfflineLog,
    home: Path,
    *,
    now_s: float,
    force: bool = False,
    records_max: int = RECORDS_MAX,
    out_of_time: Callable[[], bool] = lambda: False,
) -> SyncOutcome:
    """One run of `paycode-pos sync`: skipped while the back-off holds (unless `force`), the
    back-off doubled when the run leaves records unsent, cleared when it sent all; a log all
    synced and old enough is rotated (offline_log.OfflineLog.rotate)."""
    backoff = load_backoff(home)
    if not log.unsynced():
        if backoff.failures:
            save_backoff(home, Backoff())
        _tidy(log, now_s)
        return SyncOutcome()
    if not force and now_s < backoff.next_try_at_s:
        outcome = SyncOutcome(left=len(log.unsynced()), next_try_at_s=backoff.next_try_at_s)
        outcome.code = ErrorCode.SERVER_UNREACHABLE
        outcome.why = f"backing off after {backoff.failures} failed runs"
        return outcome
    outcome = forward(client, log, records_max=records_max, out_of_time=out_of_time)
    if outcome.stopped_at is not None:
        backoff = backoff.after_failure(now_s)
        save_backoff(home, backoff)
        outcome.next_try_at_s = backoff.next_try_at_s
    elif backoff.failures:
        save_backoff(home, Backoff())
    if not outcome.left:
        _tidy(log, now_s)
    return outcome


def _tidy(log: OfflineLog, now_s: float) -> None:
    """Everything is synced: the log rotates once its newest sale is older than any
    certificate's life, and rotated logs past their keeping go (offline_log)."""
    log.rotate(now_s=int(now_s))
    log.prune(now_s=int(now_s))
