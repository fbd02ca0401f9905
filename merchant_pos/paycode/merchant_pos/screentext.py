"""Text on the till's screens, drawn with Pillow from a real font so it is crisp at any size.

OpenCV's Hershey fonts are thin strokes with no glyphs beyond ASCII; a screen read from a
metre away needs heavy, antialiased type, and an order id or a server's reason may be in any
script. Every function here draws into a Pillow image in place and is pure otherwise.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import ImageDraw, ImageFont

from paycode.merchant_pos.poster import KNOWN_FONTS, draws_every_character

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Box = tuple[int, int, int, int]
"""left, top, right, bottom in pixels (right and bottom exclusive)."""
Rgb = tuple[int, int, int]

HEAVY_FONTS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    Path("/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf"),
    Path("/usr/share/fonts/truetype/noto/NotoSans-Bold.ttf"),
)
"""Bold Latin faces: thick strokes survive distance, glare and a cheap panel."""
FONT_PX_MIN = 10
SHRINK_STEPS_MAX = 12
"""A fitted size is found in at most this many tries (each 10% smaller than the last)."""
LINE_GAP = 1.25
"""Line pitch as a multiple of the font size."""
WORDS_MAX = 120
"""A screen holds a few dozen words; a longer text is not read there (bounds the wrap)."""


@functools.lru_cache(maxsize=64)
def _font_path(text: str) -> Path | None:
    """The first installed bold face for ASCII, else the first known font that draws every
    character; None leaves Pillow's own scalable font (it always loads)."""
    candidates = HEAVY_FONTS if text.isascii() else (*HEAVY_FONTS, *KNOWN_FONTS)
    for path in candidates:
        if path.is_file() and (text.isascii() or draws_every_character(path, text)):
            return path
    return None


@functools.lru_cache(maxsize=256)
def _load(path: Path | None, size_px: int) -> Font:
    if path is None:
        return ImageFont.load_default(size=size_px)
    return ImageFont.truetype(str(path), size_px)


def font_for(text: str, size_px: int) -> Font:
    return _load(_font_path(text), max(FONT_PX_MIN, size_px))


def fitted_px(text: str, size_px: int, width_px: int) -> int:
    """`size_px`, or smaller so that `text` is at most `width_px` wide."""
    for _ in range(SHRINK_STEPS_MAX):
        if size_px <= FONT_PX_MIN or font_for(text, size_px).getlength(text) <= width_px:
            break
        size_px = int(size_px * 0.9)
    return max(FONT_PX_MIN, size_px)


def draw_centred(draw: ImageDraw.ImageDraw, text: str, box: Box, size_px: int, fill: Rgb) -> int:
    """One line centred in `box`, as large as `size_px` and the box's width allow (never taller
    than the box); returns the size used."""
    left, top, right, bottom = box
    size_px = fitted_px(text, min(size_px, bottom - top), right - left)
    centre = ((left + right) // 2, (top + bottom) // 2)
    draw.text(centre, text, font=font_for(text, size_px), fill=fill, anchor="mm")
    return size_px


def wrap(text: str, size_px: int, width_px: int) -> list[str]:
    """Greedy word wrap by measured width; a word wider than the line is left to overflow
    (the caller shrinks the size)."""
    font = font_for(text, size_px)
    lines: list[str] = []
    for word in text.split()[:WORDS_MAX]:
        if lines and font.getlength(f"{lines[-1]} {word}") <= width_px:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def fit_paragraph(
    text: str, room: tuple[int, int], size_px: int, *, lines_max: int
) -> tuple[int, list[str]]:
    """The largest size from `size_px` down to half of it at which `text` wraps into at most
    `lines_max` lines that fit `room` (width, height), and those lines. Text that fits at no
    size a metre can read is cut at the last line with an ellipsis: the log has it whole."""
    width_px, height_px = room
    smallest_px = max(FONT_PX_MIN, size_px // 2)
    for _ in range(SHRINK_STEPS_MAX):
        lines = wrap(text, size_px, width_px)
        widest = max((font_for(text, size_px).getlength(line) for line in lines), default=0)
        tall_px = len(lines) * size_px * LINE_GAP
        if len(lines) <= lines_max and tall_px <= height_px and widest <= width_px:
            return size_px, lines
        if size_px <= smallest_px:
            break
        size_px = max(smallest_px, int(size_px * 0.9))
    lines = wrap(text, size_px, width_px)
    if len(lines) > lines_max:
        lines = [*lines[: lines_max - 1], f"{lines[lines_max - 1]} …"]
    return size_px, lines


def draw_paragraph(
    draw: ImageDraw.ImageDraw, text: str, box: Box, size_px: int, fill: Rgb, *, lines_max: int
) -> int:
    """`text` wrapped and centred in `box` (fit_paragraph); returns the size used."""
    left, top, right, bottom = box
    size_px, lines = fit_paragraph(text, (right - left, bottom - top), size_px, lines_max=lines_max)
    pitch_px = round(size_px * LINE_GAP)
    first_top = top + (bottom - top - pitch_px * len(lines)) // 2
    for index, line in enumerate(lines):
        line_top = first_top + index * pitch_px
        draw_centred(draw, line, (left, line_top, right, line_top + pitch_px), size_px, fill)
    return size_px
