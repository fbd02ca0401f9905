"""The till's decoders besides zxing-cpp: pyzbar over the system zbar library, WeChat's QR
reader, and OpenCV.

They sit behind the interface of paycode.appkit.decoding, so the till can prefer the fast,
robust zxing-cpp, fall back to pyzbar where the system library is installed, try WeChat's
CNN-located reader on a still that nothing else reads, and still work with nothing but OpenCV.
`make_backend` builds any of them by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from types import MappingProxyType
from typing import Any

import numpy as np
import zxingcpp

from paycode.appkit.decoding import (
    CORNER_COUNT,
    FORMAT_CODE128,
    FORMAT_QR,
    Corners,
    Decoded,
    DecoderBackend,
    Gray,
    ZxingBackend,
    checked_gray,
    int_corners,
)
from paycode.merchant_pos.opencv import cv2

__all__ = [
    "BACKEND_NAMES",
    "OpenCvBackend",
    "PyzbarBackend",
    "WeChatBackend",
    "available_backends",
    "make_backend",
]

_ZBAR_NAMES: Mapping[str, str] = MappingProxyType({"QRCODE": FORMAT_QR, "CODE128": FORMAT_CODE128})


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
    return int_corners(np.roll(clockwise, -start, axis=0).tolist())


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
        found = self._decode(checked_gray(gray), symbols=self._symbols)
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
        frame = checked_gray(gray)
        try:
            return self._decode_qr(frame) + self._decode_code128(frame)
        except cv2.error:
            return []

    def _decode_qr(self, frame: Gray) -> list[Decoded]:
        ok, texts, points, _ = self._qr.detectAndDecodeMulti(frame)
        if not ok or points is None:
            return []
        return [
            Decoded(FORMAT_QR, text, int_corners(quad.reshape(-1, 2).tolist()), self.name)
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


# The detector and super-resolution networks of WeChat's reader (WeChatCV, Apache-2.0; the
# files, their published MD5 sums and the licence are in the models folder).
WECHAT_MODEL_FILES = ("detect.prototxt", "detect.caffemodel", "sr.prototxt", "sr.caffemodel")


class WeChatBackend:
    """WeChat's QR reader from OpenCV's contrib modules: a small CNN finds the code and a
    second one enlarges a small code before a zxing-derived decoder reads it. QR only.

    It reads photos of printed codes that a finder-pattern search alone misses, at several
    times zxing-cpp's cost, so the till runs it last, on a still (`paycode-pos inspect`)
    nothing else read. Construction fails loudly when the OpenCV build lacks the module or
    the model files are missing.
    """

    name: str = "wechat"

    def __init__(self) -> None:
        factory: Any = getattr(cv2, "wechat_qrcode_WeChatQRCode", None)
        if factory is None:
            raise RuntimeError(
                "wechat backend unavailable: this OpenCV has no wechat_qrcode module; "
                "install opencv-contrib-python<5 instead of opencv-python"
            )
        folder = resources.files("paycode.merchant_pos") / "models"
        paths = [str(folder / name) for name in WECHAT_MODEL_FILES]
        try:
            self._reader: Any = factory(*paths)
        except cv2.error as exc:
            raise RuntimeError(
                f"wechat backend unavailable: its models did not load ({exc})"
            ) from exc
        if self._reader is None:
            raise RuntimeError("wechat backend unavailable: its models did not load")

    def decode(self, gray: Gray) -> list[Decoded]:
        """Every QR text it reads; a cv2.error on an odd image counts as nothing read."""
        try:
            texts, quads = self._reader.detectAndDecode(checked_gray(gray))
        except cv2.error:
            return []
        return [
            Decoded(FORMAT_QR, text, _quad(np.asarray(quad).reshape(-1, 2).tolist()), self.name)
            for text, quad in zip(texts, quads, strict=True)
            if text
        ]


_FACTORIES: dict[str, Callable[[], DecoderBackend]] = {
    "zxing": ZxingBackend,
    "pyzbar": PyzbarBackend,
    "wechat": WeChatBackend,
    "opencv": OpenCvBackend,
}
BACKEND_NAMES: tuple[str, ...] = tuple(_FACTORIES)  # preference order


def make_backend(name: str) -> DecoderBackend:
    """Build the named backend; RuntimeError if its native library is missing here."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown decoder backend {name!r}; choose one of {BACKEND_NAMES}")
    return factory()


def available_backends(wanted: Sequence[str] = BACKEND_NAMES) -> list[str]:
    """Names of the `wanted` backends that load on this machine, best first. Each is built to
    find out (WeChat's loads its networks, OpenCV's decodes a probe), so ask only for those
    a plan may use."""
    names = []
    for name in (name for name in BACKEND_NAMES if name in wanted):
        try:
            make_backend(name)
        except RuntimeError:
            continue
        names.append(name)
    return names
