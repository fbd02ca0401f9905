"""The decoding passes the POS scanner runs: which decoder, on what version of the frame.

A pass is a decoder (any `DecoderBackend`) plus the resize it reads: the working frame, an
image squeezed along the bars for Code 128 (bars are vertical, so averaging rows keeps every
bar width and leaves fewer rows to scan), or an enlarged one for small codes. Wrappers add
what a camera needs on top of the plain backends: sharpening for a code slightly out of
focus, local contrast equalisation for glare and shadows.

A `Plan` says which passes run on every frame and which share the rest of the frame's time
budget in turn; `merchant_pos.scanloop.Scanner` runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
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
from paycode.merchant_pos.codelike import code_crop_within, from_crop
from paycode.merchant_pos.deblur import DeblurredPass, RefocusedPass
from paycode.merchant_pos.decoders import available_backends, make_backend
from paycode.merchant_pos.opencv import cv2
from paycode.merchant_pos.unfold import UnfoldedPass

__all__ = [
    "DEFAULT_BACKENDS",
    "STILL_BACKENDS",
    "DecodePass",
    "EqualisedPass",
    "Plan",
    "RegionPass",
    "SharpenedPass",
    "ThresholdedPass",
    "ZxingPass",
    "default_plan",
    "still_plan",
]

DEFAULT_BACKENDS = ("zxing", "pyzbar")  # opencv reads nothing these miss, at 5-10x the cost
# A still is one chance and has no frame budget: WeChat's reader (~10 ms, up to ~100 ms on a
# busy photo) runs there, last, after every pass of the camera's plan.
STILL_BACKENDS = (*DEFAULT_BACKENDS, "wechat")

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


class EqualisedPass:
    """Runs `inner` after CLAHE (contrast-limited local histogram equalisation): a glare
    spot or a fold's shadow leaves part of a code too bright or too dark for one threshold,
    and equalising each tile separately brings both parts back to full contrast."""

    def __init__(self, inner: DecoderBackend, *, clip_limit: float = 2.0, tiles: int = 8):
        self._inner = inner
        self._clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
        self.name = inner.name

    def decode(self, gray: Gray) -> list[Decoded]:
        """Decode the equalised image."""
        return self._inner.decode(np.asarray(self._clahe.apply(gray), dtype=np.uint8))


class RegionPass:
    """Runs `inner` on the part of the frame that looks like a code (`codelike.code_region`),
    enlarged `factor` times and sharpened. A code under ~2 px per module needs enlarging, and
    enlarging only that box costs a fraction of enlarging the frame; nothing to enlarge when
    no block is dense (an empty scene), or when the box is most of the frame anyway."""

    def __init__(self, inner: DecoderBackend, *, factor: float = 2.0, area_share_max: float = 0.25):
        self._inner = SharpenedPass(inner, sigma_px=2.0, amount=1.5)
        self._factor = factor
        self._area_share_max = area_share_max
        self.name = inner.name

    def decode(self, gray: Gray) -> list[Decoded]:
        """Decode the enlarged box; corners come back in `gray`'s pixels."""
        cropped = code_crop_within(gray, self._area_share_max)
        if cropped is None:
            return []
        crop, box = cropped
        size = (round(crop.shape[1] * self._factor), round(crop.shape[0] * self._factor))
        enlarged = cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC)
        found = self._inner.decode(np.ascontiguousarray(enlarged, dtype=np.uint8))
        return from_crop(found, box, self._factor)


