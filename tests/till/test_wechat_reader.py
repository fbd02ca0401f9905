"""WeChat's QR reader: its shipped models are the published ones, and it is the still
reader's last resort (`paycode-pos inspect --image`), never a camera frame's cost."""

from __future__ import annotations

import hashlib
from importlib import resources

import pytest

from bench.scanner_set import sample
from paycode.merchant_pos import decoders
from paycode.merchant_pos.decoders import WECHAT_MODEL_FILES, make_backend
from paycode.merchant_pos.frames import to_gray
from paycode.merchant_pos.scanloop import Scanner
from paycode.merchant_pos.scanpasses import still_plan
from paycode.merchant_pos.stillread import read_still

# The MD5 sums OpenCV's contrib build checks when it downloads these files.
PUBLISHED_MD5 = {
    "detect.caffemodel": "238e2b2d6f3c18d6c3a30de0c31e23cf",
    "detect.prototxt": "6fb4976b32695f9f5c6305c19f12537d",
    "sr.caffemodel": "cbfcd60361a73beb8c583eea7e8e6664",
    "sr.prototxt": "69db99927a70df953b471daaba03fbef",
}


def test_the_shipped_models_are_the_published_ones() -> None:
    folder = resources.files("paycode.merchant_pos") / "models"
    sums = {
        name: hashlib.md5((folder / name).read_bytes(), usedforsecurity=False).hexdigest()
        for name in WECHAT_MODEL_FILES
    }
    assert sums == PUBLISHED_MD5


def test_a_moire_qr_every_other_pass_misses_is_read_by_the_wechat_reader() -> None:
    """tune-0077: an EMV poster photographed off a screen with moire. No pass of the camera's
    plan reads it; WeChat's located and enlarged read does, as the still reader's last pass."""
    item = sample("tune", 77)
    gray = to_gray(item.image())
    found = read_still(gray)  # from the first pass that reads anything
    assert [(d.text, d.backend) for d in found] == [(item.payload.text, "wechat")]
    assert [d.text for d in make_backend("wechat").decode(gray)] == [item.payload.text]


def test_the_wechat_reader_runs_last_on_stills_and_never_on_camera_frames() -> None:
    assert still_plan().ring[-1].label == "wechat"
    assert "wechat" not in {p.label for p in (*Scanner().plan.always, *Scanner().plan.ring)}


def test_starting_a_camera_scanner_does_not_load_the_wechat_networks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every sale builds a Scanner; asking which backends load used to build them all, WeChat's
    networks and OpenCV's probe decode included, for a plan that uses neither."""
    built: list[str] = []

    def counted(name: str) -> decoders.DecoderBackend:
        built.append(name)
        return real(name)

    real = decoders.make_backend
    monkeypatch.setattr(decoders, "make_backend", counted)
    Scanner()
    assert "wechat" not in built and "opencv" not in built, built
