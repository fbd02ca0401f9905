"""The decoding passes the POS scanner runs: which decoder, on what version of the frame.

A pass is a decoder (any `DecoderBackend`) plus the resize it reads: a QR reader wants the
frame at working size, a Code 128 reader an image squeezed along the bars (bars are vertical,
so averaging rows keeps every bar width and leaves fewer rows to scan), pyzbar a half-size
image. Wrappers add what a camera needs on top of the plain backends: turning the image for
a barcode held sideways, sharpening it for one slightly out of focus.

A `Plan` says which passes run on every frame and which share the rest of the frame's time
budget in turn; `merchant_pos.scanloop.Scanner` runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zxingcpp

from paycode.appkit.decoding import (
    FORMAT_CODE128,
    FORMAT_QR,
    Decoded,
    DecoderBackend,
    Gray,
)
from paycode.merchant_pos.decoders import available_backends, make_backend
from paycode.merchant_pos.opencv import cv2

__all__ = [
    "DEFAULT_BACKENDS",
    "DecodePass",
    "Plan",
    "SharpenedPass",
    "TurnedPass",
    "ZxingPass",
    "default_plan",
]

DEFAULT_BACKENDS = ("zxing", "pyzbar")  # opencv reads nothing these miss, at 5-10x the cost

_ZXING_NAMES = {
    zxingcpp.BarcodeFormat.QRCode: FORMAT_QR,
    zxingcpp.BarcodeFormat.Code128: FORMAT_CODE128,
}


class ZxingPass:
    """zxing-cpp restricted to some formats and search options, so a pass pays only for
    what it tries (its 90-degree and inverted-image retries each cost a full extra scan)."""

    name: str = "zxing"

    def __init__(
        self,
        formats: Sequence[zxingcpp.BarcodeFormat],
        *,
        binarizer: zxingcpp.Binarizer = zxingcpp.Binarizer.LocalAverage,
        try_rotate: bool = False,
        try_invert: bool = False,
    ) -> None:
        self._options: dict[str, Any] = {
            "formats": zxingcpp.BarcodeFormats(list(formats)),
            "text_mode": zxingcpp.TextMode.Plain,
            "binarizer": binarizer,
            "try_rotate": try_rotate,
            "try_invert": try_invert,
        }

    def decode(self, gray: Gray) -> list[Decoded]:
        """Every QR / Code 128 symbol zxing reads with these options."""
        found = zxingcpp.read_barcodes(gray, **self._options)
        return [_from_zxing(code, self.name) for code in found if code.symbology in _ZXING_NAMES]


class TurnedPass:
    """Runs `inner` on the image turned 90 degrees clockwise and maps corners back.

    Turning the image ourselves, rather than zxing's try_rotate, costs one scan instead of
    two: zxing would scan the unturned orientation again, which the primary pass already did.
    """

    def __init__(self, inner: DecoderBackend) -> None:
        self._inner = inner
        self.name = inner.name

    def decode(self, gray: Gray) -> list[Decoded]:
        """Decode the turned image; a turned pixel (x, y) came from (y, height - 1 - x)."""
        turned = np.ascontiguousarray(cv2.rotate(gray, cv2.ROTATE_90_CLOCKWISE), dtype=np.uint8)
        last_row = gray.shape[0] - 1
        return [
            Decoded(d.format, d.text, tuple((y, last_row - x) for x, y in d.corners), d.backend)
            for d in self._inner.decode(turned)
        ]


class SharpenedPass:
    """Runs `inner` on an unsharp-masked image. A camera out of focus by a pixel or two
    merges the narrowest Code 128 bars; restoring their edges makes most such frames
    readable again (on the synthetic set, zxing then reads three times as many blurred
    barcodes), for well under a millisecond on a squeezed image."""

    def __init__(self, inner: DecoderBackend, *, sigma_px: float = 2.0, amount: float = 2.5):
        self._inner = inner
        self._sigma_px = sigma_px
        self._amount = amount
        self.name = inner.name

    def decode(self, gray: Gray) -> list[Decoded]:
        """Decode gray + amount * (gray - blurred gray), saturated to 0..255."""
        blurred = cv2.GaussianBlur(gray, (0, 0), self._sigma_px)
        sharp = cv2.addWeighted(gray, 1.0 + self._amount, blurred, -self._amount, 0.0)
        return self._inner.decode(np.asarray(sharp, dtype=np.uint8))


def _from_zxing(code: zxingcpp.Barcode, backend: str) -> Decoded:
    pos = code.position
    points = (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)
    return Decoded(
        _ZXING_NAMES[code.symbology], code.text, tuple((p.x, p.y) for p in points), backend
    )


@dataclass(frozen=True, slots=True)
class DecodePass:
    """One decoder run on the working image resized by (`scale_x`, `scale_y`)."""

    label: str
    decoder: DecoderBackend
    scale_x: float = 1.0
    scale_y: float = 1.0


@dataclass(frozen=True, slots=True)
class Plan:
    """`always` passes run on every frame; `ring` passes share what is left of the budget."""

    always: tuple[DecodePass, ...]
    ring: tuple[DecodePass, ...] = ()


_QR, _C128 = zxingcpp.BarcodeFormat.QRCodeModel2, zxingcpp.BarcodeFormat.Code128


def _zxing_passes() -> tuple[list[DecodePass], list[DecodePass]]:
    """zxing's primary and extra passes.

    Primary: QR at working size (zxing's own pyramid handles large codes and moiré), and
    Code 128 on an image squeezed to a quarter of its height: bars are vertical, so averaging
    rows keeps every bar width, smooths noise, and leaves a quarter of the rows to scan
    (Code 128 row scanning is most of zxing's cost on a 720p frame).
    Extra: QR with the global binarizer at half size (screen moiré, uneven light); Code 128
    sharpened (focus blur); Code 128 turned 90 degrees (a phone held sideways) on an image
    squeezed in width; inverted QR at half size (light-on-dark, a phone in dark mode).
    """
    primary = [
        DecodePass("zxing-qr", ZxingPass([_QR])),
        DecodePass("zxing-c128", ZxingPass([_C128]), scale_y=0.25),
    ]
    extra = [
        DecodePass(
            "zxing-qr-gh@0.5",
            ZxingPass([_QR], binarizer=zxingcpp.Binarizer.GlobalHistogram),
            0.5,
            0.5,
        ),
        DecodePass("zxing-c128-sharp", SharpenedPass(ZxingPass([_C128])), scale_y=0.25),
        DecodePass("zxing-c128-90", TurnedPass(ZxingPass([_C128])), scale_x=0.25),
        DecodePass("zxing-qr-inv@0.5", ZxingPass([_QR], try_invert=True), 0.5, 0.5),
    ]
    return primary, extra


def _backend_passes(name: str) -> tuple[list[DecodePass], list[DecodePass]]:
    """(primary, extra) passes of one backend. The others read half-size images: a quarter
    of the pixels, and area averaging smooths noise and moiré too."""
    if name == "zxing":
        return _zxing_passes()
    return [DecodePass(f"{name}@0.5", make_backend(name), 0.5, 0.5)], []


def default_plan(backends: Sequence[str] | None = None) -> Plan:
    """The plan for `backends` (default: those of DEFAULT_BACKENDS that load here): the first
    backend's primary passes always run; every other pass joins the ring, other backends'
    primaries first."""
    names = (
        list(backends)
        if backends is not None
        else [name for name in available_backends() if name in DEFAULT_BACKENDS]
    )
    if not names:
        raise ValueError("a Scanner needs at least one decoder backend")
    per_backend = [_backend_passes(name) for name in names]
    others = [p for primary, _ in per_backend[1:] for p in primary]
    extras = [p for _, extra in per_backend for p in extra]
    return Plan(tuple(per_backend[0][0]), tuple(others + extras))
