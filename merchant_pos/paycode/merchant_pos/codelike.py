"""A cheap test of whether a frame may hold a code, so the Scanner's extra passes skip the rest.

Most frames a till's camera sees hold no code. The first decoding pass runs on every frame;
the extra passes (sharpened, enlarged, equalised, another decoder) cost several times as
much and only help where a code is. A code is a patch dense with strong edges: QR modules
and Code 128 bars put an edge every few pixels across the whole symbol, where a counter,
a box or a line has edges only along its outline. So: gradient magnitude at half size,
the share of strong-edge pixels per block, and at least one block dense enough.

On the `tune` split of bench/scanner_set.py every frame with a code passes; 8 of 40 cluttered
frames without one pass too (a false pass only costs time). Real scenes with fine texture
(print, a keyboard) pass more often; the gate then costs its ~0.4 ms and saves nothing.
The same blocks say where a code may be: `code_region` boxes them, so a pass can enlarge
that box alone (scanpasses.RegionPass).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from paycode.appkit.decoding import Decoded, Gray
from paycode.merchant_pos.opencv import cv2

__all__ = [
    "BLOCK_PX",
    "DENSE_BLOCKS_MIN",
    "DENSE_SHARE_MIN",
    "EDGE_LEVEL_MIN",
    "Box",
    "code_crop_within",
    "code_region",
    "code_region_within",
    "dense_blocks",
    "from_crop",
    "looks_like_code",
]

EDGE_LEVEL_MIN = 30  # |d/dx| / 2 + |d/dy| / 2 of the Sobel filter at half size, gray levels
DENSE_SHARE_MIN = 0.6  # share of strong-edge pixels that makes a block look like a code
DENSE_BLOCKS_MIN = 1
BLOCK_PX = 16  # at half size: 32 px of the frame, under the smallest code the Scanner reads


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in the frame's pixels, end exclusive


def _dense_map(gray: Gray) -> NDArray[np.bool_]:
    """Per BLOCK_PX block of the half-size frame: is it dense with strong edges?"""
    half = cv2.resize(
        gray, (max(1, gray.shape[1] // 2), max(1, gray.shape[0] // 2)), interpolation=cv2.INTER_AREA
    )
    dx = cv2.convertScaleAbs(cv2.Sobel(half, cv2.CV_16S, 1, 0), alpha=0.5)
    dy = cv2.convertScaleAbs(cv2.Sobel(half, cv2.CV_16S, 0, 1), alpha=0.5)
    strong = (cv2.add(dx, dy) > EDGE_LEVEL_MIN).astype(np.float32)
    rows, columns = strong.shape[0] // BLOCK_PX, strong.shape[1] // BLOCK_PX
    if rows == 0 or columns == 0:
        return np.zeros((0, 0), dtype=np.bool_)
    cropped = strong[: rows * BLOCK_PX, : columns * BLOCK_PX]
    share = cv2.resize(cropped, (columns, rows), interpolation=cv2.INTER_AREA)
    return np.asarray(share > DENSE_SHARE_MIN)


def dense_blocks(gray: Gray) -> int:
    """How many BLOCK_PX blocks of the half-size frame are dense with strong edges."""
    return int(np.count_nonzero(_dense_map(gray)))


def looks_like_code(gray: Gray) -> bool:
    """True when some part of `gray` is dense enough with edges to be a QR code or barcode."""
    return dense_blocks(gray) >= DENSE_BLOCKS_MIN


def code_region(gray: Gray, *, margin_blocks: int = 2) -> Box | None:
    """The box round every dense block, widened by `margin_blocks` (a block's density only
    says a code is near: its edges and quiet zone reach further), clipped to the frame."""
    dense = _dense_map(gray)
    rows, columns = np.nonzero(dense)
    if rows.size == 0:
        return None
    block_px = 2 * BLOCK_PX  # a half-size block in frame pixels
    x0 = max(0, (int(columns.min()) - margin_blocks) * block_px)
    y0 = max(0, (int(rows.min()) - margin_blocks) * block_px)
    x1 = min(gray.shape[1], (int(columns.max()) + 1 + margin_blocks) * block_px)
    y1 = min(gray.shape[0], (int(rows.max()) + 1 + margin_blocks) * block_px)
    return x0, y0, x1, y1


def code_region_within(gray: Gray, area_share_max: float) -> Box | None:
    """code_region, or None when the box is more than `area_share_max` of the frame: the
    passes that work on the box alone (enlarging, deblurring, unfolding) gain nothing over a
    whole-frame pass there, at a box-sized cost."""
    box = code_region(gray)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    too_big = (x1 - x0) * (y1 - y0) > area_share_max * gray.shape[0] * gray.shape[1]
    return None if too_big else box


def code_crop_within(gray: Gray, area_share_max: float) -> tuple[Gray, Box] | None:
    """code_region_within's box, and the frame's pixels in it (contiguous, as the decoders
    want them); None when there is no such box."""
    box = code_region_within(gray, area_share_max)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(gray[y0:y1, x0:x1]), box


def from_crop(found: list[Decoded], box: Box, factor: float = 1.0) -> list[Decoded]:
    """Codes read in the crop of `box` enlarged `factor` times, their corners in the frame's
    pixels (pixel centres map to pixel centres)."""
    x0, y0 = box[0], box[1]
    return [
        Decoded(
            d.format,
            d.text,
            tuple(
                (round(x0 + (x + 0.5) / factor - 0.5), round(y0 + (y + 0.5) / factor - 0.5))
                for x, y in d.corners
            ),
            d.backend,
        )
        for d in found
    ]
