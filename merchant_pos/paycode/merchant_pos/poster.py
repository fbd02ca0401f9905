"""A printable A6 collection poster: the merchant's EMV MPM QR, name, city, amount, id.

Consumers scan it with their wallet and pay online (`paycode-wallet pay --qr-image`). A static
poster (no amount) hangs by the till; a dynamic one carries an amount and an order reference
and pays once. The poster prints the code it is given and the QR of that code's payload (the
server's signed text; shared.emv.collection), so the wallet and the server read exactly what
was printed, and it refuses a payload that says something else than the printed lines.

A merchant named in its own script (EMV tag 64: "北京烤鸭店", "北京") is printed in it, with
the ASCII of tags 59 and 60 smaller beneath. That needs a font with the glyphs: fontconfig
(`fc-list`) or the usual Debian paths find one, `make system-deps` installs fonts-wqy-microhei
(Chinese, Japanese, Korean), and without one the poster stops with FontMissing naming the
package rather than print empty boxes.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Final

from PIL import Image, ImageDraw, ImageFont

from paycode.appkit.rendering import qr_image
from paycode.shared.codes import ErrorCode
from paycode.shared.emv.collection import (
    CollectionCode,
    read_collection,
)
from paycode.shared.errors import CodeMalformed, PaycodeError

A6_MM = (105, 148)
DPI = 300
MM_PER_INCH = 25.4
MARGIN_PX = 90
EMV_NAME_CHARS_MAX = 25
INSTRUCTION = "Scan with your Paycode wallet to pay"
POSTER_SUFFIXES = (".png", ".pdf")
NAME_PX, ASCII_NAME_PX, CITY_PX, ASCII_CITY_PX = 78, 40, 48, 32
AMOUNT_PX, INSTRUCTION_PX, IDS_PX = 72, 40, 30
QR_GAP_PX = 40
FONT_PACKAGE: Final = "fonts-wqy-microhei"
"""The Debian package `make system-deps` installs for names in Chinese, Japanese or Korean."""
KNOWN_FONTS: Final = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
)
"""Tried first, in this order (the first that draws every character wins), then whatever
fontconfig lists as covering the text."""
FC_LIST_TIMEOUT_S = 10
_NO_GLYPH: Final = "\U0010fffd"
"""A private-use code point no font draws: what its glyph looks like is the font's 'missing'."""
_PROBE_PX = 32


class PosterInvalid(PaycodeError):
    code = ErrorCode.INVALID_ARGUMENT


class FontMissing(PaycodeError):
    """No installed font draws the merchant's name or city: the machine's setup is incomplete."""

    code = ErrorCode.CONFIG_INVALID


def _size_px() -> tuple[int, int]:
    width_mm, height_mm = A6_MM
    return round(width_mm / MM_PER_INCH * DPI), round(height_mm / MM_PER_INCH * DPI)


@functools.lru_cache(maxsize=64)
def font_for(text: str) -> Path | None:
    """The font file the poster draws `text` with: None for printable ASCII (Pillow's own
    font), else the first installed font that has a glyph for every character (remembered for
    the process). Raises FontMissing when none has."""
    if text.isascii():
        return None
    for candidate in (*KNOWN_FONTS, *_fontconfig_fonts(text)):
        if candidate.is_file() and draws_every_character(candidate, text):
            return candidate
    raise FontMissing(
        f"no installed font draws {text!r}: install one that does, `apt-get install "
        f"{FONT_PACKAGE}` for Chinese, Japanese and Korean (`make system-deps` does) or "
        "fonts-noto-core for most other scripts, and print the poster again"
    )


def _fontconfig_fonts(text: str) -> list[Path]:
    """The fonts fontconfig says cover every character of `text`; [] without fontconfig."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return []
    charset = " ".join(f"{ord(char):x}" for char in sorted(set(text)) if not char.isspace())
    try:
        listed = subprocess.run(  # noqa: S603 - fc-list from PATH, our own arguments
            [fc_list, f":charset={charset}", "file"],
            capture_output=True,
            text=True,
            timeout=FC_LIST_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    files = (line.strip().rstrip(":") for line in listed.stdout.splitlines())
    return sorted(Path(file) for file in files if file)


@functools.lru_cache(maxsize=64)
def _glyph(font_path: Path, char: str) -> tuple[tuple[int, int], bytes]:
    font = ImageFont.truetype(str(font_path), _PROBE_PX)
    mask = font.getmask(char)
    return mask.size, bytes(mask)


def draws_every_character(font_path: Path, text: str) -> bool:
    """Whether the font has a glyph for each character of `text` (spaces aside): a character
    it lacks is drawn as the font's 'missing' glyph, the one a private-use code point gets."""
    missing = _glyph(font_path, _NO_GLYPH)
    return all(_glyph(font_path, char) != missing for char in set(text) if not char.isspace())


