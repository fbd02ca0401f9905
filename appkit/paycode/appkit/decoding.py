"""Find payment codes in a gray picture or an image file.

Every decoder sits behind one small interface, `DecoderBackend`, and reads only the two
symbologies payment codes use, QR and Code 128: a product barcode that drifts into the
camera's view is not a payment attempt. This module holds the one every app installs,
zxing-cpp (the fastest and most forgiving), which the wallet uses with Pillow to read a
merchant's QR from an image file. The till adds pyzbar and OpenCV behind the same interface
(paycode.merchant_pos.decoders), so the wallet never loads OpenCV or libzbar.

Every image file any command reads goes through `open_image_file`, which reads the picture's
size from its header and refuses one over IMAGE_PIXELS_MAX before a pixel is decoded: a 76 KB
PNG of 20000 x 20000 white pixels would otherwise cost about a gigabyte.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

import numpy as np
import zxingcpp
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from paycode.shared.errors import ImageTooLarge, ImageUnreadable

__all__ = [
    "IMAGE_PIXELS_MAX",
    "Decoded",
    "DecoderBackend",
    "ZxingBackend",
    "check_pixels",
    "decode_image_file",
    "gray_image",
    "open_image_file",
]

Gray = NDArray[np.uint8]
Corners = tuple[tuple[int, int], ...]

FORMAT_QR = "qr"
FORMAT_CODE128 = "code128"
CORNER_COUNT = 4
IMAGE_PIXELS_MAX = 50_000_000
"""A 50 MP photo (8660 x 5773); a larger picture is not of a phone screen or a poster. It
decodes in about 250 MB (RGB and its gray copy), where a 400 MP bomb would take a gigabyte."""

_ZXING_FORMATS = zxingcpp.BarcodeFormats(
    [zxingcpp.BarcodeFormat.QRCodeModel2, zxingcpp.BarcodeFormat.Code128]
)
_ZXING_NAMES: Mapping[zxingcpp.BarcodeFormat, str] = MappingProxyType(
    {zxingcpp.BarcodeFormat.QRCode: FORMAT_QR, zxingcpp.BarcodeFormat.Code128: FORMAT_CODE128}
)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One code found in a frame.

    `corners` are 4 image pixel points, clockwise on screen; they start at the symbol's own
    top-left when the decoder reports orientation, else at the corner nearest the image's
    top-left. The POS uses them to outline the code it read.
    """

    format: str
    text: str
    corners: Corners
    backend: str


class DecoderBackend(Protocol):
    """A decoder the POS can run on every camera frame."""

    name: str

    def decode(self, gray: Gray) -> list[Decoded]:
        """Return every QR / Code 128 symbol in `gray`; [] when there is none."""
        ...


def checked_gray(gray: Gray) -> Gray:
    """Reject frames that are not 2-D uint8: that is a caller bug, not 'no code in view'."""
    if gray.ndim != 2 or gray.dtype != np.uint8 or gray.size == 0:
        raise ValueError(
            f"expected a non-empty 2-D uint8 gray image, got shape {gray.shape} of {gray.dtype}"
        )
    return np.ascontiguousarray(gray)


def int_corners(points: Iterable[Sequence[float]]) -> Corners:
    """Round decoder coordinates (often float) to whole pixels."""
    return tuple((round(float(x)), round(float(y))) for x, y in points)


class ZxingBackend:
    """zxing-cpp: the fastest and most forgiving reader (perspective, blur, inverted screens).

    QR is restricted to Model 2, the only QR variant a wallet renders; Micro QR and rMQR
    finders would only add false positives and time.
    """

    name: str = "zxing"

    def decode(self, gray: Gray) -> list[Decoded]:
        """Decode with TextMode.Plain: the symbol's bytes as text, no HRI reformatting."""
        found = zxingcpp.read_barcodes(
            checked_gray(gray), formats=_ZXING_FORMATS, text_mode=zxingcpp.TextMode.Plain
        )
        return [self._to_decoded(barcode) for barcode in found if barcode.symbology in _ZXING_NAMES]

    def _to_decoded(self, barcode: zxingcpp.Barcode) -> Decoded:
        pos = barcode.position
        corners = (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)
        return Decoded(
            format=_ZXING_NAMES[barcode.symbology],
            text=barcode.text,
            corners=tuple((point.x, point.y) for point in corners),
            backend=self.name,
        )


def gray_image(image: Image.Image) -> Gray:
    """8-bit gray of a Pillow image of any mode. Alpha is flattened onto white: an exported
    code with a transparent background is black-on-nothing, which would otherwise read as
    black-on-black. 16-bit gray keeps its high byte."""
    if image.mode.startswith("I;16"):
        deep = np.asarray(image, dtype=np.uint16)
        return np.ascontiguousarray((deep >> 8).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    return np.ascontiguousarray(np.asarray(image.convert("L"), dtype=np.uint8))


def check_pixels(width_px: int, height_px: int, what: object) -> None:
    """ImageTooLarge when a picture of this size is over IMAGE_PIXELS_MAX (videos too)."""
    if width_px * height_px > IMAGE_PIXELS_MAX:
        raise ImageTooLarge(
            f"{what} is {width_px} x {height_px} pixels ({width_px * height_px / 1e6:.0f} MP); "
            f"at most {IMAGE_PIXELS_MAX / 1e6:.0f} MP are read"
        )


def open_image_file(path: str | os.PathLike[str]) -> Image.Image:
    """The picture in an image file (PNG, JPEG, ...), decoded: ImageUnreadable when there is
    none, ImageTooLarge, from the header alone, when it has more than IMAGE_PIXELS_MAX pixels
    (Pillow's open reads only the header; load() decodes the first frame). Use it in a `with`:
    leaving it closes the file."""
    file = Path(path)
    if not file.is_file():
        raise ImageUnreadable(f"no image file at {file}")
    try:
        with warnings.catch_warnings():
            # Pillow warns on stderr about what check_pixels refuses below, in our own words.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
        try:
            check_pixels(image.width, image.height, file)
            image.load()
        except BaseException:
            image.close()
            raise
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(
            f"{file} has more pixels than Pillow opens at all; at most "
            f"{IMAGE_PIXELS_MAX / 1e6:.0f} MP are read"
        ) from error
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageUnreadable(f"{file} is not an image that can be read") from error
    return image


def decode_image_file(
    path: str | os.PathLike[str], *, backend: DecoderBackend | None = None
) -> list[Decoded]:
    """Read an image file (PNG, JPEG, ...) and decode the payment codes in it (zxing-cpp unless
    another backend is given)."""
    with open_image_file(path) as image:
        gray = gray_image(image)
    return (backend or ZxingBackend()).decode(gray)
