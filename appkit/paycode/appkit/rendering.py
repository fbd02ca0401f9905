"""Turn a payment code string into something a scanner can read: a PNG, a barcode, a terminal.

The wallet shows the same code three ways: a QR code on screen (every format), a Code 128
barcode for the numeric format (the one a USB barcode gun at an older till can read), and a
QR drawn with Unicode half blocks so `paycode-wallet code --show` works over SSH with no
image viewer. All three come from real encoders (`qrcode`, zxing-cpp's writer), so what the
tests scan is exactly what a phone would display.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
import qrcode
import qrcode.constants
import zxingcpp
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from paycode.appkit.private_files import write_private

__all__ = ["code128_image", "group_digits", "qr_image", "save_png", "terminal_qr"]

INK = 0  # dark module / bar, as an 8-bit gray level
PAPER = 255  # light module / space

CODE128_QUIET_MODULES_MIN = 10  # ISO/IEC 15417 asks for at least 10X on both sides
CODE128_START_C = "11010011100"  # start pattern of code set C (two digits per symbol)
TERMINAL_QUIET_MODULES = 2  # enough for phone and webcam readers, keeps the block small

# Half-block glyph for (upper cell inked, lower cell inked).
_HALF_BLOCKS: dict[tuple[bool, bool], str] = {
    (False, False): " ",
    (True, False): "▀",
    (False, True): "▄",
    (True, True): "█",
}


def _qr_matrix(text: str, *, border_modules: int) -> NDArray[np.bool_]:
    """Encode `text` at error correction M; True marks a dark module, quiet zone included.

    M (15% recovery) is what wallets use for on-screen codes: it survives glare and a
    cracked screen while keeping the ~230-character EMV payload at a version a webcam
    resolves at arm's length.
    """
    qr = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        border=border_modules,
    )
    qr.add_data(text)
    qr.make(fit=True)
    return np.array(qr.get_matrix(), dtype=np.bool_)


def qr_image(text: str, *, box_px: int = 8, border_modules: int = 4) -> Image.Image:
    """Render `text` as a black-on-white QR code (mode "L"), `box_px` pixels per module.

    The image is built from the module matrix with integer scaling so every module is an
    exact square of pixels: no resampling blur for the scanner to fight.
    """
    if box_px < 1:
        raise ValueError(f"box_px must be >= 1, got {box_px}")
    if border_modules < 0:
        raise ValueError(f"border_modules must be >= 0, got {border_modules}")
    dark = _qr_matrix(text, border_modules=border_modules)
    gray = np.where(dark, INK, PAPER).astype(np.uint8)
    scaled = np.kron(gray, np.ones((box_px, box_px), dtype=np.uint8))
    return Image.fromarray(scaled, mode="L")


def group_digits(digits: str, *, group: int = 4) -> str:
    """Split digits into space-separated groups, the way a cashier reads a code aloud."""
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    return " ".join(digits[i : i + group] for i in range(0, len(digits), group))


def _code128_modules(digits: str) -> NDArray[np.bool_]:
    """Return the Code 128 bar pattern of `digits` (True = bar), one entry per module.

    zxing-cpp picks the code sets; an even run of digits must come out in set C, which
    halves the symbol width compared with set B and keeps it readable on a phone screen.
    """
    barcode = zxingcpp.create_barcode(digits, zxingcpp.BarcodeFormat.Code128)
    bitmap = np.asarray(zxingcpp.write_barcode_to_image(barcode, scale=1, add_quiet_zones=False))
    bars: NDArray[np.bool_] = bitmap[0] < 128
    pattern = "".join("1" if bar else "0" for bar in bars)
    assert len(digits) % 2 == 1 or pattern.startswith(CODE128_START_C), pattern[:11]
    return bars


def _caption_strip(text: str, *, width_px: int, module_px: int) -> Image.Image:
    """Draw the human-readable line, centred, on a white strip as wide as the barcode."""
    font = ImageFont.load_default(size=max(10, 6 * module_px))
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    left, top, right, bottom = (math.ceil(edge) for edge in box)
    margin_px = 2 * module_px
    strip = Image.new("L", (width_px, bottom - top + 2 * margin_px), PAPER)
    origin = ((width_px - (right - left)) // 2 - left, margin_px - top)
    ImageDraw.Draw(strip).text(origin, text, fill=INK, font=font)
    return strip


def code128_image(
    digits: str, *, module_px: int = 3, height_px: int = 140, quiet_modules: int = 12
) -> Image.Image:
    """Render a numeric code as a Code 128 barcode (mode "L") with its digits printed below.

    `height_px` is the height of the bars; the caption (digits in groups of four, so a
    cashier can key the code in when the scanner fails) adds a strip underneath.
    """
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"a Code 128 payment code must be ASCII digits only, got {digits!r}")
    if module_px < 1 or height_px < 1:
        raise ValueError(f"module_px and height_px must be >= 1, got {module_px}, {height_px}")
    if quiet_modules < CODE128_QUIET_MODULES_MIN:
        raise ValueError(
            f"quiet_modules must be >= {CODE128_QUIET_MODULES_MIN} (ISO/IEC 15417), "
            f"got {quiet_modules}"
        )
    bars = np.pad(_code128_modules(digits), quiet_modules, constant_values=False)
    row = np.repeat(np.where(bars, INK, PAPER).astype(np.uint8), module_px)
    bar_area = np.tile(row, (height_px, 1))
    caption = _caption_strip(group_digits(digits), width_px=row.size, module_px=module_px)
    image = Image.new("L", (row.size, height_px + caption.height), PAPER)
    image.paste(Image.fromarray(bar_area, mode="L"), (0, 0))
    image.paste(caption, (0, height_px))
    return image


def save_png(image: Image.Image, path: str | os.PathLike[str]) -> None:
    """Write `image` as PNG, owner-only and atomically (paycode.appkit.private_files): a payment
    code is a bearer credential until it expires. An image PNG cannot hold fails before the
    file is touched."""
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    write_private(path, encoded.getvalue())


def terminal_qr(text: str, *, invert: bool = False) -> str:
    """Draw `text` as a QR code with half blocks, two module rows per line.

    By default the output suits the usual light-on-dark terminal: a glyph's ink shows up
    light, so light modules (and the quiet zone) are inked and dark modules are left blank.
    `invert=True` inks the dark modules instead, for dark-on-light terminals. An odd last
    row is padded with a light row, which only widens the quiet zone.
    """
    dark = _qr_matrix(text, border_modules=TERMINAL_QUIET_MODULES)
    if dark.shape[0] % 2 == 1:
        dark = np.vstack([dark, np.zeros((1, dark.shape[1]), dtype=np.bool_)])
    inked = dark if invert else ~dark
    lines = (
        "".join(
            _HALF_BLOCKS[bool(top), bool(bottom)] for top, bottom in zip(upper, lower, strict=True)
        )
        for upper, lower in zip(inked[0::2], inked[1::2], strict=True)
    )
    return "\n".join(lines)
