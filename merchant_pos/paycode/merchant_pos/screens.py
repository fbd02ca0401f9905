"""What the till's window shows, drawn at the window's size: scanning, PAID, NOT PAID, WAITING,
and the order's QR for the customer (`charge --present`).

Each screen is for someone a metre away: one big word, the amount, one human sentence and the
order id, on a solid colour (green paid, red not paid, amber waiting or unknown). Developer
detail (codes, frame counts, the server's order id in full) stays in the log and `--json`.
Pure functions: numpy BGR out, so tests check the pixels without a display.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from paycode.appkit.rendering import qr_image
from paycode.merchant_pos.messages import CASHIER_MESSAGES, cashier_message
from paycode.merchant_pos.offline_outcome import OFFLINE_MESSAGE
from paycode.merchant_pos.opencv import cv2
from paycode.merchant_pos.scanloop import Detection
from paycode.merchant_pos.screentext import Rgb, draw_centred, draw_paragraph
from paycode.merchant_pos.till import PAID_MESSAGE, SaleOutcome
from paycode.shared.codes import ErrorCode

Bgr = NDArray[np.uint8]
Size = tuple[int, int]
"""width, height in pixels."""

SCREEN_SIZE_PX: Size = (1280, 720)
"""The size drawn at when the window's is unknown: a 720p camera frame, pixel for pixel."""
GREEN: Rgb = (20, 130, 45)
RED: Rgb = (190, 30, 30)
AMBER: Rgb = (245, 165, 0)
INK: Rgb = (20, 20, 20)
WHITE: Rgb = (255, 255, 255)
"""White reads on green, red and ink (contrast above 4.5:1); amber needs ink."""
BAND_SHARE = 0.2
"""The amount band's share of the screen's height: its figures are about 14% of the height,
some 4 cm on a 15-inch panel, readable across a counter."""
HINT_SHARE = 0.1
OUTLINE_SHARE = 1 / 120
"""The outline around a found code, as a share of the screen's height (6 px at 720p)."""
MARGIN_SHARE = 0.04
SENTENCE_LINES_MAX = 4
SCAN_HINT = "Show your payment code to the camera"
SCAN_FOUND = "Code found: charging…"
UNKNOWN_SENTENCE = "The payment did not go through: the till's log has the detail."
PRESENT_HINT = "Scan with your Paycode wallet"
PRESENT_BOX_PX_MIN = 3
"""Fewest screen pixels per QR module: below that a phone camera at arm's length struggles."""
PRESENT_PANEL_SHARE = 0.375
"""Room beside the QR for the amount band, as a share of the screen's width."""


def _bgr(image: Image.Image) -> Bgr:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


@functools.lru_cache(maxsize=16)
def _band(text: str, size: Size, background: Rgb, ink: Rgb) -> Bgr:
    """A solid band with `text` as large as fits (remembered: it is drawn on every frame)."""
    width, height = size
    image = Image.new("RGB", size, background)
    draw_centred(ImageDraw.Draw(image), text, (0, 0, width, height), round(height * 0.7), ink)
    band = _bgr(image)
    band.flags.writeable = False
    return band


def render_scan_frame(
    frame: Bgr, detections: Sequence[Detection], amount_text: str, size: Size = SCREEN_SIZE_PX
) -> Bgr:
    """The amount on a dark band, the camera view (scaled, whole) with each found code
    outlined in green, and below it what the customer should do."""
    width, height = size
    band_px, hint_px = round(height * BAND_SHARE), round(height * HINT_SHARE)
    screen = np.zeros((height, width, 3), dtype=np.uint8)
    screen[:band_px] = _band(f"PAY {amount_text}", (width, band_px), INK, WHITE)
    hint = (SCAN_FOUND, GREEN) if detections else (SCAN_HINT, INK)
    screen[height - hint_px :] = _band(hint[0], (width, hint_px), hint[1], WHITE)
    view_px = height - band_px - hint_px
    scale = min(width / frame.shape[1], view_px / frame.shape[0])
    shown_w, shown_h = round(frame.shape[1] * scale), round(frame.shape[0] * scale)
    left, top = (width - shown_w) // 2, band_px + (view_px - shown_h) // 2
    # Bilinear, not INTER_AREA: area shrinking by 0.7 costs ~9 ms a 720p frame, more than the
    # scanner's whole budget (scanloop.BUDGET_MS); bilinear costs well under 1 ms.
    screen[top : top + shown_h, left : left + shown_w] = cv2.resize(
        _as_bgr(frame), (shown_w, shown_h), interpolation=cv2.INTER_LINEAR
    )
    thickness = max(2, round(height * OUTLINE_SHARE))
    for detection in detections:
        corners = np.array(detection.corners, dtype=np.float64) * scale + (left, top)
        points = np.round(corners).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(screen, [points], isClosed=True, color=GREEN[::-1], thickness=thickness)
    return screen


def _as_bgr(frame: Bgr) -> Bgr:
    """Camera frames are BGR; a gray one (a gray video, a test) is shown as such."""
    if frame.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    return frame


def outcome_word(outcome: SaleOutcome) -> str:
    """PAID, PAID OFFLINE, NOT PAID, or the till's headline for an outcome it cannot tell (no
    amount: the amount has its own line)."""
    if outcome.paid:
        return "PAID" if outcome.offline is None else "PAID OFFLINE"
    return outcome.headline


