"""The till's reading on simulated phone photographs (bench/scanner_set.py): a read-rate floor
for the combined reader on a small fixed sample, and the frames one decoder or pass alone lost.

The full figures, on both splits and beside each single decoder, are `make bench-scanner`'s
(docs/scanner.md); this sample is every 5th frame of the `tune` split (5 is prime to the 12
frames of a condition, so every kind and medium comes up): 24 frames, ~3 s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.scanner_set import Sample, generate, sample
from paycode.appkit.decoding import Decoded, Gray
from paycode.merchant_pos.codelike import code_region, from_crop, looks_like_code
from paycode.merchant_pos.deblur import blur_vector
from paycode.merchant_pos.decoders import make_backend
from paycode.merchant_pos.frames import to_gray
from paycode.merchant_pos.opencv import cv2
from paycode.merchant_pos.scanloop import Scanner
from paycode.merchant_pos.scanpasses import DecodePass, Plan, default_plan
from paycode.merchant_pos.stillread import read_still
from paycode.merchant_pos.synthetic_frames import empty_frame
from tests.support.servers import run_in_process
from tests.support.shop import POS_MODULE, person_env

HOLD_FRAMES = 3  # a customer holds a phone up for at least 100 ms at 30 fps


def frozen() -> float:
    return 0.0


@dataclass
class Tally:
    """Frames per symbology, and how many of them a reader read right / wrong."""

    shown: dict[str, int]
    read: dict[str, int]
    wrong: int = 0

    def add(self, item: Sample, texts: set[str]) -> None:
        kind = item.payload.symbology
        self.shown[kind] = self.shown.get(kind, 0) + 1
        self.read[kind] = self.read.get(kind, 0) + (item.payload.text in texts)
        self.wrong += bool(texts - {item.payload.text})


@pytest.fixture(scope="module")
def tallies() -> dict[str, Tally]:
    zxing = make_backend("zxing")
    found = {"combined": Tally({}, {}), "zxing": Tally({}, {}), "gate": Tally({}, {})}
    for item in generate("tune", every=5):
        gray = to_gray(item.image())
        found["combined"].add(item, {d.text for d in read_still(gray)})
        found["zxing"].add(item, {d.text for d in zxing.decode(gray)})
        found["gate"].add(item, {item.payload.text} if looks_like_code(gray) else set())
    return found


def test_the_combined_reader_keeps_its_read_rate_floor_with_no_wrong_read(
    tallies: dict[str, Tally],
) -> None:
    combined = tallies["combined"]
    assert combined.shown == {"qr": 16, "code128": 8}
    assert combined.read["code128"] == 8, f"Code 128 {combined.read['code128']}/8"
    assert combined.read["qr"] >= 14, f"QR {combined.read['qr']}/16"
    assert combined.wrong == 0


def test_the_combined_reader_reads_more_than_zxing_alone(tallies: dict[str, Tally]) -> None:
    combined, zxing = tallies["combined"], tallies["zxing"]
    assert sum(combined.read.values()) >= sum(zxing.read.values()) + 3, (combined, zxing)


def test_every_photo_with_a_code_in_the_sample_opens_the_gate(tallies: dict[str, Tally]) -> None:
    gate = tallies["gate"]
    assert gate.read == gate.shown


@dataclass
class CountingDecoder:
    """A ring pass that reads nothing and counts the frames it was run on."""

    name: str = "counting"
    calls: int = 0

    def decode(self, gray: Gray) -> list[Decoded]:
        self.calls += 1
        return []


def test_a_scene_without_a_code_like_patch_runs_no_extra_pass() -> None:
    """Most frames at a till show no code: after the first pass reads nothing, a frame with
    no patch dense with edges skips the ring (and the starvation guard) altogether."""
    rng = np.random.default_rng(5)
    scenes = [empty_frame(rng).image for _ in range(40)]
    plain = [scene for scene in scenes if not looks_like_code(to_gray(scene))][:12]
    assert len(plain) == 12
    counting = CountingDecoder()
    plan = Plan(
        always=(DecodePass("zxing", make_backend("zxing")),), ring=(DecodePass("x", counting),)
    )
    scanner = Scanner(plan=plan, clock=frozen)
    for scene in plain:
        assert scanner.scan_frame(scene) == []
    assert counting.calls == 0
    assert scanner.scan_frame(sample("tune", 40).image()) == []  # a blurred code: the ring runs
    assert counting.calls == 1


def test_a_barcode_leaning_in_perspective_is_read_not_lost_to_the_squeezed_pass() -> None:
    """tune-0006: a printed v1 barcode tilted away. Squeezing the frame to a quarter height
    (the old Code 128 passes) smeared its slanted bars; every pass missed it."""
    item = sample("tune", 6)
    assert (item.payload.symbology, item.condition) == ("code128", "perspective")
    scanner = Scanner(clock=frozen)
    texts: list[str] = []
    for _ in range(HOLD_FRAMES):
        texts += [d.text for d in scanner.scan_frame(item.image())]
    assert texts == [item.payload.text]


def test_a_small_printed_barcode_is_read_by_the_widened_pass() -> None:
    """tune-0115: a v1 barcode printed small (under 2 px per module). No pass at working size
    reads it; the Code 128 pass on an image widened 1.5x and sharpened does."""
    item = sample("tune", 115)
    assert (item.payload.symbology, item.condition) == ("code128", "small")
    found = read_still(to_gray(item.image()))
    assert [(d.text, d.backend) for d in found] == [(item.payload.text, "zxing-c128-sharp-wide")]


def test_a_small_qr_on_a_phone_is_read_by_enlarging_the_region_that_looks_like_a_code() -> None:
    """tune-0350: a v1 QR code at ~2 px per module on a phone across the counter. Enlarging
    the whole frame 1.5x is not enough; the dense-edge box round it, enlarged 2x and
    sharpened, is read, and its outline comes back in the frame's pixels."""
    item = sample("tune", 350)
    assert (item.payload.kind, item.payload.symbology, item.condition) == ("v1", "qr", "small")
    gray = to_gray(item.image())
    found = read_still(gray)
    assert [(d.text, d.backend) for d in found] == [(item.payload.text, "zxing-region-x2")]
    box = code_region(gray)
    assert box is not None
    x0, y0, x1, y1 = box
    assert all(x0 <= x < x1 and y0 <= y < y1 for x, y in found[0].corners)