def _font(text: str, size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = font_for(text)
    if path is None:
        return ImageFont.load_default(size=size_px)
    return ImageFont.truetype(str(path), size_px)


def fitted_size(text: str, size_px: int, width_px: int) -> int:
    """`size_px`, or smaller so that `text` fits between the margins."""
    room = width_px - 2 * MARGIN_PX
    for size in range(size_px, 11, -2):
        if _font(text, size).getlength(text) <= room:
            return size
    return 12


def _centered(draw: ImageDraw.ImageDraw, y_px: int, text: str, size_px: int, width_px: int) -> int:
    """Draw `text` centered at `y_px` (smaller if it would not fit); the y just below it."""
    size_px = fitted_size(text, size_px, width_px)
    font = _font(text, size_px)
    left, top, right, bottom = (round(edge) for edge in draw.textbbox((0, 0), text, font=font))
    draw.text(((width_px - (right - left)) // 2, y_px), text, font=font, fill=0)
    return y_px + (bottom - top) + size_px // 2


def _check_payload(code: CollectionCode, payload: str) -> None:
    """The QR must say what the poster prints: merchant, name, city, amount, order."""
    try:
        read = read_collection(payload)
    except CodeMalformed as error:
        raise PosterInvalid(f"not a Paycode collection payload: {error.message}") from error
    printed = (
        "merchant_id",
        "merchant_name",
        "merchant_city",
        "local_name",
        "local_city",
        "currency",
        "amount",
        "reference",
    )
    for field in printed:
        if getattr(read, field) != getattr(code, field):
            raise PosterInvalid(
                f"the payload's {field} is {getattr(read, field)!r}, the poster's "
                f"{getattr(code, field)!r}: they must be the same code"
            )


def render_poster(
    code: CollectionCode, payload: str, *, full_name: str | None = None
) -> Image.Image:
    """The A6 poster (300 dpi, grayscale) of `code`, whose text is `payload` (signed by the
    server, or built here). `full_name`: the merchant's name when EMV's 25 characters cut it.
    Raises PosterInvalid when the payload is another code, FontMissing when no font draws the
    name or city."""
    _check_payload(code, payload)
    width_px, height_px = _size_px()
    poster = Image.new("L", (width_px, height_px), 255)
    draw = ImageDraw.Draw(poster)
    title = full_name if full_name and code.local_name is None else code.display_name
    y_px = _centered(draw, MARGIN_PX, title, NAME_PX, width_px)
    if code.local_name is not None:
        y_px = _centered(draw, y_px, code.merchant_name, ASCII_NAME_PX, width_px)
    y_px = _centered(draw, y_px, code.display_city, CITY_PX, width_px)
    if code.local_city is not None:
        y_px = _centered(draw, y_px, code.merchant_city, ASCII_CITY_PX, width_px)
    ids_y_px = height_px - MARGIN_PX - IDS_PX - 10
    # Below the QR: the gap, the amount and the instruction (each line about 1.5 its size),
    # clear of the ids line pinned to the foot.
    below_px = QR_GAP_PX + (AMOUNT_PX + INSTRUCTION_PX) * 3 // 2 + IDS_PX + height_px - ids_y_px
    qr = qr_image(payload, box_px=1, border_modules=4)
    room_px = min(width_px - 2 * MARGIN_PX, height_px - y_px - below_px)
    box_px = max(1, room_px // qr.width)
    qr = qr.resize((qr.width * box_px, qr.height * box_px), Image.Resampling.NEAREST)
    poster.paste(qr, ((width_px - qr.width) // 2, y_px))
    y_px += qr.height + QR_GAP_PX
    amount = f"{code.amount} {code.currency}" if code.amount else f"Any amount, in {code.currency}"
    y_px = _centered(draw, y_px, amount, AMOUNT_PX, width_px)
    y_px = _centered(draw, y_px, INSTRUCTION, INSTRUCTION_PX, width_px)
    ids = f"merchant {code.merchant_id}"
    if code.reference:
        ids += f"  order {code.reference}"
    _centered(draw, max(y_px, ids_y_px), ids, IDS_PX, width_px)
    return poster


def save_poster(poster: Image.Image, path: Path) -> Path:
    """PNG or PDF at 300 dpi (A6 when printed at 100%)."""
    suffix = path.suffix.lower()
    if suffix not in POSTER_SUFFIXES:
        raise PosterInvalid(f"--out must end in .png or .pdf, got {path.name!r}")
    if suffix == ".pdf":
        poster.save(path, "PDF", resolution=DPI)
    else:
        poster.save(path, "PNG", dpi=(DPI, DPI))
    return path
