"""Ctrl-C and SIGTERM during a sale: the till never ends without saying how the sale ended
(docs/pos.md "How a sale ends").

Before the charge is sent, a stop raises KeyboardInterrupt: the sale is cancelled and nothing
was charged. Once the charge is on its way, a stop must not lose its answer (the customer may
already be debited): the till goes on waiting for it, for at most `stop_wait_s`, and a payment
that waits for the customer's PIN is cancelled at once (`stopped()`). A second stop, or the end
of that wait, raises KeyboardInterrupt: the till then ends with what it knows, OUTCOME UNKNOWN
with the order id to query at worst. Once the outcome is known, stops are ignored until it is
printed: that is the one thing left to do. Esc or q in the till's window is a stop too
(`stop`).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

STOP_WAIT_S = 10.0
"""After a stop, how long the till still waits for the answer to a charge already sent."""
STOP_WAIT_S_MAX = 60.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Phase:
    SCANNING = "scanning"
    CHARGING = "charging"
    SETTLED = "settled"


@dataclass
class SaleStops:
    """SIGINT and SIGTERM for the length of one sale (a context manager; main thread only:
    Python runs signal handlers there)."""

    stop_wait_s: float = STOP_WAIT_S
    stops: int = 0
    phase: str = Phase.SCANNING
    deadline_passed: bool = False
    _armed: bool = field(default=False, repr=False)
    """The stop's wait is on the interval timer (only then is the timer ours to clear)."""
    _previous: dict[int, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        assert 0 < self.stop_wait_s <= STOP_WAIT_S_MAX

    def __enter__(self) -> SaleStops:
        if threading.current_thread() is threading.main_thread():
            for number in (*STOP_SIGNALS, signal.SIGALRM):
                self._previous[number] = signal.getsignal(number)
            for number in STOP_SIGNALS:
                signal.signal(number, self._on_stop)
            signal.signal(signal.SIGALRM, self._on_deadline)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._previous:
            self._disarm()
            for number, handler in self._previous.items():
                signal.signal(number, handler)
            self._previous.clear()

    def stopped(self) -> bool:
        """Whether the cashier asked the sale to stop (a wait in progress ends early)."""
        return self.stops > 0

    @contextmanager
    def charging(self) -> Iterator[None]:
        """While a charge may be on its way to the server, up to its final outcome."""
        self.phase = Phase.CHARGING
        try:
            yield
        finally:
            self.phase = Phase.SETTLED
            self._disarm()

    def _disarm(self) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._armed = False

    def settled(self) -> None:
        """The outcome is known: from now on a stop waits for it to be printed."""
        self.phase = Phase.SETTLED

    def stop(self) -> None:
        """The cashier's stop from the till's window (Esc or q): exactly what Ctrl-C does."""
        self._on_stop(signal.SIGINT, None)

    def _on_stop(self, _number: int, _frame: FrameType | None) -> None:
        self.stops += 1
        if self.phase == Phase.SETTLED:
            return
        if self.phase == Phase.SCANNING or self.stops > 1:
            raise KeyboardInterrupt
        signal.setitimer(signal.ITIMER_REAL, self.stop_wait_s)
        self._armed = True
        # The main thread may be inside a write to stderr itself (the waiting countdown): the
        # buffered writer refuses a reentrant call, and this line is not worth the sale.
        with contextlib.suppress(RuntimeError):
            print(
                f"Stopping: settling the charge already sent (at most {self.stop_wait_s:g} s; "
                "Ctrl-C again stops waiting, and the order is then queried later)",
                file=sys.stderr,
            )

    def _on_deadline(self, _number: int, _frame: FrameType | None) -> None:
        if self.phase == Phase.CHARGING:
            self.deadline_passed = True
            raise KeyboardInterrupt
