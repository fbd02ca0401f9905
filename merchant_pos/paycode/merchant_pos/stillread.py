"""Reading a still picture (`paycode-pos inspect --image`, a saved photo) with the scanner's passes.

A camera gives the Scanner many frames, so it spreads its extra passes over them within a
per-frame budget. A still is one chance: here every pass of the same plan runs on it, cheap
first, until one reads something. So `inspect` reads what the till would read from the same
picture held to its camera, and more than any single decoder. Unlike the Scanner, this
returns every QR and Code 128 text, payment code or not: `inspect` says what a code is.
"""

from __future__ import annotations

import os

from paycode.appkit.decoding import Decoded, Gray, gray_image, open_image_file
from paycode.merchant_pos.scanloop import resized, to_original
from paycode.merchant_pos.scanpasses import Plan, still_plan

__all__ = ["read_image_file", "read_still"]

WORKING_WIDTH_PX_MAX = 1920  # a 12 MP photo is read at this width: codes in it stay > 2 px/module


def read_still(gray: Gray, plan: Plan | None = None) -> list[Decoded]:
    """The codes in `gray`, from the first pass of `plan` (`still_plan`) that reads any;
    corners in `gray`'s pixels, `backend` naming the pass. Empty when no pass reads one."""
    chosen = plan if plan is not None else still_plan()
    scale = min(1.0, WORKING_WIDTH_PX_MAX / gray.shape[1])
    work = resized(gray, scale, scale)
    for decode_pass in (*chosen.always, *chosen.ring):
        image = resized(work, decode_pass.scale_x, decode_pass.scale_y)
        found = decode_pass.decoder.decode(image)
        if not found:
            continue
        sx, sy = scale * decode_pass.scale_x, scale * decode_pass.scale_y
        unique: dict[str, Decoded] = {}
        for item in found:
            corners = to_original(item.corners, sx, sy)
            unique.setdefault(
                item.text, Decoded(item.format, item.text, corners, decode_pass.label)
            )
        return list(unique.values())
    return []


def read_image_file(path: str | os.PathLike[str], plan: Plan | None = None) -> list[Decoded]:
    """Open an image file through the bounded reader (ImageUnreadable, ImageTooLarge) and
    read it with every pass (`read_still`)."""
    with open_image_file(path) as image:
        gray = gray_image(image)
    return read_still(gray, plan)
