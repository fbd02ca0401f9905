"""Reading a code printed on a sheet that was folded: flatten the far side again.

A sheet folded along a line and held up shows the part beyond the crease foreshortened: its
modules are narrower across the crease than the near part's. A QR reader samples the whole
symbol on one grid fitted to its finder patterns, so the far modules drift off the grid and
the read fails. Stretching the far side back across the crease puts them on one grid again.
Neither the crease nor the fold angle is known, so a few creases across the code-like box
and two stretches are tried, on either side; a misread is as unlikely as on any pass, since
each attempt is a whole symbol with its own error correction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from paycode.appkit.decoding import Decoded, DecoderBackend, Gray
from paycode.merchant_pos.codelike import code_crop_within
from paycode.merchant_pos.opencv import cv2

__all__ = ["CREASE_SHARES", "STRETCHES", "UnfoldedPass", "unfolded"]

CREASE_SHARES = (0.35, 0.45, 0.5, 0.55, 0.65)  # crease across the box, chosen on `tune` folds
STRETCHES = (1.2, 1.4)  # 1/cos of a 33 and a 44 degree fold


def unfolded(gray: Gray, crease_px: int, stretch: float, *, far_right: bool) -> Gray:
    """`gray` with the columns past `crease_px` (right of it, or left when not `far_right`)
    widened `stretch` times."""
    height = gray.shape[0]
    near, far = gray[:, :crease_px], gray[:, crease_px:]
    if far_right:
        far = np.asarray(cv2.resize(far, (round(far.shape[1] * stretch), height)), np.uint8)
    else:
        near = np.asarray(cv2.resize(near, (round(near.shape[1] * stretch), height)), np.uint8)
    return np.ascontiguousarray(np.hstack([near, far]), dtype=np.uint8)


class UnfoldedPass:
    """Runs `inner` on the code-like box unfolded at each of CREASE_SHARES x STRETCHES x
    both sides until one reads (at most 20 reads of the box). Corners are not mapped back
    through the stretch: they come back as the box's own corners, which hold the code.
    Skipped when there is no box or it is more than `area_share_max` of the frame."""

    def __init__(
        self,
        inner: DecoderBackend,
        *,
        crease_shares: Sequence[float] = CREASE_SHARES,
        stretches: Sequence[float] = STRETCHES,
        area_share_max: float = 0.25,
    ) -> None:
        self._inner = inner
        self._tries = [
            (share, stretch, far_right)
            for share in crease_shares
            for stretch in stretches
            for far_right in (True, False)
        ]
        self._area_share_max = area_share_max
        self.name = inner.name

    def decode(self, gray: Gray) -> list[Decoded]:
        """The codes in the first unfolding of the box that reads."""
        cropped = code_crop_within(gray, self._area_share_max)
        if cropped is None:
            return []
        crop, (x0, y0, x1, y1) = cropped
        outline = ((x0, y0), (x1 - 1, y0), (x1 - 1, y1 - 1), (x0, y1 - 1))
        for share, stretch, far_right in self._tries:
            crease_px = round(crop.shape[1] * share)
            found = self._inner.decode(unfolded(crop, crease_px, stretch, far_right=far_right))
            if found:
                return [Decoded(d.format, d.text, outline, d.backend) for d in found]
        return []
