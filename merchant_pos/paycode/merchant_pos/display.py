"""The till's screen: the live camera frame with the code outlined, or the order's QR for the
customer to scan, then PAID or the reason.

Rendering is pure (numpy in, numpy out) so tests check pictures without a display; `TillWindow`
only puts those pictures in an OpenCV window. Without a display the till prints instead
(`display_available`).
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from paycode.appkit.rendering import qr_image
from paycode.merchant_pos.messages import cashier_message
from paycode.merchant_pos.opencv import cv2
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
INK = (20, 20, 20)
"""The band behind the amount on the present screen: white on near-black reads from afar."""
OUTLINE_PX = 4
FONT = cv2.FONT_HERSHEY_DUPLEX
MESSAGE_CHARS_PER_LINE = 44
MESSAGE_LINES_MAX = 4
PRESENT_MARGIN_PX = 40
"""White around the order's QR (past its own quiet zone) and around the panel beside it."""
PRESENT_BOX_PX_MIN = 3
"""Fewest screen pixels per QR module: below that a phone camera at arm's length struggles."""
PRESENT_PANEL_PX_MIN = 480
"""Room beside the QR for the amount band."""
PRESENT_HINT = "Scan with your Paycode wallet"
SCREENSHOT_SETTLE_S = 0.5
"""Time for the window manager-less X server to map and paint the window before a grab."""
SCREENSHOT_ATTEMPTS_MAX = 5
"""Now and then (1 start in 10 or so) Xvfb never paints a window Qt reports shown, however
long one waits; a new window is painted. A blank grab is retried in a new window this often."""


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


def render_waiting(amount_text: str, remaining_s: float, message: str | None = None) -> Bgr:
    """Amber: the payment is above the customer's password-free limit and waits for their PIN;
    `message` says which limit (messages.waiting_message), else the plain line."""
    width, height = OUTCOME_SIZE_PX
    image = np.full((height, width, 3), AMBER, dtype=np.uint8)
    _banner(image, "WAITING", top_px=height // 4, scale=3.2, thickness=7)
    _banner(image, amount_text, top_px=height // 2 - 40, scale=1.6, thickness=3)
    message = message or cashier_message(ErrorCode.CONFIRMATION_REQUIRED)
    lines = textwrap.wrap(message, MESSAGE_CHARS_PER_LINE)[:MESSAGE_LINES_MAX]
    for index, line in enumerate(lines):
        _banner(image, line, top_px=height // 2 + 50 + 48 * index, scale=1.1, thickness=2)
    _banner(image, f"cancels in {remaining_s:.0f} s", top_px=height - 60, scale=0.9, thickness=2)
    return image


def _text_in(
    image: Bgr,
    text: str,
    box: tuple[int, int],
    top_px: int,
    *,
    scale: float,
    thickness: int,
    colour: tuple[int, int, int] = INK,
) -> int:
    """`text` centred between the x bounds of `box`, shrunk to fit; returns its bottom y."""
    left, right = box
    (width, height), _ = cv2.getTextSize(text, FONT, scale, thickness)
    if width > right - left:
        scale *= (right - left) / width
        (width, height), _ = cv2.getTextSize(text, FONT, scale, thickness)
    x = left + max(0, (right - left - width) // 2)
    cv2.putText(image, text, (x, top_px + height), FONT, scale, colour, thickness, cv2.LINE_AA)
    return top_px + height


def present_qr(payload: str, height_px: int) -> Bgr:
    """The order's QR at the most whole pixels per module that fit `height_px` (no resampling
    blur), black on white with its quiet zone."""
    modules = qr_image(payload, box_px=1).width
    box_px = max(PRESENT_BOX_PX_MIN, height_px // modules)
    gray = np.asarray(qr_image(payload, box_px=box_px), dtype=np.uint8)
    return np.ascontiguousarray(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))


def render_present(payload: str, amount_text: str, remaining_s: float, order_text: str) -> Bgr:
    """What the customer scans: the order's QR as large as the screen's height allows on pure
    white, beside the amount (white on a solid band), the seconds left and the order id."""
    qr = present_qr(payload, OUTCOME_SIZE_PX[1] - 2 * PRESENT_MARGIN_PX)
    qr_height, qr_width = qr.shape[:2]
    width = max(OUTCOME_SIZE_PX[0], qr_width + PRESENT_PANEL_PX_MIN)
    height = max(OUTCOME_SIZE_PX[1], qr_height)
    image = np.full((height, width, 3), WHITE, dtype=np.uint8)
    top, left = (height - qr_height) // 2, PRESENT_MARGIN_PX
    image[top : top + qr_height, left : left + qr_width] = qr
    panel = (left + qr_width + PRESENT_MARGIN_PX, width - PRESENT_MARGIN_PX)
    band_top, band_bottom = height // 2 - 150, height // 2 + 10
    image[band_top:band_bottom, panel[0] - 20 :] = INK
    _text_in(image, "PAY", panel, band_top + 20, scale=1.2, thickness=2, colour=WHITE)
    _text_in(image, amount_text, panel, band_top + 75, scale=2.2, thickness=4, colour=WHITE)
    hint_bottom = _text_in(image, PRESENT_HINT, panel, band_bottom + 40, scale=0.9, thickness=2)
    countdown = f"cancels in {remaining_s:.0f} s"
    _text_in(image, countdown, panel, hint_bottom + 40, scale=0.9, thickness=2)
    _text_in(image, order_text, panel, height - 70, scale=0.6, thickness=1)
    return image


class TillWindow:
    """An OpenCV window. `pump` lets the GUI draw; keys are read so the window stays live."""

    def __init__(self) -> None:
        cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_AUTOSIZE)

    def show(self, image: Bgr) -> None:
        cv2.imshow(WINDOW_TITLE, image)
        cv2.waitKey(1)

    def hold(self, image: Bgr, seconds: float) -> bool:
        """Show `image` for `seconds` (the result screen), keeping the window responsive;
        whether the cashier dismissed it early (Esc or q)."""
        self.show(image)
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if cv2.waitKey(50) in (27, ord("q")):
                return True
        return False

    def close(self) -> None:
        cv2.destroyWindow(WINDOW_TITLE)
        cv2.waitKey(1)

    def reopen(self) -> None:
        """Close the window and open a new one in its place (it shows nothing until `show`)."""
        self.close()
        cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_AUTOSIZE)


def screenshot(window: TillWindow, image: Bgr, path: Path) -> None:
    """Show `image` and save a real screenshot of the X display (the window as the customer
    and the cashier see it) to `path`; tests read it. A blank grab is retried in a new window."""
    for attempt in range(SCREENSHOT_ATTEMPTS_MAX):
        if attempt:
            window.reopen()
        window.hold(image, SCREENSHOT_SETTLE_S)
        if _grab_screen(path):
            return


def _grab_screen(path: Path) -> bool:
    """Grab the display into `path` (whole: a reader never sees half a file); whether it shows
    anything (a display with no window painted is one colour)."""
    from PIL import ImageGrab  # noqa: PLC0415 - only tests ask for screenshots

    grab = ImageGrab.grab(xdisplay=os.environ.get("DISPLAY"))
    partial = path.with_name(f".{path.name}.part")
    grab.save(partial, format="PNG")
    partial.replace(path)
    darkest, brightest = grab.convert("L").getextrema()
    return bool(darkest != brightest)
