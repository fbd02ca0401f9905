"""Undoing motion blur on the part of a frame that looks like a code.

A hand moving the phone smears every point along a short line: the frame is the sharp image
convolved with that line (the point spread function, PSF). Sharpening cannot undo a smear of
5-8 px, but dividing it out in the frequency domain (a Wiener filter) can, once the line's
length and direction are known. Both are read off the frame itself: a line of length L
multiplies the spectrum by a sinc with zeros every 1/L, and the cepstrum (the spectrum of the
log spectrum) turns that periodic ripple into one sharp negative peak at the blur's own
(dx, dy). This runs on the code-like box only (`codelike.code_region`), where the code's
edges dominate the spectrum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from paycode.appkit.decoding import Decoded, DecoderBackend, Gray
from paycode.merchant_pos.codelike import Box, code_crop_within, from_crop

__all__ = ["DeblurredPass", "RefocusedPass", "blur_vector", "wiener_deblur", "wiener_refocus"]

BLUR_PX_MIN = 3  # shorter smears are what sharpening already handles
BLUR_PX_MAX = 10  # a hand moving faster than this in one exposure leaves nothing to read
NOISE_TO_SIGNAL = 0.01  # Wiener regulariser, chosen on the `tune` split (0.01-0.05 tried)
SIDE_PX_MIN = 4 * BLUR_PX_MAX  # a smaller box cannot show the blur's ripple

Floats = NDArray[np.float32]


def _cepstrum(gray: Gray) -> Floats:
    """The real cepstrum of the windowed image, zero shift at the centre."""
    image = np.asarray(gray, dtype=np.float32)
    image -= float(image.mean())
    window = np.outer(np.hanning(image.shape[0]), np.hanning(image.shape[1])).astype(np.float32)
    spectrum = np.abs(np.fft.rfft2(image * window))
    cepstrum = np.fft.irfft2(np.log(spectrum + 1e-3), s=image.shape)
    return np.asarray(np.fft.fftshift(cepstrum), dtype=np.float32)


def blur_vector(gray: Gray) -> tuple[float, float]:
    """(length_px, angle_rad) of the straight motion blur in `gray`: the most negative
    cepstrum value between BLUR_PX_MIN and BLUR_PX_MAX from the centre (half plane: the
    cepstrum is symmetric)."""
    cepstrum = _cepstrum(gray)
    cy, cx = cepstrum.shape[0] // 2, cepstrum.shape[1] // 2
    r = BLUR_PX_MAX
    patch = cepstrum[cy - r : cy + r + 1, cx : cx + r + 1]
    dy, dx = np.mgrid[-r : r + 1, 0 : r + 1]
    distance = np.hypot(dx, dy)
    usable = (distance >= BLUR_PX_MIN) & (distance <= BLUR_PX_MAX) & ~((dx == 0) & (dy < 0))
    row, column = np.unravel_index(np.argmin(np.where(usable, patch, np.inf)), patch.shape)
    return float(distance[row, column]), math.atan2(float(dy[row, column]), float(dx[row, column]))


def _line_psf(length_px: float, angle_rad: float, shape: tuple[int, int]) -> Floats:
    """A centred line of `length_px` at `angle_rad`, wrapped round an array of `shape` (the
    layout the FFT expects), summing to 1."""
    psf = np.zeros(shape, dtype=np.float32)
    steps = np.linspace(-(length_px - 1) / 2, (length_px - 1) / 2, 4 * max(1, round(length_px)))
    xs = np.rint(steps * math.cos(angle_rad)).astype(np.int64) % shape[1]
    ys = np.rint(steps * math.sin(angle_rad)).astype(np.int64) % shape[0]
    psf[ys, xs] = 1.0
    return psf / np.float32(psf.sum())


def _disk_psf(radius_px: float, shape: tuple[int, int]) -> Floats:
    """A centred disk of `radius_px` (a lens out of focus), wrapped as `_line_psf`."""
    psf = np.zeros(shape, dtype=np.float32)
    r = math.ceil(radius_px)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    inside = np.hypot(dx, dy) <= round(radius_px)
    psf[dy[inside] % shape[0], dx[inside] % shape[1]] = 1.0
    return psf / np.float32(psf.sum())


def _wiener(gray: Gray, psf: Floats) -> Gray:
    """`gray` with the blur `psf` (same shape, FFT layout) divided out."""
    image = np.asarray(gray, dtype=np.float32) / 255.0
    blur = np.fft.rfft2(psf)
    restored = np.fft.irfft2(
        np.fft.rfft2(image) * np.conj(blur) / (np.abs(blur) ** 2 + NOISE_TO_SIGNAL),
        s=image.shape,
    )
    return np.asarray(np.clip(restored * 255.0, 0, 255), dtype=np.uint8)


def wiener_deblur(gray: Gray, length_px: float, angle_rad: float) -> Gray:
    """`gray` with a straight blur of `length_px` at `angle_rad` divided out."""
    return _wiener(gray, _line_psf(round(length_px), angle_rad, gray.shape))


def wiener_refocus(gray: Gray, radius_px: float) -> Gray:
    """`gray` with a defocus disk of `radius_px` divided out."""
    return _wiener(gray, _disk_psf(radius_px, gray.shape))


class DeblurredPass:
    """Runs `inner` on the code-like box with its motion blur divided out; corners come
    back in the frame's pixels. Nothing to do when no box looks like a code, or the box is
    too small to show a blur or more than `area_share_max` of the frame (the FFTs' cost)."""

    def __init__(self, inner: DecoderBackend, *, area_share_max: float = 0.5) -> None:
        self._inner = inner
        self._area_share_max = area_share_max
        self.name = inner.name

    def decode(self, gray: Gray) -> list[Decoded]:
        """Decode the deblurred box."""
        cropped = _usable_crop(gray, self._area_share_max)
        if cropped is None:
            return []
        crop, box = cropped
        return from_crop(self._inner.decode(wiener_deblur(crop, *blur_vector(crop))), box)


class RefocusedPass:
    """Runs `inners` in turn on the code-like box with a defocus disk of each of
    `radii_px` divided out, until one reads; corners in the frame's pixels. A small code
    out of focus loses its modules to the blur's disk, which sharpening only partly undoes.
    Same box limits as `DeblurredPass`."""

    def __init__(
        self,
        inners: Sequence[DecoderBackend],
        *,
        radii_px: Sequence[float] = (2.0, 3.0),
        area_share_max: float = 0.5,
    ) -> None:
        self._inners = tuple(inners)
        self._radii_px = tuple(radii_px)
        self._area_share_max = area_share_max
        self.name = self._inners[0].name

    def decode(self, gray: Gray) -> list[Decoded]:
        """Decode the refocused box: first radius, first decoder that reads."""
        cropped = _usable_crop(gray, self._area_share_max)
        if cropped is None:
            return []
        crop, box = cropped
        for radius_px in self._radii_px:
            sharp = wiener_refocus(crop, radius_px)
            for inner in self._inners:
                found = inner.decode(sharp)
                if found:
                    return from_crop(found, box)
        return []


def _usable_crop(gray: Gray, area_share_max: float) -> tuple[Gray, Box] | None:
    """The code-like box and its pixels, or None when there is none, it is too small to show
    a blur, or it is more than `area_share_max` of the frame (the FFTs' cost)."""
    cropped = code_crop_within(gray, area_share_max)
    if cropped is None or min(cropped[0].shape) < SIDE_PX_MIN:
        return None
    return cropped
