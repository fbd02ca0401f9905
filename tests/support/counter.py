"""The till's counter screens, each shown in a real full-screen TillWindow and grabbed from the
X display: tests/till/test_counter_window.py runs this under xvfb-run, and so does whoever
refreshes the pictures in docs/pos.md:

    xvfb-run -a -s "-screen 0 960x540x24" .venv/bin/python -m tests.support.counter docs/pos --small

Prints the window's sizes as JSON; writes one PNG per screen (SCREENS) into the folder given,
exactly as grabbed, or with `--small` in 64 colours (a tenth of the bytes, for the docs); and
a grab of the PAID screen in a `--windowed` window (WINDOWED_GRAB).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from paycode.merchant_pos import decoders
from paycode.merchant_pos.display import (
    Bgr,
    TillWindow,
    render_outcome,
    render_present,
    render_scan_frame,
    render_waiting,
    screenshot,
)
from paycode.merchant_pos.frames import to_gray
from paycode.merchant_pos.scanloop import Detection
from paycode.merchant_pos.screens import Size
from paycode.merchant_pos.synthetic_frames import Subject, compose_frame
from paycode.merchant_pos.till import SaleOutcome

SCREENS = ("scanning", "paid", "not-paid", "waiting", "present")
CODE_TEXT = "PC2QW7RT2YUZ3PLKM4NBV5CXA6SDF7GHJ2KL3ZXC4VB"
AMOUNT, CURRENCY, ORDER_ID = "12.50", "CNY", "INV-1042"
ORDER_PAYLOAD = "PCO1" + "9" * 60
PALETTE_COLOURS = 64
WINDOWED_GRAB = "windowed-paid.png"
"""The PAID screen in a `--windowed` window, grabbed with the rest of the screen."""
NOT_PAID_DETAIL = "no_payment_code: no payment code in 12 frames (12 frames scanned)"


def camera_frame() -> tuple[Bgr, Detection]:
    """A camera frame of a phone showing a code, and what the real decoder finds in it."""
    frame = compose_frame(Subject(CODE_TEXT, "qr", "v2"), "perspective", np.random.default_rng(5))
    found = decoders.make_backend("zxing").decode(to_gray(frame.image))
    if len(found) != 1:
        raise AssertionError(f"the example frame should hold one readable code, not {found}")
    return frame.image, Detection(found[0].text, "v2", "qr", found[0].corners, "zxing", 0)


def screens(size: Size) -> dict[str, Bgr]:
    """Every screen of SCREENS, drawn at `size` as the till draws it."""
    frame, detection = camera_frame()
    amount_text = f"{AMOUNT} {CURRENCY}"
    paid = SaleOutcome(True, "ok", "Payment received.", AMOUNT, CURRENCY, ORDER_ID)
    detail = f"No payment code seen. ({NOT_PAID_DETAIL})"
    not_paid = SaleOutcome(False, "no_payment_code", detail, AMOUNT, CURRENCY, ORDER_ID)
    order_text = f"order {ORDER_ID}"
    return {
        "scanning": render_scan_frame(frame, [detection], amount_text, size),
        "paid": render_outcome(paid, size),
        "not-paid": render_outcome(not_paid, size),
        "waiting": render_waiting(amount_text, 57.0, None, size),
        "present": render_present(ORDER_PAYLOAD, amount_text, 87.0, order_text, size),
    }


def main(out: Path, *, small: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    window = TillWindow()
    try:
        for name, image in screens(window.size).items():
            screenshot(window, image, out / f"{name}.png")
    finally:
        window.close()
    windowed = TillWindow(windowed=True)
    try:
        screenshot(windowed, screens(windowed.size)["paid"], out / WINDOWED_GRAB)
    finally:
        windowed.close()
    for name in SCREENS if small else ():
        with Image.open(out / f"{name}.png") as grab:
            palette = grab.convert("RGB").quantize(PALETTE_COLOURS, dither=Image.Dither.NONE)
        palette.save(out / f"{name}.png", optimize=True)
    print(json.dumps({"size": list(window.size), "windowed_size": list(windowed.size)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), small="--small" in sys.argv[2:]))
