"""The counter screens as pictures (no display): what a customer a metre away can read.

Each check is on pixels, no OCR: the amount's band is dark whatever the camera sees, the found
code is outlined where the scanner says it is, each result screen is one dominant colour with
text in the word, amount, sentence and order regions, and the outcome's detail (codes, frame
counts) changes nothing on screen. The same screens in a real window: test_counter_window.py.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from paycode.appkit.rendering import qr_image
from paycode.merchant_pos import decoders, screentext
from paycode.merchant_pos.display import (
    render_outcome,
    render_present,
    render_scan_frame,
    render_waiting,
)
from paycode.merchant_pos.messages import CASHIER_MESSAGES, waiting_message
from paycode.merchant_pos.scanloop import Detection
from paycode.merchant_pos.till import SaleOutcome

Bgr = NDArray[np.uint8]
WIDTH, HEIGHT = 1280, 720
DETAIL = "no_payment_code: no payment code in 12 frames (12 frames scanned)"
NOT_PAID = SaleOutcome(
    False,
    "no_payment_code",
    f"No payment code seen: ask the customer to show their code. ({DETAIL})",
    "12.50",
    "CNY",
    "INV-1042",
)
PAID = SaleOutcome(True, "ok", "Payment received.", "12.50", "CNY", "INV-1042")
UNKNOWN = dataclasses.replace(NOT_PAID, code="outcome_unknown", message="No answer (order x)")


def _rows(image: Bgr, top: float, bottom: float) -> Bgr:
    height = image.shape[0]
    return image[round(height * top) : round(height * bottom)]


def _share(region: Bgr, colour_bgr: tuple[int, int, int], tolerance: int = 30) -> float:
    """The share of `region`'s pixels within `tolerance` of `colour_bgr` on every channel."""
    near = np.abs(region.astype(np.int16) - np.array(colour_bgr, dtype=np.int16)) <= tolerance
    return float(near.all(axis=2).mean())


def _dominant(region: Bgr) -> str:
    """The hue most of the region has: green, red, amber, dark or light."""
    blue, green, red = (float(np.median(region[..., channel])) for channel in range(3))
    if max(blue, green, red) < 60:
        return "dark"
    if min(blue, green, red) > 200:
        return "light"
    if green > red + 40 and green > blue + 40:
        return "green"
    if red > green + 40 and green > blue + 60:
        return "amber"
    if red > green + 80 and red > blue + 80:
        return "red"
    return "other"


def _light_pixels(region: Bgr) -> int:
    return int((region.min(axis=2) > 200).sum())


def _dark_pixels(region: Bgr) -> int:
    return int((region.max(axis=2) < 60).sum())


def test_the_amount_stays_readable_on_a_bright_scene() -> None:
    """The 'PAY 12.50 CNY' banner was white text on the camera image: on a white wall it was
    gone. It is white text on a dark band now, whatever the camera sees."""
    white_wall = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
    screen = render_scan_frame(white_wall, [], "12.50 CNY")
    band = _rows(screen, 0.0, 0.18)
    assert _dominant(band) == "dark", "the amount's band is not a solid dark band"
    assert _light_pixels(band) > 0.05 * band.shape[0] * band.shape[1], "no large light text"
    assert _share(band, (20, 20, 20), tolerance=12) + _share(band, (255, 255, 255), 40) > 0.9


def _frame_with_code() -> tuple[Bgr, Detection]:
    """A gray camera frame with a QR in it, and the Detection the real decoder gives for it."""
    frame = np.full((HEIGHT, WIDTH), 128, dtype=np.uint8)
    code = np.asarray(qr_image("PC2" + "A" * 40, box_px=6), dtype=np.uint8)
    frame[200 : 200 + code.shape[0], 700 : 700 + code.shape[1]] = code
    found = decoders.make_backend("zxing").decode(frame)
    assert len(found) == 1
    corners = found[0].corners
    return np.dstack([frame] * 3), Detection(found[0].text, "v2", "qr", corners, "zxing", 0)


def test_the_found_code_is_outlined_at_the_scanners_points() -> None:
    frame, detection = _frame_with_code()
    screen = render_scan_frame(frame, [detection], "12.50 CNY")
    band_px, hint_px = round(HEIGHT * 0.2), round(HEIGHT * 0.1)
    scale = min(WIDTH / frame.shape[1], (HEIGHT - band_px - hint_px) / frame.shape[0])
    left = (WIDTH - round(frame.shape[1] * scale)) // 2
    top = band_px + (HEIGHT - band_px - hint_px - round(frame.shape[0] * scale)) // 2
    corners = np.array(detection.corners, dtype=np.float64) * scale + (left, top)
    for start, end in zip(corners, np.roll(corners, -1, axis=0), strict=True):
        for x, y in (start, (start + end) / 2, end):
            spot = screen[round(y) - 1 : round(y) + 2, round(x) - 1 : round(x) + 2]
            assert _dominant(spot) == "green", f"no outline at ({x:.0f}, {y:.0f})"
    assert _dominant(_rows(screen, 0.92, 1.0)) == "green", "the hint does not say it was found"
    plain = render_scan_frame(frame, [], "12.50 CNY")
    assert _dominant(_rows(plain, 0.92, 1.0)) == "dark"


