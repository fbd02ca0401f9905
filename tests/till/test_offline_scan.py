"""A v4 offline code as the wallet draws it, in 720p camera scenes: the till's Scanner decodes
the exact text and the version registry routes it as v4 (docs/offline.md §3.3).

The codes are the published vectors (tests/vectors/offline.json: a test certificate signed with
the test server seed, each code signed by the test device key). The frames are
paycode.merchant_pos.synthetic_frames scenes, which draw the code with appkit's `qr_image`, the
renderer the CLI wallet saves its QR with, on a phone screen placed in a cluttered scene.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from paycode.appkit.rendering import qr_image
from paycode.merchant_pos.scanloop import Scanner
from paycode.merchant_pos.synthetic_frames import (
    FRAME_HEIGHT_PX,
    FRAME_WIDTH_PX,
    Subject,
    compose_frame,
)
from paycode.shared.versions import v4_offline
from paycode.shared.versions.registry import route

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "offline.json"
CODES = {c["name"]: c["code"] for c in json.loads(VECTORS.read_text(encoding="utf-8"))["codes"]}
TYPICAL_SCENES = ("clean", "rotation", "perspective")  # a phone held up, turned or leaning
VERSION_13_MODULES = 4 * 13 + 17


def frozen() -> float:
    return 0.0


def test_the_vector_codes_are_v4_codes_of_qr_version_13() -> None:
    """What the frames below show: 328 characters, 69 x 69 modules as appkit draws them."""
    assert CODES
    for text in CODES.values():
        assert len(text) == v4_offline.LENGTH == 328
        assert qr_image(text, box_px=1, border_modules=0).size == (VERSION_13_MODULES,) * 2


@pytest.mark.parametrize("distortion", TYPICAL_SCENES)
@pytest.mark.parametrize("name", sorted(CODES))
def test_a_v4_code_in_a_720p_scene_is_read_exactly_and_routed_as_v4(
    name: str, distortion: str
) -> None:
    text = CODES[name]
    scanner = Scanner(clock=frozen)
    for seed in range(3):
        frame = compose_frame(Subject(text, "qr", "v4"), distortion, np.random.default_rng(seed))
        assert frame.image.shape == (FRAME_HEIGHT_PX, FRAME_WIDTH_PX, 3)
        scanner.reset()
        found = scanner.scan_frame(frame.image)
        assert [(d.text, d.version, d.format) for d in found] == [(text, "v4", "qr")], seed
        assert route(found[0].text).version == "v4"
        assert v4_offline.encode(v4_offline.parse(found[0].text)) == text


def test_a_clean_v4_frame_is_read_by_the_first_pass_with_the_real_budget() -> None:
    """The always pass (one zxing read of the frame) reads it: no ring pass, no second frame."""
    text = CODES[sorted(CODES)[0]]
    frame = compose_frame(Subject(text, "qr", "v4"), "clean", np.random.default_rng(5))
    found = Scanner().scan_frame(frame.image)
    assert [(d.text, d.version, d.backend) for d in found] == [(text, "v4", "zxing")]