def test_a_barcode_in_low_light_and_out_of_focus_is_read_by_strong_sharpening() -> None:
    """tune-0085: a v1 barcode on a dim phone screen, out of focus. The gain lifts the noise
    and the blur merges the narrow bars: a strong unsharp mask separates them again (so
    does the defocus Wiener filter, which runs before it and reads it first now)."""
    item = sample("tune", 85)
    assert (item.payload.symbology, item.condition) == ("code128", "low_light+defocus")
    gray = to_gray(item.image())
    strong = next(p for p in default_plan().ring if p.label == "zxing-sharp-strong")
    assert [d.text for d in strong.decoder.decode(gray)] == [item.payload.text]
    assert [d.text for d in read_still(gray)] == [item.payload.text]


def test_a_defocused_qr_zxing_alone_misses_is_read_by_inspect_image(tmp_path: Path) -> None:
    """tune-0040: a v3 code on an out-of-focus phone screen. One zxing pass (what `inspect`
    ran) reads nothing; the sharpened pass reads it."""
    item = sample("tune", 40)
    assert item.payload.kind == "v3"
    assert make_backend("zxing").decode(to_gray(item.image())) == []
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(item.jpeg)
    done = run_in_process(POS_MODULE, person_env(), "--json", "inspect", "--image", str(photo))
    assert done.returncode == 0, done.stderr
    codes = json.loads(done.stdout)["codes"]
    assert [(c["kind"], c["version"], c["format"]) for c in codes] == [("payment_code", "v3", "qr")]


def test_a_small_printed_barcode_every_grey_pass_loses_is_read_at_a_fixed_threshold() -> None:
    """tune-0348: a v1 barcode printed under 2 px per module. Enlarged 2x, the local
    binarizer still merges its narrowest bars with their neighbours; one fixed threshold on
    the enlarged, sharpened box keeps them apart."""
    item = sample("tune", 348)
    assert (item.payload.symbology, item.condition) == ("code128", "small")
    found = read_still(to_gray(item.image()))
    assert [(d.text, d.backend) for d in found] == [(item.payload.text, "zxing-region-x2-fixed")]


def test_a_defocused_qr_under_glare_is_read_after_a_fine_adaptive_threshold() -> None:
    """tune-0158: a v1 QR code out of focus with a glare spot on it. Neither sharpening nor
    CLAHE leaves a threshold that splits the modules under the glare; a 15 px local mean
    threshold does."""
    item = sample("tune", 158)
    assert (item.payload.symbology, item.condition) == ("qr", "defocus+glare")
    found = read_still(to_gray(item.image()))
    assert [(d.text, d.backend) for d in found] == [(item.payload.text, "zxing-adaptive")]