@pytest.mark.parametrize(
    ("outcome", "colour"), [(PAID, "green"), (NOT_PAID, "red"), (UNKNOWN, "amber")]
)
def test_each_outcome_is_one_colour_a_customer_tells_from_a_metre(
    outcome: SaleOutcome, colour: str
) -> None:
    screen = render_outcome(outcome)
    assert screen.shape == (HEIGHT, WIDTH, 3)
    for top, bottom in ((0.05, 0.35), (0.37, 0.52), (0.55, 0.85), (0.88, 0.96)):
        region = _rows(screen, top, bottom)
        assert _dominant(region) == colour
        text = _dark_pixels(region) if colour == "amber" else _light_pixels(region)
        assert text > 0.02 * region.shape[0] * region.shape[1], f"no text in rows {top}-{bottom}"
    word = _rows(screen, 0.05, 0.35)
    ink = _dark_pixels(word) if colour == "amber" else _light_pixels(word)
    assert ink > 0.1 * word.shape[0] * word.shape[1], "the word is not big"


def test_not_paid_shows_no_developer_detail() -> None:
    """The message's detail (the code, the frame count) is for the log and --json: the screen
    is the same whatever detail the outcome carries."""
    bare = dataclasses.replace(NOT_PAID, message="")
    assert np.array_equal(render_outcome(NOT_PAID), render_outcome(bare))
    other_count = dataclasses.replace(NOT_PAID, message=DETAIL.replace("12", "13"))
    assert np.array_equal(render_outcome(NOT_PAID), render_outcome(other_count))


def _off_the_blend(region: Bgr, background: Bgr, ink: Bgr) -> float:
    """The share of pixels that are not a mix of the background and the text colour: an
    outline drawn in a third colour, or text drawn twice out of register."""
    pixels = region.reshape(-1, 3).astype(np.float64)
    axis = (ink - background).astype(np.float64)
    mix = np.clip((pixels - background) @ axis / (axis @ axis), 0, 1)
    residual = np.linalg.norm(pixels - (background + mix[:, None] * axis), axis=1)
    return float((residual > 12).mean())


@pytest.mark.parametrize("outcome", [PAID, NOT_PAID])
def test_the_order_line_is_clean_text_without_an_outline(outcome: SaleOutcome) -> None:
    """The order line was white text over a black outline a pixel out of register: garbled at
    its size. It is one colour on the background now."""
    screen = render_outcome(outcome)
    footer = _rows(screen, 0.87, 0.97)
    background = np.median(footer.reshape(-1, 3), axis=0)
    assert _light_pixels(footer) > 200, "no order id drawn"
    assert _off_the_blend(footer, background, np.array([255, 255, 255])) < 0.002


def test_waiting_is_amber_with_the_amount_and_the_seconds_left() -> None:
    screen = render_waiting("12.50 CNY", 57.0)
    for top, bottom in ((0.05, 0.35), (0.37, 0.52), (0.55, 0.85), (0.88, 0.96)):
        region = _rows(screen, top, bottom)
        assert _dominant(region) == "amber"
        assert _dark_pixels(region) > 0.02 * region.shape[0] * region.shape[1]
    later = render_waiting("12.50 CNY", 12.0)
    changed = (screen != later).any(axis=2)
    assert changed.any() and not changed[: round(HEIGHT * 0.86)].any(), "only the countdown"


