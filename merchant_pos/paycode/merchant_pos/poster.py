"""A printable A6 collection poster: the merchant's EMV MPM QR, name, city, amount, id.

Consumers scan it with their wallet and pay online (`paycode-wallet pay --qr-image`). A static
poster (no amount) hangs by the till; a dynamic one carries an amount and an order reference
and pays once. The payload comes from shared.emv.collection, so the wallet and the server read
exactly what was printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from paycode.appkit.rendering import qr_image
from paycode.shared.codes import ErrorCode
from paycode.shared.emv.collection import CollectionCode, build_collection_payload
from paycode.shared.errors import PaycodeError
from paycode.shared.money import format_amount, parse_amount

A6_MM = (105, 148)
DPI = 300
MM_PER_INCH = 25.4
MARGIN_PX = 90
EMV_NAME_CHARS_MAX = 25
INSTRUCTION = "Scan with your Paycode wallet to pay"
POSTER_SUFFIXES = (".png", ".pdf")


class PosterInvalid(PaycodeError):
    code = ErrorCode.INVALID_ARGUMENT


@dataclass(frozen=True)
class MerchantProfile:
    """What GET /v1/merchant tells a terminal about the merchant it collects for."""

    merchant_id: str
    name: str
    city: str
    country: str
    currency: str
    terminal_id: str | None = None


def collection_code(
    profile: MerchantProfile, *, amount: str | None, reference: str | None
) -> CollectionCode:
    """The QR's content. EMV allows 25 characters of name: longer names are cut for the QR
    (the wallet shows the server's full name once paid) and printed whole on the poster."""
    if amount is not None:
        amount = format_amount(parse_amount(amount, profile.currency))
    return CollectionCode(
        merchant_id=profile.merchant_id,
        merchant_name=profile.name[:EMV_NAME_CHARS_MAX],
        merchant_city=profile.city,
        currency=profile.currency,
        country_code=profile.country,
        terminal_id=profile.terminal_id,
        amount=amount,
        reference=reference if amount is not None else None,
    )


def _size_px() -> tuple[int, int]:
    width_mm, height_mm = A6_MM
    return round(width_mm / MM_PER_INCH * DPI), round(height_mm / MM_PER_INCH * DPI)


def _centered(draw: ImageDraw.ImageDraw, y_px: int, text: str, size_px: int, width_px: int) -> int:
    """Draw `text` centered at `y_px`; the y just below it."""
    font = ImageFont.load_default(size=size_px)
    left, top, right, bottom = (round(edge) for edge in draw.textbbox((0, 0), text, font=font))
    draw.text(((width_px - (right - left)) // 2, y_px), text, font=font, fill=0)
    return y_px + (bottom - top) + size_px // 2


def render_poster(
    profile: MerchantProfile, code: CollectionCode, payload: str | None = None
) -> Image.Image:
    """`payload`: the server-signed text of `code` (unsigned when built here, for tests)."""
    width_px, height_px = _size_px()
    poster = Image.new("L", (width_px, height_px), 255)
    draw = ImageDraw.Draw(poster)
    y_px = _centered(draw, MARGIN_PX, profile.name, 78, width_px)
    y_px = _centered(draw, y_px, profile.city, 48, width_px)
    qr = qr_image(payload or build_collection_payload(code), box_px=1, border_modules=4)
    box_px = max(1, (width_px - 2 * MARGIN_PX) // qr.width)
    qr = qr.resize((qr.width * box_px, qr.height * box_px), Image.Resampling.NEAREST)
    poster.paste(qr, ((width_px - qr.width) // 2, y_px))
    y_px += qr.height + 40
    amount = f"{code.amount} {code.currency}" if code.amount else f"Any amount, in {code.currency}"
    y_px = _centered(draw, y_px, amount, 72, width_px)
    y_px = _centered(draw, y_px, INSTRUCTION, 40, width_px)
    ids = f"merchant {profile.merchant_id}"
    if code.reference:
        ids += f"  order {code.reference}"
    _centered(draw, max(y_px, height_px - MARGIN_PX - 40), ids, 30, width_px)
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
