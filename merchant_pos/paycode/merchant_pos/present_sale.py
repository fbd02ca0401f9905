"""A sale the customer pays by scanning the till (`charge --present`): the order's QR on screen.

With a display, the till's window shows the QR large with the amount and a countdown
(display.render_present), then the result screen; Esc or q in the window, like Ctrl-C, stops
waiting and cancels the order. Without a display, the QR is drawn on stderr with half blocks,
its text under it, and the seconds left every few seconds. The flow is merchant_pos.present.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paycode.appkit.console import printable
from paycode.appkit.rendering import terminal_qr
from paycode.merchant_pos.display import (
    Bgr,
    TillWindow,
    display_available,
    render_outcome,
    render_present,
    screenshot,
)
from paycode.merchant_pos.present import PRESENT_POLL_S, OrderClient, PresentWait, present_order
from paycode.merchant_pos.till import Sale, SaleOutcome

WAIT_REPORT_S = 10.0
"""Without a window, the seconds left are printed this often."""


def charge_by_presenting(
    client: OrderClient,
    sale: Sale,
    *,
    wait_s: float,
    headless: bool,
    hold_s: float,
    windowed: bool = False,
    screenshot_path: Path | None = None,
    settled: Callable[[], None] = lambda: None,
) -> SaleOutcome:
    """Present the sale's order and wait for its payment: in the till's window when there is a
    display (display_available), else on stderr. `settled` is told when the outcome is known
    (merchant_pos.stopping: a stop no longer cancels anything)."""
    if not display_available(headless):
        outcome = present_order(client, sale, _on_stderr(sale, wait_s))
        settled()
        return outcome
    till_window = TillWindow(windowed=windowed)
    try:
        screen = PresentScreen(till_window, sale, wait_s, screenshot_path)
        outcome = present_order(client, sale, screen.wait())
        settled()
        till_window.hold(render_outcome(outcome, till_window.size), hold_s)
        return outcome
    finally:
        till_window.close()


def _order_text(sale: Sale, order: dict[str, Any]) -> str:
    return f"order {sale.order_id} ({order.get('order_id')})"


def _on_stderr(sale: Sale, wait_s: float) -> PresentWait:
    told: list[float] = []

    def on_shown(order: dict[str, Any]) -> None:
        payload = str(order.get("qr_payload", ""))
        print(f"PAY {sale.amount} {sale.currency}: the customer scans this code", file=sys.stderr)
        print(terminal_qr(payload), file=sys.stderr)
        print(f"{printable(payload)}\n{printable(_order_text(sale, order))}", file=sys.stderr)

    def on_waiting(remaining_s: float) -> None:
        if not told or told[-1] - remaining_s >= WAIT_REPORT_S:
            print(f"  waiting for the payment: cancels in {remaining_s:.0f} s", file=sys.stderr)
            told.append(remaining_s)

    poll_s = min(PRESENT_POLL_S, wait_s)
    return PresentWait(wait_s=wait_s, poll_s=poll_s, on_shown=on_shown, on_waiting=on_waiting)


@dataclass
class PresentScreen:
    """The window while the till waits: the order's QR, redrawn with the seconds left before
    each poll, kept responsive between polls. Esc or q stops waiting (the order is cancelled)."""

    window: TillWindow
    sale: Sale
    wait_s: float
    screenshot_path: Path | None = None
    payload: str = ""
    order_text: str = ""
    image: Bgr | None = None

    def wait(self) -> PresentWait:
        poll_s = min(PRESENT_POLL_S, self.wait_s)
        return PresentWait(
            wait_s=self.wait_s,
            poll_s=poll_s,
            on_shown=self.on_shown,
            on_waiting=self.draw,
            sleep=self.sleep,
        )

    def on_shown(self, order: dict[str, Any]) -> None:
        self.payload = str(order.get("qr_payload", ""))
        self.order_text = _order_text(self.sale, order)
        self.draw(self.wait_s)
        if self.screenshot_path is not None:  # tests: what the customer's phone would see
            assert self.image is not None
            screenshot(self.window, self.image, self.screenshot_path)

    def draw(self, remaining_s: float) -> None:
        amount_text = f"{self.sale.amount} {self.sale.currency}"
        self.image = render_present(
            self.payload, amount_text, remaining_s, self.order_text, self.window.size
        )
        if self.window.show(self.image):
            raise KeyboardInterrupt  # Esc or q: the cashier stops waiting, as with Ctrl-C

    def sleep(self, seconds: float) -> None:
        assert self.image is not None
        if self.window.hold(self.image, seconds):
            raise KeyboardInterrupt  # Esc or q: the cashier stops waiting, as with Ctrl-C
