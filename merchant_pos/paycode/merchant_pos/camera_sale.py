"""A sale from frames (camera, video, image): scan, show, charge once, show the outcome.

With a display, an OpenCV window shows each frame with the code outlined and the amount, then
the result screen; without one, the till prints the same outcome (merchant_pos.cli). Esc or q
in the window while scanning or waiting for the customer stops the sale as Ctrl-C does.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from paycode.merchant_pos.display import (
    Bgr,
    TillWindow,
    display_available,
    render_outcome,
    render_scan_frame,
    render_waiting,
    screenshot,
)
from paycode.merchant_pos.frames import open_source
from paycode.merchant_pos.messages import cashier_message
from paycode.merchant_pos.scanloop import Detection, NoPaymentCode, Scanner
from paycode.merchant_pos.stopping import SaleStops
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.merchant_pos.till import (
    ConfirmWait,
    Sale,
    SaleOutcome,
    charge_code,
    confirm_wait_on_stderr,
)


def charge_from_frames(
    client: TerminalClient,
    sale: Sale,
    args: argparse.Namespace,
    stops: SaleStops | None = None,
    on_scanning: Callable[[], None] = lambda: None,
) -> SaleOutcome:
    """The sale's outcome; KeyboardInterrupt (a stop) only before the charge is sent.
    `on_scanning` is told once the source is open."""
    window = TillWindow(windowed=args.windowed) if display_available(args.headless) else None
    try:
        wait = _wait_on_screen(window, sale, args.confirm_wait_s, stops)
        outcome = _scan_and_charge(
            client,
            sale,
            args.source,
            args.timeout_s,
            window=window,
            wait=wait,
            stops=stops,
            on_scanning=on_scanning,
        )
        if window is not None:
            _show_outcome(window, outcome, args.hold_s, args.screenshot)
        return outcome
    finally:
        if window is not None:
            window.close()


def _cashier_stop(stops: SaleStops | None) -> None:
    """Esc or q in the window: the same stop as Ctrl-C (merchant_pos.stopping)."""
    if stops is None:
        raise KeyboardInterrupt
    stops.stop()


def _wait_on_screen(
    window: TillWindow | None, sale: Sale, wait_s: float, stops: SaleStops | None
) -> ConfirmWait:
    """While the customer confirms, stderr says why (always: docs/pos.md) and the window, if
    there is one, shows it with the seconds left (and stays responsive meanwhile)."""
    if window is None:
        return confirm_wait_on_stderr(wait_s)
    why: list[str] = []
    shown: list[Bgr] = []

    def on_waiting(remaining_s: float) -> None:
        amount = f"{sale.amount} {sale.currency}"
        shown[:] = [render_waiting(amount, remaining_s, why[0] if why else None, window.size)]
        if window.show(shown[0]):
            _cashier_stop(stops)

    def sleep(seconds: float) -> None:
        if not shown:
            time.sleep(seconds)
        elif window.hold(shown[0], seconds):
            _cashier_stop(stops)

    return dataclasses.replace(
        confirm_wait_on_stderr(wait_s, on_pending=why.append), on_waiting=on_waiting, sleep=sleep
    )


def _scan_and_charge(
    client: TerminalClient,
    sale: Sale,
    source: str,
    timeout_s: float,
    *,
    window: TillWindow | None,
    wait: ConfirmWait,
    stops: SaleStops | None,
    on_scanning: Callable[[], None],
) -> SaleOutcome:
    amount_text = f"{sale.amount} {sale.currency}"
    seen_at: dict[int, float] = {}

    def on_frame(frame: Bgr, detections: list[Detection]) -> None:
        if detections:
            seen_at.setdefault(detections[0].frame_index, time.monotonic())
        if window is not None and window.show(
            render_scan_frame(frame, detections, amount_text, window.size)
        ):
            _cashier_stop(stops)  # while scanning: stopped, nothing charged

    with open_source(source) as frames:
        on_scanning()
        try:
            found = Scanner().first_payment_code(
                frames, clock=time.monotonic, timeout_seconds=timeout_s, on_frame=on_frame
            )
        except NoPaymentCode as error:
            return sale.outcome(False, error.code, f"{cashier_message(error.code)} ({error})")
    outcome = charge_code(client, found.text, sale, wait, stops)
    read_at = seen_at.get(found.frame_index, time.monotonic())
    return dataclasses.replace(outcome, scan_to_answer_ms=(time.monotonic() - read_at) * 1000)


def _show_outcome(
    window: TillWindow, outcome: SaleOutcome, hold_s: float, screenshot_path: Path | None
) -> None:
    image = render_outcome(outcome, window.size)
    if screenshot_path is not None:
        screenshot(window, image, screenshot_path)
    window.hold(image, hold_s)
