"""The till's screen: the live camera frame with the code outlined, then PAID or the reason.

Rendering is pure (numpy in, numpy out) so tests check pictures without a display; `TillWindow`
only puts those pictures in an OpenCV window. Without a display the till prints instead
(`display_available`).
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from paycode.merchant_pos.messages import cashier_message
from paycode.merchant_pos.scanloop import Detection
from paycode.merchant_pos.till import SaleOutcome
from paycode.shared.codes import ErrorCode

Bgr = NDArray[np.uint8]

WINDOW_TITLE = "Paycode POS"
OUTCOME_SIZE_PX = (1280, 720)  # width, height: the camera frame's size, so the window is steady
GREEN = (60, 170, 40)
RED = (40, 40, 200)
AMBER = (0, 150, 230)
WHITE = (255, 255, 255)
OUTLINE_PX = 4
FONT = cv2.FONT_HERSHEY_DUPLEX
MESSAGE_CHARS_PER_LINE = 44
MESSAGE_LINES_MAX = 4


def display_available(headless: bool) -> bool:
    """A window only when asked for and an X display exists (DISPLAY set)."""
    return not headless and bool(os.environ.get("DISPLAY"))


def _banner(image: Bgr, text: str, *, top_px: int, scale: float, thickness: int) -> None:
    """Centered text with a dark outline, readable on any background."""
    (width, height), _ = cv2.getTextSize(text, FONT, scale, thickness)
    x = max(0, (image.shape[1] - width) // 2)
    y = top_px + height
    outline = thickness + 2 + round(2 * scale)
    cv2.putText(image, text, (x, y), FONT, scale, (0, 0, 0), outline, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), FONT, scale, WHITE, thickness, cv2.LINE_AA)


def render_scan_frame(frame: Bgr, detections: Sequence[Detection], amount_text: str) -> Bgr:
    """The camera frame, each payment code outlined in green, the amount to pay on top."""
    shown = frame.copy()
    for detection in detections:
        points = np.array(detection.corners, dtype=np.int32).reshape(-1, 1, 2)
        cv2.polylines(shown, [points], isClosed=True, color=GREEN, thickness=OUTLINE_PX)
    _banner(shown, f"PAY {amount_text}", top_px=20, scale=1.6, thickness=3)
    hint = "code found - charging..." if detections else "show the payment code to the camera"
    _banner(shown, hint, top_px=shown.shape[0] - 70, scale=0.9, thickness=2)
    return shown


def render_outcome(outcome: SaleOutcome) -> Bgr:
    """A full screen the cashier reads from a step away: green PAID, or red with the reason."""
    width, height = OUTCOME_SIZE_PX
    colour = GREEN if outcome.paid else AMBER if outcome.code == ErrorCode.OUTCOME_UNKNOWN else RED
    image = np.full((height, width, 3), colour, dtype=np.uint8)
    _banner(image, outcome.headline, top_px=height // 4, scale=3.2, thickness=7)
    if not outcome.paid:
        amount_text = f"{outcome.amount} {outcome.currency}"
        _banner(image, amount_text, top_px=height // 2 - 40, scale=1.6, thickness=3)
    lines = textwrap.wrap(outcome.message, MESSAGE_CHARS_PER_LINE)[:MESSAGE_LINES_MAX]
    for index, line in enumerate(lines):
        _banner(image, line, top_px=height // 2 + 50 + 48 * index, scale=1.1, thickness=2)
    order_text = f"order {outcome.merchant_order_id}"
    _banner(image, order_text, top_px=height - 60, scale=0.7, thickness=1)
    return image


def render_waiting(amount_text: str, remaining_s: float) -> Bgr:
    """Amber: the payment is above the customer's password-free limit and waits for their PIN."""
    width, height = OUTCOME_SIZE_PX
    image = np.full((height, width, 3), AMBER, dtype=np.uint8)
    _banner(image, "WAITING", top_px=height // 4, scale=3.2, thickness=7)
    _banner(image, amount_text, top_px=height // 2 - 40, scale=1.6, thickness=3)
    message = cashier_message(ErrorCode.CONFIRMATION_REQUIRED)
    lines = textwrap.wrap(message, MESSAGE_CHARS_PER_LINE)[:MESSAGE_LINES_MAX]
    for index, line in enumerate(lines):
        _banner(image, line, top_px=height // 2 + 50 + 48 * index, scale=1.1, thickness=2)
    _banner(image, f"cancels in {remaining_s:.0f} s", top_px=height - 60, scale=0.9, thickness=2)
    return image


class TillWindow:
    """An OpenCV window. `pump` lets the GUI draw; keys are read so the window stays live."""

    def __init__(self) -> None:
        cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_AUTOSIZE)

    def show(self, image: Bgr) -> None:
        cv2.imshow(WINDOW_TITLE, image)
        cv2.waitKey(1)

    def hold(self, image: Bgr, seconds: float) -> None:
        """Show `image` for `seconds` (the result screen), keeping the window responsive."""
        self.show(image)
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if cv2.waitKey(50) in (27, ord("q")):  # Esc or q dismisses early
                return

    def close(self) -> None:
        cv2.destroyWindow(WINDOW_TITLE)
        cv2.waitKey(1)

    def reopen(self) -> None:
        """Close the window and open a new one in its place (it shows nothing until `show`)."""
        self.close()
        cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_AUTOSIZE)