def test_present_shows_the_amount_white_on_a_dark_band_beside_the_qr() -> None:
    screen = render_present("PC2" + "B" * 40, "12.50 CNY", 87.0, "order INV-1042")
    panel = screen[:, round(WIDTH * 0.625) :]
    band = _rows(panel, 0.27, 0.53)
    assert _dominant(band) == "dark" and _light_pixels(band) > 0.05 * band.size / 3
    qr_side = screen[:, : WIDTH // 2]
    assert _dominant(qr_side) == "light", "the QR is not on white"
    assert _dark_pixels(qr_side) > 0.1 * qr_side.size / 3, "the QR is not large"


@pytest.mark.parametrize("size", [(1600, 900), (1024, 768), (1920, 1080)])
def test_every_screen_is_drawn_at_the_windows_size(size: tuple[int, int]) -> None:
    """Drawn at the screen's size, text is never scaled (blurred) by the window."""
    frame, detection = _frame_with_code()
    width, height = size
    screens = [
        render_scan_frame(frame, [detection], "12.50 CNY", size),
        render_outcome(PAID, size),
        render_outcome(NOT_PAID, size),
        render_waiting("12.50 CNY", 5.0, None, size),
        render_present("PC2" + "C" * 40, "12.50 CNY", 5.0, "order INV-1042", size),
    ]
    assert [screen.shape for screen in screens] == [(height, width, 3)] * len(screens)


def test_drawing_a_camera_frame_leaves_the_scanner_its_budget() -> None:
    """Each camera frame is drawn while the scanner waits: shrinking it with INTER_AREA cost
    about 9 ms a 720p frame, more than the scanner's own budget (scanloop.BUDGET_MS)."""
    frame, detection = _frame_with_code()
    render_scan_frame(frame, [detection], "12.50 CNY")  # fonts loaded, band remembered
    costs_ms = []
    for _ in range(21):
        started = time.perf_counter()
        render_scan_frame(frame, [detection], "12.50 CNY")
        costs_ms.append((time.perf_counter() - started) * 1000)
    assert float(np.median(costs_ms)) < 4.0, f"{np.median(costs_ms):.1f} ms a frame"


def _margins_blank(screen: Bgr, margin_px: int) -> bool:
    """Nothing drawn in the left and right margins: text was shrunk to fit, not cut."""
    edges = np.concatenate([screen[:, :margin_px], screen[:, -margin_px:]], axis=1)
    return bool((edges == edges[0, 0]).all())


def test_a_long_order_id_and_amount_shrink_to_fit_the_screen() -> None:
    long = dataclasses.replace(NOT_PAID, amount="123456789.00", merchant_order_id="X" * 120)
    screen = render_outcome(long)
    assert _margins_blank(screen, round(WIDTH * 0.03))
    assert _light_pixels(_rows(screen, 0.88, 0.96)) > 200, "the order id is not drawn"


def test_an_order_id_in_chinese_is_drawn_not_boxes() -> None:
    """A font with the glyphs is chosen (fonts-wqy-microhei): each character drawn differs,
    where a font without them draws one 'missing' box for all."""
    first = render_outcome(dataclasses.replace(PAID, merchant_order_id="订单"))
    other = render_outcome(dataclasses.replace(PAID, merchant_order_id="发票"))
    footer = (slice(round(HEIGHT * 0.88), round(HEIGHT * 0.96)), slice(None))
    assert _light_pixels(first[footer]) > 200
    assert not np.array_equal(first[footer], other[footer]), "the characters are all one box"


def _longest_sentences() -> list[str]:
    by_length = sorted(CASHIER_MESSAGES.values(), key=len, reverse=True)[:3]
    reason = ("payments above 200.00 CNY need the PIN and this one is above that " * 3)[:160]
    return [*by_length, waiting_message(reason)]


@pytest.mark.parametrize("size", [(1280, 720), (1024, 768)])
@pytest.mark.parametrize("sentence", _longest_sentences())
def test_the_longest_sentence_is_shrunk_to_fit_not_cut(
    sentence: str, size: tuple[int, int]
) -> None:
    """The sentence was cut after three lines with an ellipsis ('(if it fails again, the
    phone's clock is wrong: one online call in the ...'): its last word never reached the
    screen. Two sentences that differ only in their last word must draw differently."""
    first = render_waiting("12.50 CNY", 5.0, f"{sentence} Alpha.", size)
    second = render_waiting("12.50 CNY", 5.0, f"{sentence} Omega.", size)
    assert not np.array_equal(first, second), "the end of the sentence is not on screen"


def test_without_any_installed_font_the_screens_still_have_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A till without DejaVu or a CJK font (a minimal image) draws with Pillow's own font."""
    missing = (tmp_path / "no-such-font.ttf",)
    monkeypatch.setattr(screentext, "HEAVY_FONTS", missing)
    monkeypatch.setattr(screentext, "KNOWN_FONTS", missing)
    screentext._font_path.cache_clear()
    try:
        screen = render_outcome(dataclasses.replace(PAID, merchant_order_id="订单-7"))
    finally:
        screentext._font_path.cache_clear()
    for top, bottom in ((0.05, 0.35), (0.37, 0.52), (0.55, 0.85), (0.88, 0.96)):
        region = _rows(screen, top, bottom)
        assert _light_pixels(region) > 0.01 * region.shape[0] * region.shape[1]