class ThresholdedPass:
    """Runs `inner` (a zxing pass with the BoolCast binarizer, which takes the image as
    already black and white) on a mean-adaptive threshold of the frame: each pixel against
    the mean of its `block_px` neighbourhood. A glare patch on a blurred code leaves no
    contrast a whole-frame or coarse local threshold can use; a fine local one still
    separates the modules."""

    def __init__(self, inner: DecoderBackend, *, block_px: int = 15, offset: float = 5.0):
        self._inner = inner
        self._block_px = block_px
        self._offset = offset
        self.name = inner.name

    def decode(self, gray: Gray) -> list[Decoded]:
        """Decode the thresholded image."""
        binary = cv2.adaptiveThreshold(
            gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, self._block_px, self._offset
        )
        return self._inner.decode(np.asarray(binary, dtype=np.uint8))


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
    """zxing's primary and extra passes, chosen on the `tune` split of bench/scanner_set.py.

    Primary: one zxing read of QR and Code 128 at working size with its own 90-degree and
    inverted retries: on that set it reads every frame the two older primaries (QR, and Code
    128 squeezed to a quarter height) read and a fifth more of the Code 128 frames, because a
    squeeze smears bars that lean with the perspective.
    Extra: QR sharpened (focus and motion blur, small codes: the most frames any one extra
    pass rescues); Code 128 sharpened on an image widened 1.5x and squeezed to a quarter
    height (bars under 2 px per module, focus blur: the squeeze keeps it cheap); both
    formats at 1.5x (codes under ~2.5 px per module); the box that looks like a code
    enlarged 2x and sharpened (codes near 2 px per module, for a fraction of enlarging the
    frame), read once with zxing's local binarizer and once at one fixed threshold (small
    or defocused barcodes whose narrowest bars the local one merges); both formats after a
    fine adaptive threshold (a defocused code under glare); the box with its motion blur
    divided out (`merchant_pos.deblur`: a hand moving the phone); both formats strongly
    sharpened (a
    dim screen's amplified noise plus defocus, motion blur); QR after local contrast
    equalisation (glare, a fold's shadow); the box unfolded (`merchant_pos.unfold`: a
    folded sheet's far side stretched back); QR with the global binarizer at half size (screen
    moire).
    """
    both = [_QR, _C128]
    primary = [DecodePass("zxing", ZxingPass(both, try_rotate=True, try_invert=True))]
    extra = [
        DecodePass("zxing-qr-sharp", SharpenedPass(ZxingPass([_QR]), sigma_px=1.5, amount=1.5)),
        DecodePass(
            "zxing-c128-sharp-wide",
            SharpenedPass(ZxingPass([_C128])),
            scale_x=1.5,
            scale_y=0.25,
        ),
        DecodePass("zxing-x1.5", ZxingPass(both), 1.5, 1.5),
        DecodePass("zxing-region-x2", RegionPass(ZxingPass(both), area_share_max=0.4)),
        DecodePass(
            "zxing-region-x2-fixed",
            RegionPass(
                ZxingPass(
                    both,
                    binarizer=zxingcpp.Binarizer.FixedThreshold,
                    try_rotate=True,
                    try_invert=True,
                )
            ),
        ),
        DecodePass(
            "zxing-adaptive",
            ThresholdedPass(ZxingPass(both, binarizer=zxingcpp.Binarizer.BoolCast)),
        ),
        DecodePass(
            "zxing-deblur",
            DeblurredPass(ZxingPass(both, binarizer=zxingcpp.Binarizer.FixedThreshold)),
        ),
        DecodePass(
            "zxing-refocus",
            RefocusedPass(
                [ZxingPass(both, binarizer=zxingcpp.Binarizer.FixedThreshold), ZxingPass(both)]
            ),
        ),
        DecodePass("zxing-sharp-strong", SharpenedPass(ZxingPass(both), sigma_px=2.5, amount=3.0)),
        DecodePass("zxing-qr-clahe", EqualisedPass(ZxingPass([_QR]))),
        DecodePass("zxing-unfold", UnfoldedPass(ZxingPass(both))),
        DecodePass(
            "zxing-qr-gh@0.5",
            ZxingPass([_QR], binarizer=zxingcpp.Binarizer.GlobalHistogram),
            0.5,
            0.5,
        ),
    ]
    return primary, extra


def _backend_passes(name: str) -> tuple[list[DecodePass], list[DecodePass]]:
    """(primary, extra) passes of one backend. The others read the working image itself: at
    half size pyzbar read less than half of what it reads at full size on the tune split
    (small codes), and full size is where it reads frames zxing misses (folds, glare)."""
    if name == "zxing":
        return _zxing_passes()
    return [DecodePass(name, make_backend(name))], []


def default_plan(backends: Sequence[str] | None = None) -> Plan:
    """The plan for `backends` (default: those of DEFAULT_BACKENDS that load here): the first
    backend's primary passes always run; every other pass joins the ring, the first backend's
    extras (cheap, and they rescue the most frames) before the other backends' primaries."""
    names = list(backends) if backends is not None else available_backends(DEFAULT_BACKENDS)
    if not names:
        raise ValueError("a Scanner needs at least one decoder backend")
    per_backend = [_backend_passes(name) for name in names]
    others = [p for primary, _ in per_backend[1:] for p in primary]
    extras = [p for _, extra in per_backend for p in extra]
    return Plan(tuple(per_backend[0][0]), tuple(extras + others))


@cache
def still_plan() -> Plan:
    """The plan for a still picture: the camera's, then the STILL_BACKENDS only stills can
    afford. Built once per process: loading every backend costs more than most reads."""
    return default_plan(available_backends(STILL_BACKENDS))