@pytest.mark.parametrize("index", [532, 655])
def test_a_code_smeared_by_a_moving_hand_is_read_once_the_blur_is_divided_out(index: int) -> None:
    """tune-0532 (v3 QR) and tune-0655 (v1 barcode): motion blur of several pixels, which
    no sharpening undoes. The blur's length and direction, read from the box's cepstrum,
    give a Wiener filter that restores the modules; the outline stays inside the box."""
    item = sample("tune", index)
    assert item.condition == "motion"
    gray = to_gray(item.image())
    found = read_still(gray)
    assert [(d.text, d.backend) for d in found] == [(item.payload.text, "zxing-deblur")]
    box = code_region(gray)
    assert box is not None
    x0, y0, x1, y1 = box
    assert all(x0 <= x < x1 and y0 <= y < y1 for x, y in found[0].corners)


@pytest.mark.parametrize(("length_px", "angle_deg"), [(5, 0), (7, 0), (7, 90)])
def test_the_blur_estimate_finds_a_known_smear_length_and_direction(
    length_px: int, angle_deg: int
) -> None:
    """Random black and white pixels smeared along a line: the cepstrum's peak gives the
    length and direction back, the numbers the Wiener filter is built from. (Diagonal
    smears of a rasterised line come back rougher; the tune frames above show that the
    estimate still serves there.)"""
    rng = np.random.default_rng(7)
    sharp = ((rng.random((240, 240)) > 0.5) * 255).astype(np.uint8)
    kernel = np.zeros((length_px, length_px), np.float32)
    if angle_deg == 0:
        kernel[length_px // 2, :] = 1.0
    else:
        kernel[:, length_px // 2] = 1.0
    smeared = cv2.filter2D(sharp, -1, kernel / kernel.sum())
    found_px, angle_rad = blur_vector(smeared)
    assert found_px == pytest.approx(length_px, abs=0.5)
    assert abs(np.degrees(angle_rad)) == pytest.approx(angle_deg, abs=1.0)


def test_a_small_qr_out_of_focus_is_read_once_the_lens_blur_is_divided_out() -> None:
    """tune-1078: a v3 QR code at under 2 px per module, out of focus. Sharpening and
    thresholds leave its modules merged; a Wiener filter for a defocus disk on the box that
    looks like a code separates them again."""
    item = sample("tune", 1078)
    assert (item.payload.kind, item.condition) == ("v3", "small+defocus")
    found = read_still(to_gray(item.image()))
    assert [(d.text, d.backend) for d in found] == [(item.payload.text, "zxing-refocus")]


@pytest.mark.parametrize("index", [26, 146])
def test_a_qr_on_a_folded_sheet_is_read_once_its_far_side_is_stretched_back(index: int) -> None:
    """tune-0026 (under glare too) and tune-0146: a v1 QR code printed on a sheet folded
    across the code. The far side's modules are foreshortened off the grid the finder
    patterns give; every pass on the frame as it is missed them. Unfolding the code-like box
    (a crease and a stretch among a few tried) puts them back; the outline is the box."""
    item = sample("tune", index)
    assert (item.payload.symbology, item.condition.split("+")[0]) == ("qr", "fold")
    gray = to_gray(item.image())
    found = read_still(gray)
    assert [(d.text, d.backend) for d in found] == [(item.payload.text, "zxing-unfold")]
    box = code_region(gray)
    assert box is not None
    x0, y0, x1, y1 = box
    assert all(x0 <= x < x1 and y0 <= y < y1 for x, y in found[0].corners)


def test_corners_read_in_a_box_come_back_in_the_frames_pixels() -> None:
    """The region, deblur, refocus passes read a crop (the region pass enlarged 2x): one
    mapping takes its corners back, pixel centre to pixel centre."""
    read = [Decoded("qr", "x", ((0, 0), (9, 0), (9, 9), (0, 9)), "zxing")]
    assert from_crop(read, (100, 50, 140, 90))[0].corners == (
        (100, 50),
        (109, 50),
        (109, 59),
        (100, 59),
    )
    enlarged = [Decoded("qr", "x", ((1, 1), (19, 1), (19, 19), (1, 19)), "zxing")]
    assert from_crop(enlarged, (100, 50, 140, 90), 2.0)[0].corners == (
        (100, 50),
        (109, 50),
        (109, 59),
        (100, 59),
    )
