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
"""

from __future__ import annotations

import numpy as np

from paycode.appkit.decoding import Gray
from paycode.merchant_pos.opencv import cv2

__all__ = ["BLOCK_PX", "DENSE_BLOCKS_MIN", "DENSE_SHARE_MIN", "EDGE_LEVEL_MIN", "looks_like_code"]

EDGE_LEVEL_MIN = 30  # |d/dx| / 2 + |d/dy| / 2 of the Sobel filter at half size, gray levels
DENSE_SHARE_MIN = 0.6  # share of strong-edge pixels that makes a block look like a code
DENSE_BLOCKS_MIN = 1
BLOCK_PX = 16  # at half size: 32 px of the frame, under the smallest code the Scanner reads


def dense_blocks(gray: Gray) -> int:
    """How many BLOCK_PX blocks of the half-size frame are dense with strong edges."""
    half = cv2.resize(
        gray, (max(1, gray.shape[1] // 2), max(1, gray.shape[0] // 2)), interpolation=cv2.INTER_AREA
    )
    dx = cv2.convertScaleAbs(cv2.Sobel(half, cv2.CV_16S, 1, 0), alpha=0.5)
    dy = cv2.convertScaleAbs(cv2.Sobel(half, cv2.CV_16S, 0, 1), alpha=0.5)
    strong = (cv2.add(dx, dy) > EDGE_LEVEL_MIN).astype(np.float32)
    rows, columns = strong.shape[0] // BLOCK_PX, strong.shape[1] // BLOCK_PX
    if rows == 0 or columns == 0:
        return 0
    cropped = strong[: rows * BLOCK_PX, : columns * BLOCK_PX]
    share = cv2.resize(cropped, (columns, rows), interpolation=cv2.INTER_AREA)
    return int(np.count_nonzero(share > DENSE_SHARE_MIN))


def looks_like_code(gray: Gray) -> bool:
    """True when some part of `gray` is dense enough with edges to be a QR code or barcode."""
    return dense_blocks(gray) >= DENSE_BLOCKS_MIN
