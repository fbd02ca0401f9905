"""The offline side of `paycode-pos charge` (docs/offline.md 4.2 to 4.4).

`OfflineCharge` is a sale's fallback (`Sale.offline`): when the online attempt ended with the
line down, it marks the sale as deciding (`offline/sale.pending`), runs the decision of
merchant_pos.offline_sale under the log's lock, and turns its verdict into the outcome the
cashier sees. The lock and the marker are kept until `close`, which the command calls once the
outcome is shown: a till killed in between finds the marker at its next start and reports the
sale from the log (`recover_interrupted`), so PAID OFFLINE is never shown twice nor lost.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from paycode.appkit.private_files import write_private
from paycode.merchant_pos import offline_keys
from paycode.merchant_pos.messages import cashier_message, unknown_message
from paycode.merchant_pos.offline_log import (
    LOG_FOLDER,
    PENDING_FILE,
    OfflineLog,
    open_log,
)
from paycode.merchant_pos.offline_outcome import OFFLINE_MESSAGE, PAID_OFFLINE, OfflineReceipt
from paycode.merchant_pos.offline_records import Acceptance
from paycode.merchant_pos.offline_sale import (
    OfflineRequest,
    SaleRefused,
    decide,
    is_offline_code,
)
from paycode.merchant_pos.till import Sale, SaleOutcome
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import PaycodeError
from paycode.shared.money import Money, format_money, parse_amount

ASK_OFFLINE_CODE = "Server offline: ask for an OFFLINE code."
CERT_SHOWN_HEX = 8
LINE_FILE = "line.json"
LINE_DOWN_FRESH_S = 60
"""4.2 step 1: for this long after a failed contact a v4 code skips the online attempt (its
retries cost the customer seconds, or minutes when packets vanish)."""


def money_text(amount_minor: int, currency: str) -> str:
    return format_money(Money(amount_minor, currency))


def unsynced_text(log: OfflineLog, currency: str) -> tuple[int, str]:
    """How many acceptances wait to sync, and their sum ("212.50 CNY")."""
    unsynced = log.unsynced()
    return len(unsynced), money_text(sum(a.amount_minor for a in unsynced), currency)


class OfflineCharge:
    """One sale's offline decision, with the log held from the decision to `close`."""

    def __init__(self, home: Path, clock: Callable[[], float] = time.time) -> None:
        self.home = home
        self.clock = clock
        self._stack = ExitStack()
        self._log: OfflineLog | None = None
        self._skipped = False

    def skip_online(self, code: str) -> bool:
        if not is_offline_code(code):
            return False
        down_at_s = _line_down_at(self.home)
        self._skipped = down_at_s is not None and 0 <= self.clock() - down_at_s < LINE_DOWN_FRESH_S
        return self._skipped

    def __call__(self, code: str, sale: Sale, outcome: SaleOutcome) -> SaleOutcome:
        """Never raises: a disk that fails while the sale is logged leaves the sale's end
        unknown (the record may or may not have reached it), which `query` then tells."""
        try:
            # Noted only by a till that sells offline; a skipped attempt says nothing new.
            if not self._skipped and offline_keys.keys_path(self.home).is_file():
                _write_line_down(self.home, self.clock())
            if not is_offline_code(code):
                return self._hint(outcome)
            return self._decide(code, sale, outcome)
        except PaycodeError as error:  # a record the log will not take: nothing was written
            return _refused(sale, outcome, SaleRefused(error.code, error.message))
        except OSError as error:
            why = f"The till's disk failed while it logged the offline sale ({error.strerror})."
            return sale.outcome(
                False, ErrorCode.OUTCOME_UNKNOWN, unknown_message(sale.order_id, why)
            )

    def _decide(self, code: str, sale: Sale, outcome: SaleOutcome) -> SaleOutcome:
        # A damaged keys copy (offline_not_ready) or log (offline_log_damaged) raises a
        # PaycodeError with its code: the caller refuses with it.
        keys = offline_keys.load(self.home)
        log = self._open()
        log.begin_sale(sale.order_id)
        local_now_s = self.clock()
        request = OfflineRequest(
            code_text=code,
            amount_minor=parse_amount(sale.amount, sale.currency).amount_minor,
            currency=sale.currency,
            order=sale.order_id,
            now_s=local_now_s if keys is None else keys.server_time(local_now_s),
            local_now_s=local_now_s,
        )
        decision = decide(request, keys, log)
        if isinstance(decision, SaleRefused):
            return _refused(sale, outcome, decision)
        return paid_offline(sale, decision, log)

    def _open(self) -> OfflineLog:
        if self._log is None:
            self._log = self._stack.enter_context(open_log(self.home))
        return self._log

    def _hint(self, outcome: SaleOutcome) -> SaleOutcome:
        """A v1-v3 code with nothing sent: NOT PAID as ever, and the till that can sell
        offline says how (an outcome unknown may be paid: no second code is asked for)."""
        if outcome.code != ErrorCode.SERVER_UNREACHABLE:
            return outcome
        if not offline_keys.keys_path(self.home).is_file():
            return outcome
        return dataclasses.replace(
            outcome, message=f"{outcome.message} {ASK_OFFLINE_CODE}", hint=ASK_OFFLINE_CODE
        )

    def close(self) -> None:
        """The outcome was shown: the sale is no longer deciding; the lock is released."""
        try:
            if self._log is not None:
                self._log.end_sale()
        finally:
            self._log = None
            self._stack.close()


