"""The scanner's evaluation set: phone photographs of printed and on-screen codes, simulated.

    python -m bench.scanner_set OUT_DIR [--split tune|holdout] [--repeats N]

writes OUT_DIR/NNNN.jpg and OUT_DIR/expected.tsv (file, symbology, text, kind, medium,
condition), the folder layout `python -m bench.scanner_eval` reads, as it reads a folder of
real photographs.

Every frame is a 1280x720 JPEG, as a phone or webcam delivers it: a real payload of one of our
kinds (v1 as Code 128 and as QR, v2 and v3 QR, an EMV collection QR from
tests/vectors/merchant_qr.json) on a phone screen (bezel, sub-pixel grid) or on paper (toner
that is not black, paper tint and grain), placed in a cluttered scene and degraded by one main
condition (CONDITIONS) and, on a third of the frames, a second one. Every frame also gets the
lens's softness, sensor noise, uneven light and a JPEG step: no frame is pristine.

Two splits from two seeds: `tune` (passes and parameters are chosen on it) and `holdout`
(only reported, never tuned on). A frame depends only on (split seed, index), so a failing
frame is rebuilt from its name. The set is a proxy for real photographs, not a substitute:
docs/scanner.md says how to run the same evaluation on a folder of real ones.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from bench import REPO_ROOT, load_vectors
from paycode.appkit.rendering import code128_image, qr_image
from paycode.merchant_pos.opencv import cv2
from paycode.merchant_pos.synthetic_frames import (
    FRAME_HEIGHT_PX,
    FRAME_WIDTH_PX,
    background,
    screen_grid,
)

__all__ = [
    "CONDITIONS",
    "SPLIT_SEEDS",
    "Payload",
    "Sample",
    "Shown",
    "generate",
    "payloads",
    "sample",
    "twin",
    "write_set",
]

SPLIT_SEEDS = {"tune": 20261206, "holdout": 77003311}
CONDITIONS = (
    "perspective",
    "curvature",
    "fold",
    "defocus",
    "motion",
    "glare",
    "moire",
    "low_light",
    "heavy_jpeg",
    "small",
)
SECONDARY = ("perspective", "curvature", "glare", "low_light", "defocus")
SECONDARY_SHARE = 0.33
MERCHANT_QR_PATH = REPO_ROOT / "tests" / "vectors" / "merchant_qr.json"
SHEET_PX_PER_MODULE = 6  # the flat code is drawn this fine, then warped down to the frame

Bgr = NDArray[np.uint8]
Maps = tuple[NDArray[np.float32], NDArray[np.float32]]


@dataclass(frozen=True, slots=True)
class Payload:
    """A text as one of our wallets or posters shows it."""

    kind: str  # v1, v2, v3 or emv
    symbology: str  # qr or code128
    text: str


@dataclass(frozen=True, slots=True)
class Shown:
    """Another code in a frame's scene (`twin`): the payload, and how large it is drawn."""

    payload: Payload
    size: Literal["width", "module"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One evaluation photo: the JPEG bytes and the truth about them."""

    name: str
    payload: Payload
    medium: str  # screen or print
    condition: str
    jpeg: bytes

    def image(self) -> Bgr:
        decoded = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
        return np.asarray(decoded, dtype=np.uint8)


def payloads() -> list[Payload]:
    """Every rendering of every kind, distinct codes from the published vectors. v1 Code 128
    comes twice: it is what the wallet shows by default, and its bar is 100%."""
    codes: dict[str, list[str]] = {}
    for vector in load_vectors():
        codes.setdefault(vector["version"], []).append(vector["code"])
    posters = json.loads(MERCHANT_QR_PATH.read_text(encoding="utf-8"))["vectors"]
    return [
        Payload("v1", "code128", codes["v1"][0]),
        Payload("v1", "code128", codes["v1"][1]),
        Payload("v1", "qr", codes["v1"][2]),
        Payload("v2", "qr", codes["v2"][0]),
        Payload("v3", "qr", codes["v3"][0]),
        Payload("emv", "qr", posters[-1]["payload"]),
    ]


def _flat_code(payload: Payload) -> tuple[NDArray[np.uint8], int]:
    """The code drawn flat at SHEET_PX_PER_MODULE, and its width in modules (quiet zone out)."""
    m = SHEET_PX_PER_MODULE
    if payload.symbology == "qr":
        picture = np.asarray(qr_image(payload.text, box_px=m, border_modules=4), np.uint8)
        return picture, picture.shape[1] // m - 8
    picture = np.asarray(
        code128_image(payload.text, module_px=m, height_px=60 * m, quiet_modules=12), np.uint8
    )
    return picture, picture.shape[1] // m - 24


def _sheet(picture: NDArray[np.uint8], medium: str, rng: np.random.Generator) -> Bgr:
    """The code on a phone (white screen, dark bezel) or on paper (grey toner, tinted grain)."""
    margin = picture.shape[1] // 8
    if medium == "screen":
        screen = np.pad(picture, margin, constant_values=255)
        bezel = screen.shape[1] // 16
        gray = np.pad(screen, bezel, constant_values=int(rng.integers(10, 40)))
        return np.asarray(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), np.uint8)
    ink, paper = rng.uniform(25, 70), rng.uniform(225, 250)
    sheet = np.pad(picture, 2 * margin, constant_values=255).astype(np.float32) / 255.0
    sheet = cv2.GaussianBlur(sheet, (0, 0), 0.12 * SHEET_PX_PER_MODULE)  # toner spreads
    tint = np.array([rng.uniform(0.9, 1.0), rng.uniform(0.95, 1.0), 1.0], np.float32)
    grain = rng.normal(0, 4, size=sheet.shape).astype(np.float32)
    level = (ink + (paper - ink) * sheet + grain)[:, :, None] * tint
    return np.clip(level, 0, 255).astype(np.uint8)


def _homography(
    rng: np.random.Generator, sheet: Bgr, scale: float, payload: Payload, tilt: bool
) -> NDArray[np.float64]:
    height, width = sheet.shape[:2]
    if payload.symbology == "qr":
        angle = rng.uniform(-35, 35)
    else:
        angle = rng.uniform(-10, 10) + (90.0 if rng.random() < 0.1 else 0.0)
    centre = np.array([rng.uniform(0.3, 0.7) * FRAME_WIDTH_PX, rng.uniform(0.35, 0.65) * 720])
    src = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    rad = math.radians(angle)
    rot = np.array([[math.cos(rad), -math.sin(rad)], [math.sin(rad), math.cos(rad)]])
    dst = (src - [width / 2, height / 2]) * scale @ rot.T + centre
    size = scale * max(width, height)
    if tilt:  # the sheet leans away: two adjacent corners move towards the centre
        side = int(rng.integers(0, 4))
        pull = rng.uniform(0.12, 0.28) * size
        for index in (side, (side + 1) % 4):
            towards = centre - dst[index]
            dst[index] += towards / np.linalg.norm(towards) * pull
    dst += rng.normal(0, 0.01 * size, size=dst.shape)
    h = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    return np.asarray(h, np.float64)


def _flat_coords(homography: NDArray[np.float64]) -> Maps:
    """For every frame pixel, the sheet pixel a flat sheet would show there."""
    inverse = np.linalg.inv(homography)
    ys, xs = np.mgrid[0:FRAME_HEIGHT_PX, 0:FRAME_WIDTH_PX].astype(np.float32)
    w = inverse[2, 0] * xs + inverse[2, 1] * ys + inverse[2, 2]
    u = (inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]) / w
    v = (inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]) / w
    return u.astype(np.float32), v.astype(np.float32)


def _bend(maps: Maps, size: tuple[int, int], rng: np.random.Generator) -> Maps:
    """A sheet curved round a vertical cylinder (a receipt on a cup, a curved screen edge):
    columns crowd towards the edges and the far parts shrink."""
    u, v = maps
    width, height = size
    radius = width * rng.uniform(0.55, 1.0)
    cx, cy = width / 2, height / 2
    x = np.clip((u - cx) / radius, -0.999, 0.999)
    arc = radius * np.arcsin(x)
    depth = radius * (1 - np.cos(arc / radius))
    return (cx + arc).astype(np.float32), (cy + (v - cy) * (1 + 0.25 * depth / radius)).astype(
        np.float32
    )


def _fold(maps: Maps, size: tuple[int, int], rng: np.random.Generator) -> tuple[Maps, Maps]:
    """A sheet folded along a vertical line: the far part foreshortened. Returns the maps and
    (the flat u before folding, the fold's u) for shading."""
    u, v = maps
    crease = size[0] * rng.uniform(0.35, 0.65)
    squeeze = 1 / math.cos(math.radians(rng.uniform(20, 45)))
    folded = np.where(u > crease, crease + (u - crease) * squeeze, u).astype(np.float32)
    return (folded, v), (u, np.full_like(u, crease))


def _compose(
    payload: Payload,
    medium: str,
    conditions: tuple[str, ...],
    seed: list[int],
    shown: Shown | None = None,
) -> Bgr:
    rng = np.random.default_rng(seed)
    picture, modules = _flat_code(payload)
    before_sheet = rng.bit_generator.state
    sheet = _sheet(picture, medium, rng)
    small = "small" in conditions
    if payload.symbology == "qr":
        px_per_module = rng.uniform(1.9, 2.6) if small else rng.uniform(3.0, 6.0)
        px_per_module = min(px_per_module, 420 / modules) if not small else px_per_module
    else:
        px_per_module = rng.uniform(1.45, 1.9) if small else rng.uniform(2.0, 3.2)
    if shown is not None:
        # The same scene with another code: the paper's grain is drawn per pixel, so the
        # twin's sheet comes from a copy of the stream and the scene's draws stay in step.
        twin_picture, twin_modules = _flat_code(shown.payload)
        twin_rng = np.random.default_rng()
        twin_rng.bit_generator.state = before_sheet
        sheet = _sheet(twin_picture, medium, twin_rng)
        if shown.size == "width":
            px_per_module *= modules / twin_modules
        payload = shown.payload
    scale = px_per_module / SHEET_PX_PER_MODULE
    tilt = "perspective" in conditions
    homography = _homography(rng, sheet, scale, payload, tilt)
    maps = _flat_coords(homography)
    size = (sheet.shape[1], sheet.shape[0])
    if "curvature" in conditions:
        maps = _bend(maps, size, rng)
    shade = None
    if "fold" in conditions:
        maps, shade = _fold(maps, size, rng)
    scale_up = 1
    if "moire" in conditions and medium == "screen":
        scale_up = 3
        grid = screen_grid(cv2.cvtColor(sheet, cv2.COLOR_BGR2GRAY), scale_up)
        sheet, maps = grid, (maps[0] * scale_up, maps[1] * scale_up)
    else:  # a lens does not alias: blur the sheet to the frame's resolution first
        sheet = cv2.GaussianBlur(sheet, (0, 0), 0.45 / scale)
    scene = background(rng)
    frame = cv2.remap(
        sheet, maps[0], maps[1], cv2.INTER_LINEAR, dst=scene, borderMode=cv2.BORDER_TRANSPARENT
    )
    work = frame.astype(np.float32)
    if shade is not None:
        inside = (maps[0] >= 0) & (maps[0] < size[0] * scale_up) & (maps[1] >= 0)
        beyond = inside & (maps[1] < size[1] * scale_up) & (shade[0] > shade[1])
        work[beyond] *= np.float32(rng.uniform(0.6, 0.85))
    centre = homography @ np.array([size[0] / 2, size[1] / 2, 1.0])
    return _photometric(work, conditions, rng, centre[:2] / centre[2])


def _photometric(
    work: NDArray[np.float32],
    conditions: tuple[str, ...],
    rng: np.random.Generator,
    centre: NDArray[np.float64],
) -> Bgr:
    gradient = np.linspace(rng.uniform(0.7, 0.95), rng.uniform(0.95, 1.1), FRAME_WIDTH_PX)
    work *= gradient.astype(np.float32)[None, :, None]
    if "glare" in conditions:
        cx, cy = centre + rng.normal(0, 40, size=2)
        rx, ry = rng.uniform(40, 110), rng.uniform(30, 70)
        ys, xs = np.ogrid[0:FRAME_HEIGHT_PX, 0:FRAME_WIDTH_PX]
        blob = np.exp(-(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)).astype(np.float32)
        work += (rng.uniform(150, 260) * blob)[:, :, None]
    if "defocus" in conditions:
        radius = rng.uniform(1.6, 3.0)
        size = 2 * math.ceil(radius) + 1
        disk = np.zeros((size, size), np.float32)
        cv2.circle(disk, (size // 2, size // 2), round(radius), 1.0, -1)
        work = cv2.filter2D(work, -1, disk / disk.sum())
    elif "motion" in conditions:
        length = int(rng.integers(4, 9))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        turn = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1)
        work = cv2.filter2D(work, -1, cv2.warpAffine(kernel, turn, (length, length)))
    else:
        work = cv2.GaussianBlur(work, (0, 0), rng.uniform(0.5, 0.9))  # the lens's own softness
    noise_sigma = rng.uniform(2, 4)
    if "low_light" in conditions:  # little light, then the phone's gain lifts the noise too
        gain = rng.uniform(0.18, 0.35)
        work = work * np.float32(gain) + rng.normal(0, 2.5, work.shape).astype(np.float32)
        work *= np.float32(rng.uniform(1.2, 2.2))
    work += rng.normal(0, noise_sigma, work.shape).astype(np.float32)
    quality = int(rng.integers(8, 22) if "heavy_jpeg" in conditions else rng.integers(60, 92))
    frame = np.clip(work, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.asarray(jpeg, np.uint8)


def _plan(repeats: int) -> Iterator[tuple[Payload, str, str]]:
    for _ in range(repeats):
        for condition in CONDITIONS:
            for medium in ("screen", "print"):
                for payload in payloads():
                    yield payload, medium, condition


def _planned(index: int) -> tuple[Payload, str, str]:
    per_repeat = len(CONDITIONS) * 2 * len(payloads())
    return list(_plan(index // per_repeat + 1))[index]


def sample(split: str, index: int) -> Sample:
    """Frame `index` of a split, rebuilt alone (a failing frame's name is split-index)."""
    return _sample(split, index, *_planned(index))


def _conditions(split: str, index: int, condition: str) -> tuple[str, ...]:
    """The frame's main condition and, on about a third of the frames, a second one."""
    rng = np.random.default_rng([SPLIT_SEEDS[split], index, 1])
    extra = SECONDARY[int(rng.integers(0, len(SECONDARY)))]
    if rng.random() < SECONDARY_SHARE and extra != condition:
        return (condition, extra)
    return (condition,)


def _sample(split: str, index: int, payload: Payload, medium: str, condition: str) -> Sample:
    conditions = _conditions(split, index, condition)
    jpeg = _compose(payload, medium, conditions, [SPLIT_SEEDS[split], index, 2])
    return Sample(f"{split}-{index:04d}", payload, medium, "+".join(conditions), jpeg.tobytes())


def twin(split: str, index: int, shown: Shown) -> Sample:
    """Frame `index` of a split with `shown.payload` in place of its own code: the same
    medium, conditions, distance, angle, light and noise (every random draw is the same).
    The code is drawn as wide as the original (size "width": a phone showing a denser code
    in the same box, so finer modules) or at the original's pixels per module ("module": a
    denser code shown larger)."""
    payload, medium, condition = _planned(index)
    conditions = _conditions(split, index, condition)
    jpeg = _compose(payload, medium, conditions, [SPLIT_SEEDS[split], index, 2], shown)
    name = f"{split}-{index:04d}-{shown.payload.kind}-{shown.size}"
    return Sample(name, shown.payload, medium, "+".join(conditions), jpeg.tobytes())


def generate(split: str, repeats: int = 1, *, every: int = 1) -> list[Sample]:
    """The split's frames: every payload x medium x condition, `repeats` times; `every` > 1
    keeps every n-th frame only (a fixed small sample for tests)."""
    return [
        _sample(split, index, *planned)
        for index, planned in enumerate(_plan(repeats))
        if index % every == 0
    ]


def write_set(out_dir: Path, samples: list[Sample]) -> Path:
    """JPEG files plus expected.tsv, the layout bench.scanner_eval reads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = ["file\tsymbology\ttext\tkind\tmedium\tcondition"]
    for sample in samples:
        (out_dir / f"{sample.name}.jpg").write_bytes(sample.jpeg)
        p = sample.payload
        rows.append(
            f"{sample.name}.jpg\t{p.symbology}\t{p.text}\t{p.kind}\t{sample.medium}\t"
            f"{sample.condition}"
        )
    manifest = out_dir / "expected.tsv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--split", choices=sorted(SPLIT_SEEDS), default="holdout")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    manifest = write_set(args.out_dir, generate(args.split, args.repeats))
    print(f"written {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
