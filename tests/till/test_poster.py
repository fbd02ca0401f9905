"""The collection poster (paycode.merchant_pos.poster) for a merchant named in its own script:
the QR read back from the PNG carries tag 64, and the name is drawn as real glyphs, not the
empty boxes of a font that lacks them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from paycode.appkit.decoding import decode_image_file
from paycode.merchant_pos import poster
from paycode.shared.emv.collection import (
    CollectionCode,
    build_collection_payload,
    read_collection,
)

NAME = "北京烤鸭店"
LATIN_ONLY_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
"""Installed on every Debian machine with fontconfig; it has no Han characters."""
SHOWN = Path("/tmp/cjk-poster.png")


def _code(amount: str | None = "88.00") -> tuple[CollectionCode, str]:
    """The code the server issues for 北京烤鸭店 (paycode.server.charge.merchant_qr)."""
    code = CollectionCode(
        merchant_id="mch_0123456789abcdef",
        merchant_name="Beijing Kaoya Dian",
        merchant_city="Beijing",
        currency="CNY",
        terminal_id="term_0123456789abcdef",
        amount=amount,
        reference="order-1" if amount else None,
        language="ZH",
        local_name=NAME,
        local_city="北京",
    )
    return code, build_collection_payload(code)


@pytest.fixture(autouse=True)
def _fresh_font_choice() -> None:
    poster.font_for.cache_clear()


def test_the_qr_read_from_the_png_carries_the_chinese_name(tmp_path: Path) -> None:
    code, payload = _code()
    png = poster.save_poster(poster.render_poster(code, payload), tmp_path / "duck.png")
    SHOWN.write_bytes(png.read_bytes())  # for a person to look at
    decoded = decode_image_file(png)
    assert [found.text for found in decoded] == [payload]
    read = read_collection(decoded[0].text)
    assert (read.language, read.local_name, read.local_city) == ("ZH", NAME, "北京")
    assert (read.merchant_name, read.merchant_city) == ("Beijing Kaoya Dian", "Beijing")
    assert (read.amount, read.reference) == ("88.00", "order-1")


def _ink_rows(image: Image.Image) -> list[tuple[int, int]]:
    """The bands of rows with ink above the QR: one (top, bottom) per printed line."""
    gray = np.asarray(image)
    inked = (gray < 128).any(axis=1)
    bands: list[tuple[int, int]] = []
    top = None
    for row, ink in enumerate(inked):
        if ink and top is None:
            top = row
        elif not ink and top is not None:
            bands.append((top, row))
            top = None
    return bands


def test_the_name_is_drawn_with_glyphs_not_boxes() -> None:
    code, payload = _code()
    image = poster.render_poster(code, payload)
    font_path = poster.font_for(NAME)
    assert font_path is not None
    # The font really has the glyphs: each character differs from the font's missing glyph,
    # and the five differ from each other (a font without them draws five equal boxes).
    font = ImageFont.truetype(str(font_path), 64)
    masks = {bytes(font.getmask(char)) for char in NAME}
    assert len(masks) == len(NAME)
    assert bytes(font.getmask("\U0010fffd")) not in masks
    assert poster.draws_every_character(font_path, NAME)
    assert not poster.draws_every_character(LATIN_ONLY_FONT, NAME)
    # The first printed line is the name drawn with that font, and not with one lacking it.
    top, bottom = _ink_rows(image)[0]
    band = np.asarray(image)[top:bottom]
    for path, same in ((font_path, True), (LATIN_ONLY_FONT, False)):
        reference = Image.new("L", image.size, 255)
        _draw_name(reference, path)
        ref_top, ref_bottom = _ink_rows(reference)[0]
        matches = (ref_bottom - ref_top == bottom - top) and np.array_equal(
            np.asarray(reference)[ref_top:ref_bottom], band
        )
        assert matches is same, path


def _draw_name(image: Image.Image, font_path: Path) -> None:
    """NAME where the poster puts its first line, centered, at its size, in `font_path`."""
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(font_path), poster.NAME_PX)
    left, _, right, _ = (round(edge) for edge in draw.textbbox((0, 0), NAME, font=font))
    draw.text(((image.width - (right - left)) // 2, poster.MARGIN_PX), NAME, font=font, fill=0)


def test_no_font_with_the_glyphs_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poster, "KNOWN_FONTS", (LATIN_ONLY_FONT,))
    monkeypatch.setattr(poster, "_fontconfig_fonts", lambda text: [LATIN_ONLY_FONT])
    code, payload = _code()
    with pytest.raises(poster.FontMissing) as raised:
        poster.render_poster(code, payload)
    assert poster.FONT_PACKAGE in raised.value.message and NAME in raised.value.message
    assert raised.value.code == "config_invalid"
    ascii_code = CollectionCode(
        merchant_id="mch_0123456789abcdef",
        merchant_name="Corner Cafe",
        merchant_city="Beijing",
        currency="CNY",
    )
    poster.render_poster(ascii_code, build_collection_payload(ascii_code))  # needs no font


def test_pdf_and_png_both_save(tmp_path: Path) -> None:
    code, payload = _code(amount=None)
    image = poster.render_poster(code, payload)
    pdf = poster.save_poster(image, tmp_path / "duck.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    png = poster.save_poster(image, tmp_path / "duck.png")
    assert read_collection(decode_image_file(png)[0].text).local_name == NAME


def test_a_payload_of_another_code_is_refused() -> None:
    code, _ = _code()
    other, other_payload = _code(amount="1.00")
    with pytest.raises(poster.PosterInvalid, match="amount"):
        poster.render_poster(code, other_payload)
    with pytest.raises(poster.PosterInvalid, match="not a Paycode collection"):
        poster.render_poster(code, "hello")
    assert poster.render_poster(other, other_payload).size == (1240, 1748)


def test_a_long_ascii_name_is_printed_whole() -> None:
    full_name = "The Very Long Name Of A Noodle House On Wangfujing Street"
    code = CollectionCode("mch_0123456789abcdef", full_name[:25], "Beijing", "CNY")
    image = poster.render_poster(code, build_collection_payload(code), full_name=full_name)
    top, bottom = _ink_rows(image)[0]
    inked_columns = np.flatnonzero((np.asarray(image)[top:bottom] < 128).any(axis=0))
    assert inked_columns[0] >= poster.MARGIN_PX  # shrunk to fit between the margins
    assert inked_columns[-1] < image.width - poster.MARGIN_PX
    assert inked_columns[-1] - inked_columns[0] > image.width // 2  # and not to a speck