def _line_path(home: Path) -> Path:
    return home / LOG_FOLDER / LINE_FILE


def _line_down_at(home: Path) -> float | None:
    """When the till's last contact failed; None when it did not lately (or the note is bad:
    it only saves time, so a damaged one is simply not believed)."""
    try:
        value = json.loads(_line_path(home).read_bytes()[:256]).get("down_at_s")
    except (OSError, ValueError, AttributeError):
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _write_line_down(home: Path, now_s: float) -> None:
    write_private(_line_path(home), json.dumps({"down_at_s": now_s, "v": 1}).encode())


def line_is_up(home: Path) -> None:
    """An online answer came: the next v4 code tries online first again."""
    _line_path(home).unlink(missing_ok=True)


def paid_offline(sale: Sale, record: Acceptance, log: OfflineLog) -> SaleOutcome:
    count, total = unsynced_text(log, record.currency)
    receipt = OfflineReceipt(record.id, record.cert[:CERT_SHOWN_HEX], record.counter, count, total)
    message = f"{OFFLINE_MESSAGE} ref {record.id} ({receipt.note})"
    return dataclasses.replace(
        sale.outcome(True, PAID_OFFLINE, message), offline=receipt, hint=receipt.note
    )


def _refused(sale: Sale, online: SaleOutcome, refused: SaleRefused) -> SaleOutcome:
    """NOT PAID with the offline reason; but an online attempt that may have gone through
    stays OUTCOME UNKNOWN (asking for another payment could charge the customer twice)."""
    said = f"{cashier_message(refused.code)} ({refused.detail})"
    if online.code == ErrorCode.OUTCOME_UNKNOWN:
        return dataclasses.replace(online, message=f"{online.message} Offline: {said}")
    return sale.outcome(False, refused.code, said)


def recover_interrupted(home: Path) -> str | None:
    """The line reporting a sale a crash interrupted while it decided offline (4.3), or None.
    Looks for the marker before taking the lock, so a sale does not wait for a running sync
    when nothing was interrupted."""
    if not (home / LOG_FOLDER / PENDING_FILE).is_file():
        return None
    with open_log(home) as log:
        interrupted = log.interrupted_sale()
        if interrupted is None:
            return None
        record = interrupted.acceptance
        if record is None:
            line = (
                f"NOT PAID (interrupted sale, order {interrupted.order}): nothing was accepted "
                "offline. If its online attempt may have gone through, query the order once "
                "the line is back."
            )
        else:
            amount = money_text(record.amount_minor, record.currency)
            line = (
                f"PAID OFFLINE (recovered) {amount}, order {record.order}, ref {record.id}: "
                f"{OFFLINE_MESSAGE}"
            )
        log.end_sale()
        return line