def outcome_sentence(outcome: SaleOutcome) -> str:
    """The one sentence on screen: the cashier's line for the code (messages.py), never the
    detail the outcome's message carries for the log."""
    if outcome.paid:
        return OFFLINE_MESSAGE if outcome.offline is not None else f"{PAID_MESSAGE} Thank you."
    if outcome.code in CASHIER_MESSAGES:
        return cashier_message(outcome.code)
    return UNKNOWN_SENTENCE


def outcome_colour(outcome: SaleOutcome) -> Rgb:
    """Green paid, amber paid offline (not settled yet) or unknown, red not paid."""
    if outcome.paid:
        return GREEN if outcome.offline is None else AMBER
    return AMBER if outcome.code == ErrorCode.OUTCOME_UNKNOWN else RED


def render_outcome(outcome: SaleOutcome, size: Size = SCREEN_SIZE_PX) -> Bgr:
    """Green PAID, red NOT PAID or amber when unknown or PAID OFFLINE: the word, the amount,
    one sentence, a note when there is one (what waits to sync, or to ask for an OFFLINE code)
    and the order id (PAID OFFLINE: the receipt reference), readable from a metre."""
    colour = outcome_colour(outcome)
    footer = f"Order {outcome.merchant_order_id}"
    if outcome.offline is not None:
        footer = f"ref {outcome.offline.acceptance_id}"
    return _status_screen(
        size,
        colour,
        word=outcome_word(outcome),
        amount_text=f"{outcome.amount} {outcome.currency}",
        sentence=outcome_sentence(outcome),
        footer=footer,
        note=outcome.hint,
    )


def render_waiting(
    amount_text: str, remaining_s: float, message: str | None = None, size: Size = SCREEN_SIZE_PX
) -> Bgr:
    """Amber: the payment is above the customer's password-free limit and waits for their PIN;
    `message` says which limit (messages.waiting_message), else the plain line."""
    return _status_screen(
        size,
        AMBER,
        word="WAITING",
        amount_text=amount_text,
        sentence=message or cashier_message(ErrorCode.CONFIRMATION_REQUIRED),
        footer=f"Cancels in {remaining_s:.0f} s",
    )


def _status_screen(
    size: Size,
    colour: Rgb,
    *,
    word: str,
    amount_text: str,
    sentence: str,
    footer: str,
    note: str = "",
) -> Bgr:
    """The layout of every result screen, top to bottom: word, amount, sentence, a small note
    when there is one, footer."""
    width, height = size
    ink = INK if colour == AMBER else WHITE
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    margin = round(width * MARGIN_SHARE)

    def rows(top: float, bottom: float) -> tuple[int, int, int, int]:
        return margin, round(height * top), width - margin, round(height * bottom)

    draw_centred(draw, word, rows(0.05, 0.35), round(height * 0.26), ink)
    draw_centred(draw, amount_text, rows(0.37, 0.52), round(height * 0.12), ink)
    sentence_bottom = 0.77 if note else 0.85
    draw_paragraph(
        draw,
        sentence,
        rows(0.55, sentence_bottom),
        round(height * 0.06),
        ink,
        lines_max=SENTENCE_LINES_MAX,
    )
    if note:
        draw_centred(draw, note, rows(0.78, 0.86), round(height * 0.045), ink)
    draw_centred(draw, footer, rows(0.88, 0.96), round(height * 0.05), ink)
    return _bgr(image)


def present_qr(payload: str, side_px: int) -> Bgr:
    """The order's QR at the most whole pixels per module that fit `side_px` (no resampling
    blur), black on white with its quiet zone."""
    modules = qr_image(payload, box_px=1).width
    box_px = max(PRESENT_BOX_PX_MIN, side_px // modules)
    return _bgr(qr_image(payload, box_px=box_px))


def render_present(
    payload: str, amount_text: str, remaining_s: float, order_text: str, size: Size = SCREEN_SIZE_PX
) -> Bgr:
    """What the customer scans: the order's QR as large as fits on pure white, beside the
    amount (white on a dark band), the seconds left and the order id. A screen too small for
    both at 3 px a module is widened: a readable QR matters more than a steady size."""
    width, height = size
    margin = round(height * MARGIN_SHARE)
    panel_px = round(width * PRESENT_PANEL_SHARE)
    qr = present_qr(payload, min(height, width - panel_px) - 2 * margin)
    width, height = max(width, qr.shape[1] + panel_px), max(height, qr.shape[0])
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    left = width - panel_px
    band = (left, round(height * 0.25), width, round(height * 0.55))
    draw.rectangle((band[0], band[1], band[2] - 1, band[3] - 1), fill=INK)
    inner = (left + margin, band[1], width - margin, band[3])
    split = band[1] + (band[3] - band[1]) // 3
    draw_centred(draw, "PAY", (inner[0], inner[1], inner[2], split), round(height * 0.06), WHITE)
    draw_centred(draw, amount_text, (inner[0], split, inner[2], inner[3]), height // 8, WHITE)

    def line(top: float, bottom: float, text: str, share: float) -> None:
        box = (left + margin, round(height * top), width - margin, round(height * bottom))
        draw_centred(draw, text, box, round(height * share), INK)

    line(0.6, 0.68, PRESENT_HINT, 0.045)
    line(0.7, 0.78, f"Cancels in {remaining_s:.0f} s", 0.045)
    line(0.88, 0.95, order_text, 0.03)
    screen = _bgr(image)
    top, qr_left = (height - qr.shape[0]) // 2, max(0, (left - qr.shape[1]) // 2)
    screen[top : top + qr.shape[0], qr_left : qr_left + qr.shape[1]] = qr
    return screen
