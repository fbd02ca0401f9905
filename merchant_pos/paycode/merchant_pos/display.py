"""The till's window: full screen, without toolkit chrome, showing what merchant_pos.screens
draws at the window's size; and, for tests, a real screenshot of the X display.

OpenCV's default window is sized to the picture and, with the Qt backend, carries a toolbar
(zoom, pan, save) a customer has no use for. This one covers the screen (the window manager
is asked for full screen, and without one the window is moved and sized to the screen), and
`--windowed` keeps a movable window for development. Without a display the till prints
instead (`display_available`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from paycode.merchant_pos.opencv import cv2
from paycode.merchant_pos.screens import (
    SCREEN_SIZE_PX,
    Bgr,
    Size,
    render_outcome,
    render_present,
    render_scan_frame,
    render_waiting,
)

__all__ = [
    "Bgr",
    "TillWindow",
    "display_available",
    "render_outcome",
    "render_present",
    "render_scan_frame",
    "render_waiting",
    "screen_size",
    "screenshot",
]

WINDOW_TITLE = "Paycode POS"
WINDOW_FLAGS = cv2.WINDOW_NORMAL | cv2.WINDOW_GUI_NORMAL | cv2.WINDOW_KEEPRATIO
"""Resizable, no Qt toolbar or status bar, the picture's proportions kept (black bars)."""
DISMISS_KEYS = (27, ord("q"))
"""Esc or q."""
SCREENSHOT_SETTLE_S = 0.5
"""Time for the window manager-less X server to map and paint the window before a grab."""
SCREENSHOT_ATTEMPTS_MAX = 6
"""Now and then (1 start in 10 or so) Xvfb never paints a window Qt reports shown, however
long one waits, and on a busy machine a full-screen window is grabbed before it is sized; a
grab that does not show the picture is retried this often, every other time in a new window."""


def display_available(headless: bool) -> bool:
    """A window only when asked for and an X display exists (DISPLAY set)."""
    return not headless and bool(os.environ.get("DISPLAY"))


def screen_size() -> Size:
    """The X screen's size in pixels (OpenCV cannot say): one grab of the root window, once
    per sale. SCREEN_SIZE_PX when the display cannot be read."""
    from PIL import ImageGrab  # noqa: PLC0415 - loads XCB only for a window

    try:
        width, height = ImageGrab.grab(xdisplay=os.environ.get("DISPLAY")).size
    except OSError:
        return SCREEN_SIZE_PX
    return (width, height) if width > 0 and height > 0 else SCREEN_SIZE_PX


class TillWindow:
    """The till's one window. `size` is what screens are drawn at, so text is never scaled;
    keys are read between pictures so the window stays live."""

    def __init__(self, *, windowed: bool = False) -> None:
        self.windowed = windowed
        self.size: Size = SCREEN_SIZE_PX if windowed else screen_size()
        self._open()

    def _open(self) -> None:
        cv2.namedWindow(WINDOW_TITLE, WINDOW_FLAGS)
        if self.windowed:
            cv2.resizeWindow(WINDOW_TITLE, *self.size)
            return
        # Sized first, then full screen: with a window manager the second wins, without one
        # (a kiosk X session, Xvfb) the first is all there is.
        cv2.moveWindow(WINDOW_TITLE, 0, 0)
        cv2.resizeWindow(WINDOW_TITLE, *self.size)
        cv2.setWindowProperty(WINDOW_TITLE, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)

    def show(self, image: Bgr) -> bool:
        """Show `image`; whether the cashier pressed Esc or q since the last picture."""
        cv2.imshow(WINDOW_TITLE, image)
        return cv2.waitKey(1) in DISMISS_KEYS

    def hold(self, image: Bgr, seconds: float) -> bool:
        """Show `image` for `seconds` (the result screen), keeping the window responsive;
        whether the cashier dismissed it early (Esc or q)."""
        if self.show(image):
            return True
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if cv2.waitKey(50) in DISMISS_KEYS:
                return True
        return False

    def close(self) -> None:
        cv2.destroyWindow(WINDOW_TITLE)
        cv2.waitKey(1)

    def reopen(self) -> None:
        """Close the window and open a new one in its place (it shows nothing until `show`)."""
        self.close()
        self._open()


def screenshot(window: TillWindow, image: Bgr, path: Path) -> None:
    """Show `image` and save a real screenshot of the X display (the window as the customer
    and the cashier see it) to `path`; tests read it as soon as it exists, so it is written
    once, whole, when the grab shows `image` (or at the last attempt, whatever it shows). A
    grab that does not show it is retried, every other time in a new window."""
    from PIL import ImageGrab  # noqa: PLC0415 - only tests ask for screenshots

    grab = None
    for attempt in range(SCREENSHOT_ATTEMPTS_MAX):
        if attempt % 2:
            window.reopen()
        window.hold(image, SCREENSHOT_SETTLE_S)
        grab = ImageGrab.grab(xdisplay=os.environ.get("DISPLAY"))
        if _shows(np.asarray(grab.convert("RGB"))[:, :, ::-1], image):
            break
    assert grab is not None
    partial = path.with_name(f".{path.name}.part")
    grab.save(partial, format="PNG")
    partial.replace(path)


def _shows(grab: Bgr, image: Bgr) -> bool:
    """Whether the grabbed screen shows `image`: pixel for pixel when the window is the whole
    screen (a window still being sized or painted is not), else at least something (a screen
    with no window painted is one colour)."""
    if grab.shape == image.shape:
        return float(np.abs(grab.astype(np.int16) - image).mean()) < 1.0
    return bool(grab.min() != grab.max())
