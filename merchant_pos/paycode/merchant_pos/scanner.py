"""Find payment codes in a camera frame or an image file.

Three decoders sit behind one small interface so the POS can prefer the fast, robust one
(zxing-cpp), fall back to pyzbar where the system library is installed, and still work with
nothing but OpenCV. Every backend reads only the two symbologies payment codes use, QR and
Code 128: a product barcode that drifts into the camera's view is not a payment attempt.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import cv2
import numpy as np
import zxingcpp
from numpy.typing import NDArray

from paycode.shared.errors import ImageUnreadable

__all__ = [
    "BACKEND_NAMES",
    "Decoded",
    "DecoderBackend",
    "OpenCvBackend",
    "PyzbarBackend",
    "ZxingBackend",
    "available_backends",
    "decode_image_file",
    "make_backend",
    "to_gray",
]

Gray = NDArray[np.uint8]
Corners = tuple[tuple[int, int], ...]

FORMAT_QR = "qr"
FORMAT_CODE128 = "code128"
CORNER_COUNT = 4

_ZXING_FORMATS = zxingcpp.BarcodeFormats(
    [zxingcpp.BarcodeFormat.QRCodeModel2, zxingcpp.BarcodeFormat.Code128]
)
_ZXING_NAMES: Mapping[zxingcpp.BarcodeFormat, str] = MappingProxyType(
    {zxingcpp.BarcodeFormat.QRCode: FORMAT_QR, zxingcpp.BarcodeFormat.Code128: FORMAT_CODE128}
)
_ZBAR_NAMES: Mapping[str, str] = MappingProxyType({"QRCODE": FORMAT_QR, "CODE128": FORMAT_CODE128})


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


def _checked_gray(gray: Gray) -> Gray:
    """Reject frames that are not 2-D uint8: that is a caller bug, not 'no code in view'."""
    if gray.ndim != 2 or gray.dtype != np.uint8 or gray.size == 0:
        raise ValueError(
            f"expected a non-empty 2-D uint8 gray image, got shape {gray.shape} of {gray.dtype}"
        )
    return np.ascontiguousarray(gray)


def _int_corners(points: Iterable[Sequence[float]]) -> Corners:
    """Round decoder coordinates (often float) to whole pixels."""
    return tuple((round(float(x)), round(float(y))) for x, y in points)


def _quad(points: Sequence[Sequence[float]]) -> Corners:
    """Reduce a decoder's outline to 4 clockwise corners.

    pyzbar reports a Code 128 outline as many scan-line points and its QR corners
    counter-clockwise; the POS wants one shape for every backend.
    """
    outline = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    pts = outline if len(outline) == CORNER_COUNT else cv2.boxPoints(cv2.minAreaRect(outline))
    centre = pts.mean(axis=0)
    angles = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])
    clockwise = pts[np.argsort(angles)]  # y grows downwards, so rising angle is clockwise
    start = int(np.argmin(clockwise.sum(axis=1)))
    return _int_corners(np.roll(clockwise, -start, axis=0).tolist())


class ZxingBackend:
    """zxing-cpp: the fastest and most forgiving reader (perspective, blur, inverted screens).

    QR is restricted to Model 2, the only QR variant a wallet renders; Micro QR and rMQR
    finders would only add false positives and time.
    """

    name: str = "zxing"

    def decode(self, gray: Gray) -> list[Decoded]:
        """Decode with TextMode.Plain: the symbol's bytes as text, no HRI reformatting."""
        found = zxingcpp.read_barcodes(
            _checked_gray(gray), formats=_ZXING_FORMATS, text_mode=zxingcpp.TextMode.Plain
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


class PyzbarBackend:
    """pyzbar over the system zbar library: a second, independent reader.

    It needs libzbar0 from the OS, which a pip install cannot provide, so construction fails
    loudly instead of every frame silently decoding to nothing.
    """

    name: str = "pyzbar"

    def __init__(self) -> None:
        try:
            # Imported here, not at the top: the import loads libzbar, which may be absent.
            from pyzbar import pyzbar  # noqa: PLC0415
        except (ImportError, OSError) as exc:
            raise RuntimeError(
                "pyzbar backend unavailable: the zbar shared library could not be loaded "
                f"({exc}); install it with `apt-get install libzbar0`"
            ) from exc
        self._decode: Callable[..., list[Any]] = pyzbar.decode
        self._symbols = [pyzbar.ZBarSymbol.QRCODE, pyzbar.ZBarSymbol.CODE128]

    def decode(self, gray: Gray) -> list[Decoded]:
        """Decode bytes as UTF-8, replacing bad bytes so the POS reports a malformed code
        instead of ignoring a symbol the cashier can see."""
        found = self._decode(_checked_gray(gray), symbols=self._symbols)
        return [self._to_decoded(symbol) for symbol in found if symbol.type in _ZBAR_NAMES]

    def _to_decoded(self, symbol: Any) -> Decoded:
        data: bytes = symbol.data
        return Decoded(
            format=_ZBAR_NAMES[symbol.type],
            text=data.decode("utf-8", errors="replace"),
            corners=_quad([(point.x, point.y) for point in symbol.polygon]),
            backend=self.name,
        )


def _code128_probe() -> Gray:
    """A clean Code 128 picture, used to ask an OpenCV build whether it can read Code 128."""
    barcode = zxingcpp.create_barcode("0123456789", zxingcpp.BarcodeFormat.Code128)
    bitmap = np.asarray(zxingcpp.write_barcode_to_image(barcode, scale=3), dtype=np.uint8)
    return np.pad(np.repeat(bitmap, 2, axis=0), 40, constant_values=255)


def _is_code128(kind: str) -> bool:
    return kind.replace("_", "").replace("-", "").upper() == "CODE128"


class OpenCvBackend:
    """OpenCV: always installed with the camera stack, slowest, the last fallback.

    cv2.barcode only reads EAN/UPC in many builds, so Code 128 support is probed once at
    construction by decoding a known barcode; without it this backend is QR-only.
    """

    name: str = "opencv"

    def __init__(self) -> None:
        self._qr = cv2.QRCodeDetector()
        self._barcode: Any = None
        if hasattr(cv2, "barcode"):
            detector: Any = cv2.barcode.BarcodeDetector()
            _, _, kinds, _ = detector.detectAndDecodeWithType(_code128_probe())
            if any(_is_code128(kind) for kind in kinds):
                self._barcode = detector

    @property
    def reads_code128(self) -> bool:
        """Whether this OpenCV build decodes Code 128 (numeric codes) at all."""
        return self._barcode is not None

    def decode(self, gray: Gray) -> list[Decoded]:
        """QR first, then Code 128 when the build supports it.

        OpenCV's decoders can fail an internal assertion on odd frames; a camera loop must
        survive that, so cv2.error counts as "nothing read in this frame".
        """
        frame = _checked_gray(gray)
        try:
            return self._decode_qr(frame) + self._decode_code128(frame)
        except cv2.error:
            return []

    def _decode_qr(self, frame: Gray) -> list[Decoded]:
        ok, texts, points, _ = self._qr.detectAndDecodeMulti(frame)
        if not ok or points is None:
            return []
        return [
            Decoded(FORMAT_QR, text, _int_corners(quad.reshape(-1, 2).tolist()), self.name)
            for text, quad in zip(texts, points, strict=True)
            if text
        ]

    def _decode_code128(self, frame: Gray) -> list[Decoded]:
        if self._barcode is None:
            return []
        ok, texts, kinds, points = self._barcode.detectAndDecodeWithType(frame)
        if not ok or points is None:
            return []
        return [
            Decoded(FORMAT_CODE128, text, _quad(quad.reshape(-1, 2).tolist()), self.name)
            for text, kind, quad in zip(texts, kinds, points, strict=True)
            if text and _is_code128(kind)
        ]


_FACTORIES: dict[str, Callable[[], DecoderBackend]] = {
    "zxing": ZxingBackend,
    "pyzbar": PyzbarBackend,
    "opencv": OpenCvBackend,
}
BACKEND_NAMES: tuple[str, ...] = tuple(_FACTORIES)  # preference order


def make_backend(name: str) -> DecoderBackend:
    """Build the named backend; RuntimeError if its native library is missing here."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown decoder backend {name!r}; choose one of {BACKEND_NAMES}")
    return factory()


def available_backends() -> list[str]:
    """Names of the backends that load on this machine, best first."""
    names = []
    for name in BACKEND_NAMES:
        try:
            make_backend(name)
        except RuntimeError:
            continue
        names.append(name)
    return names


def _gray_from_bgra(image: NDArray[np.uint8]) -> Gray:
    """Flatten alpha onto white: an exported code with a transparent background is
    black-on-nothing, which would otherwise read as black-on-black."""
    gray = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY).astype(np.float32)
    alpha = image[:, :, 3].astype(np.float32) / 255.0
    flat: Gray = np.round(gray * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return flat


def to_gray(image: NDArray[Any]) -> Gray:
    """Convert an OpenCV image (gray, BGR or BGRA; 8- or 16-bit) to 8-bit gray."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {image.dtype}; expected uint8 or uint16")
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    if channels == 1:
        return np.ascontiguousarray(image.reshape(image.shape[:2]))
    if channels == 3:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    if channels == 4:
        return _gray_from_bgra(image)
    raise ValueError(f"unsupported image shape {image.shape}; expected gray, BGR or BGRA")


def decode_image_file(path: str | os.PathLike[str], *, backend: str = "zxing") -> list[Decoded]:
    """Read an image file (PNG, JPEG, ...) and decode the payment codes in it.

    IMREAD_UNCHANGED keeps the alpha channel, so transparent backgrounds become white.
    """
    file = Path(path)
    if not file.is_file():
        raise ImageUnreadable(f"no image file at {file}")
    image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageUnreadable(f"{file} is not an image OpenCV can read")
    return make_backend(backend).decode(to_gray(image))
