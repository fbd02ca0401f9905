"""Camera-like 720p frames of a phone showing a payment code, built from the wallet's renderers.

There is no camera in CI, so the POS scanner is tested on frames composed here: the code exactly
as `client.render` draws it on the phone, on a white screen inside a dark bezel, warped into a
cluttered, unevenly lit 1280x720 scene and then degraded the way real captures are (rotation,
perspective, blur, sensor noise, glare, low contrast, the moiré of filming a pixel grid).

Everything is deterministic: each frame comes from its own seeded numpy Generator, so a failing
frame can be rebuilt from (seed, subject, distortion, index) alone. `write_video` turns frames
into an MJPG .avi that `cv2.VideoCapture` (and so `paycode-pos charge --source video:...`)
reads back.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zxingcpp
from numpy.typing import NDArray

from paycode.appkit.rendering import code128_image, qr_image
from paycode.merchant_pos.opencv import cv2, video_backend

__all__ = [
    "DISTORTIONS",
    "FOREIGN_CODES",
    "FRAME_HEIGHT_PX",
    "FRAME_WIDTH_PX",
    "Subject",
    "SyntheticFrame",
    "background",
    "compose_frame",
    "empty_frame",
    "payment_subjects",
    "read_video",
    "screen_grid",
    "synthetic_set",
    "write_video",
]

FRAME_WIDTH_PX = 1280
FRAME_HEIGHT_PX = 720
DISTORTIONS = (
    "clean",
    "rotation",
    "perspective",
    "blur",
    "noise",
    "glare",
    "low_contrast",
    "moire",
)
SCREEN_MARGIN_FRACTION = 0.12  # white phone screen around the code, per side
BEZEL_FRACTION = 0.06  # dark phone body around the screen, per side
VIDEO_FOURCC = "MJPG"  # decodes everywhere OpenCV runs; mp4v needs codecs we can't assume
VIDEO_FRAMES_MAX = 10_000
NOISE_MARGIN_PX = 64

Bgr = NDArray[np.uint8]
Points = NDArray[np.float64]  # shape (4, 2): top-left, top-right, bottom-right, bottom-left


@dataclass(frozen=True, slots=True)
class Subject:
    """One code to show: its text, how the phone draws it ("qr" or "code128"), and what it is
    ("v1".."v3" for payment codes, "foreign" for codes the POS must ignore)."""

    text: str
    symbology: str
    kind: str


@dataclass(frozen=True, slots=True)
class SyntheticFrame:
    """A BGR frame and the truth about it. `symbol_corners` outline the symbol itself (no quiet
    zone) in frame pixels, clockwise from the symbol's top-left; None when no code is shown."""

    image: Bgr
    subject: Subject | None
    distortion: str
    symbol_corners: Points | None


# Codes a POS camera meets that are not payment codes: a URL on a menu, an EMV merchant poster,
# a parcel's shipping number in Code 128 (an SSCC), and a product's EAN-13 (which the scanner
# does not even decode).
FOREIGN_CODES: tuple[Subject, ...] = (
    Subject("https://example.com/menu?table=12", "qr", "foreign"),
    Subject(
        "00020101021129300012com.example01101234567890520458125303156"
        "5802CN5913EXAMPLE STORE6007BEIJING6304A13F",
        "qr",
        "foreign",
    ),
    Subject("003401234500000017", "code128", "foreign"),
    Subject("4006381333931", "ean13", "foreign"),
)


def payment_subjects(codes: Iterable[tuple[str, str]]) -> list[Subject]:
    """Subjects for (version, text) pairs the way the wallet shows them: a numeric (v1) code
    both as a Code 128 barcode and as a QR code, every other version as a QR code."""
    subjects = []
    for version, text in codes:
        if text.isdigit():
            subjects.append(Subject(text, "code128", version))
        subjects.append(Subject(text, "qr", version))
    return subjects


def _ean13_image(digits: str) -> NDArray[np.uint8]:
    barcode = zxingcpp.create_barcode(digits, zxingcpp.BarcodeFormat.EAN13)
    bars = np.asarray(zxingcpp.write_barcode_to_image(barcode, scale=3), dtype=np.uint8)
    return np.pad(np.repeat(bars[:1], 150, axis=0), ((0, 0), (30, 30)), constant_values=255)


@functools.lru_cache(maxsize=64)
def _code_picture(subject: Subject) -> tuple[NDArray[np.uint8], Points]:
    """The picture the phone shows (gray) and the symbol's corners inside it."""
    if subject.symbology == "qr":
        border, box = 4, 6
        picture = np.asarray(qr_image(subject.text, box_px=box, border_modules=border))
        lo, hi = border * box, picture.shape[1] - border * box
        return picture, np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]], dtype=np.float64)
    if subject.symbology == "code128":
        quiet, module, bars_px = 12, 3, 150
        picture = np.asarray(
            code128_image(subject.text, module_px=module, height_px=bars_px, quiet_modules=quiet)
        )
        lo, hi = quiet * module, picture.shape[1] - quiet * module
        return picture, np.array([[lo, 0], [hi, 0], [hi, bars_px], [lo, bars_px]], dtype=np.float64)
    picture = _ean13_image(subject.text)
    height, width = picture.shape
    return picture, np.array([[30, 0], [width - 30, 0], [width - 30, height], [30, height]], float)


def _phone(picture: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    """Put the picture on a white screen inside a dark bezel; return the phone image (gray)
    and the offset of the picture inside it."""
    height, width = picture.shape
    margin = round(SCREEN_MARGIN_FRACTION * max(height, width))
    screen = np.pad(picture, margin, constant_values=255)
    bezel = round(BEZEL_FRACTION * max(screen.shape))
    phone = np.pad(screen, bezel, constant_values=25)
    return phone, np.array([margin + bezel, margin + bezel], dtype=np.float64)


def background(rng: np.random.Generator) -> Bgr:
    """A cluttered counter under uneven light: smooth colour noise plus random boxes and lines."""
    tint = rng.integers(90, 170, size=3).astype(np.float32)
    coarse = tint + rng.normal(0, 25, size=(6, 10, 3)).astype(np.float32)
    coarse *= np.linspace(0.75, 1.1, 10, dtype=np.float32)[None, :, None]  # light from one side
    coarse = np.clip(coarse, 0, 255).astype(np.uint8)
    scene = cv2.resize(coarse, (FRAME_WIDTH_PX, FRAME_HEIGHT_PX), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(6, 14))):
        x, y = int(rng.integers(0, FRAME_WIDTH_PX)), int(rng.integers(0, FRAME_HEIGHT_PX))
        w, h = int(rng.integers(40, 300)), int(rng.integers(20, 200))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cv2.rectangle(scene, (x, y), (x + w, y + h), colour, thickness=-1)
    for _ in range(int(rng.integers(4, 10))):
        ends = rng.integers(0, FRAME_WIDTH_PX, size=4)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cv2.line(
            scene,
            (int(ends[0]), int(ends[1]) % 720),
            (int(ends[2]), int(ends[3]) % 720),
            colour,
            int(rng.integers(1, 5)),
        )
    return np.asarray(scene, dtype=np.uint8)


def _placement(
    rng: np.random.Generator,
    size: tuple[int, int],
    subject: Subject,
    distortion: str,
    centre_x_fraction: float | None,
) -> NDArray[np.float64]:
    """Homography from phone-image pixels to frame pixels for one distortion.

    The phone fills a realistic part of the frame (the code ~240-330 px across for QR, a
    barcode ~1.7-2.3 px per module). Code 128 stays within +-10 degrees under "rotation":
    a row scanner needs one line through every bar, which steeper angles break for any reader.
    """
    width, height = size
    target_px = rng.uniform(320, 420) if subject.symbology == "qr" else rng.uniform(600, 780)
    scale = target_px / max(width, height)
    if subject.symbology == "qr" and len(subject.text) > 100:
        scale *= 1.15  # dense EMV payloads are shown larger by wallets too
    angle = rng.uniform(-4, 4)
    if distortion == "rotation":
        sign = rng.choice([-1.0, 1.0])
        angle = sign * (rng.uniform(5, 10) if subject.symbology != "qr" else rng.uniform(15, 80))
    x_fraction = rng.uniform(0.38, 0.62) if centre_x_fraction is None else centre_x_fraction
    centre = (x_fraction * FRAME_WIDTH_PX, rng.uniform(0.4, 0.6) * FRAME_HEIGHT_PX)
    src = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    rad = math.radians(angle)
    rot = np.array([[math.cos(rad), -math.sin(rad)], [math.sin(rad), math.cos(rad)]])
    dst = (src - [width / 2, height / 2]) * scale @ rot.T + centre
    if distortion == "perspective":
        # Tilt: pull two adjacent corners in, as when the phone leans away from the camera.
        jitter = rng.uniform(0.12, 0.22) * target_px
        side = int(rng.integers(0, 4))
        for index in (side, (side + 1) % 4):
            dst[index] += (
                (np.asarray(centre) - dst[index])
                / np.linalg.norm(np.asarray(centre) - dst[index])
                * jitter
            )
        dst += rng.normal(0, 0.02 * target_px, size=dst.shape)
    return np.asarray(
        cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)),
        dtype=np.float64,
    )


@functools.lru_cache(maxsize=16)
def _subpixel_mask(height: int, width: int, upsample: int) -> Bgr:
    """Gain per sub-pixel, x64: lit R, G, B stripes (x2.0) and dark gaps (x0.4) between them
    and between pixel rows. The same gain for every frame of a size, so it is built once."""
    cell = np.full((upsample, upsample, 3), 26, dtype=np.uint8)
    for column, channel in zip(range(upsample - 1), (2, 1, 0), strict=False):
        cell[: upsample - 1, column, channel] = 128  # BGR order: R stripe first
    return np.tile(cell, (height // upsample, width // upsample, 1))


def screen_grid(phone: NDArray[np.uint8], upsample: int) -> Bgr:
    """The phone as its pixels look up close: RGB sub-pixel stripes with dark gaps between
    pixel rows. Sampled down by the camera without a prefilter, this grid aliases into moiré."""
    big = cv2.resize(phone, None, fx=upsample, fy=upsample, interpolation=cv2.INTER_NEAREST)
    gains = _subpixel_mask(big.shape[0], big.shape[1], upsample)
    return np.asarray(cv2.multiply(cv2.merge([big, big, big]), gains, scale=1 / 64), np.uint8)


def _paste(scene: Bgr, phone_bgr: Bgr, homography: NDArray[np.float64]) -> Bgr:
    """Warp the phone into the scene; pixels outside the phone keep the scene."""
    out = scene.copy()
    cv2.warpPerspective(
        phone_bgr,
        homography,
        (FRAME_WIDTH_PX, FRAME_HEIGHT_PX),
        dst=out,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_TRANSPARENT,
    )
    return out


@functools.lru_cache(maxsize=1)
def _noise_bank() -> NDArray[np.float32]:
    """One fixed field of unit Gaussian noise, a bit larger than a frame; each frame takes a
    random window of it. Drawing 2.8 M fresh samples per frame would dominate the run time."""
    rng = np.random.default_rng(1_000_003)
    shape = (FRAME_HEIGHT_PX + NOISE_MARGIN_PX, FRAME_WIDTH_PX + NOISE_MARGIN_PX, 3)
    return rng.standard_normal(shape, dtype=np.float32)


def _sensor_noise(rng: np.random.Generator, sigma: float) -> NDArray[np.float32]:
    dy, dx = (int(v) for v in rng.integers(0, NOISE_MARGIN_PX, size=2))
    window = _noise_bank()[dy : dy + FRAME_HEIGHT_PX, dx : dx + FRAME_WIDTH_PX]
    return window * np.float32(sigma)


def _degrade(image: Bgr, distortion: str, rng: np.random.Generator, centre: Points) -> Bgr:
    """Apply the photometric part of a distortion; every frame gets mild sensor noise."""
    work = image.astype(np.float32)
    if distortion == "blur":
        sigma = rng.uniform(1.2, 2.0)
        work = np.asarray(cv2.GaussianBlur(work, (0, 0), sigma), dtype=np.float32)
    elif distortion == "low_contrast":
        low, high = rng.uniform(95, 115), rng.uniform(140, 160)
        work = low + work * np.float32((high - low) / 255.0)
    elif distortion == "glare":
        _add_glare(work, rng, centre)
    sigma_noise = rng.uniform(20, 30) if distortion == "noise" else 2.0
    work += _sensor_noise(rng, sigma_noise)
    return np.clip(work, 0, 255).astype(np.uint8)


def _add_glare(work: NDArray[np.float32], rng: np.random.Generator, centre: Points) -> None:
    """A reflected lamp: an elliptical highlight that washes out part of the code. Computed
    only within 3 radii of its centre, where it still adds more than a grey level."""
    cx, cy = centre + rng.normal(0, 50, size=2)
    rx, ry = rng.uniform(50, 90), rng.uniform(35, 60)
    strength = rng.uniform(200, 260)
    x0, x1 = max(0, int(cx - 3 * rx)), min(FRAME_WIDTH_PX, int(cx + 3 * rx) + 1)
    y0, y1 = max(0, int(cy - 3 * ry)), min(FRAME_HEIGHT_PX, int(cy + 3 * ry) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    blob = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)).astype(np.float32)
    work[y0:y1, x0:x1] += (strength * blob)[:, :, None]


def compose_frame(
    subject: Subject,
    distortion: str,
    rng: np.random.Generator,
    *,
    base: Bgr | None = None,
    centre_x_fraction: float | None = None,
) -> SyntheticFrame:
    """One 1280x720 BGR frame of a phone showing `subject`, degraded by `distortion`.

    `base` (a frame from an earlier call) puts a second phone into the same scene, centred
    at `centre_x_fraction` of the width; the degradation is then applied once more.
    """
    if distortion not in DISTORTIONS:
        raise ValueError(f"unknown distortion {distortion!r}; choose one of {DISTORTIONS}")
    picture, symbol = _code_picture(subject)
    phone, offset = _phone(picture)
    height, width = phone.shape
    homography = _placement(rng, (width, height), subject, distortion, centre_x_fraction)
    scene = background(rng) if base is None else base
    if distortion == "moire":
        upsample = 4
        phone_bgr = screen_grid(phone, upsample)
        scaled = homography @ np.diag([1.0 / upsample, 1.0 / upsample, 1.0])
        image = _paste(scene, phone_bgr, scaled)
    else:
        phone_bgr = np.asarray(cv2.cvtColor(phone, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
        image = _paste(scene, phone_bgr, homography)
    corners = np.asarray(
        cv2.perspectiveTransform((symbol + offset).reshape(1, 4, 2), homography), np.float64
    ).reshape(4, 2)
    image = _degrade(image, distortion, rng, corners.mean(axis=0))
    return SyntheticFrame(image, subject, distortion, corners)


def empty_frame(rng: np.random.Generator) -> SyntheticFrame:
    """A frame with no code at all: what the camera sees most of the time at a till."""
    return SyntheticFrame(_degrade(background(rng), "clean", rng, np.zeros(2)), None, "none", None)


def synthetic_set(
    subjects: Sequence[Subject],
    *,
    per_distortion: int,
    seed: int = 20240601,
    distortions: Sequence[str] = DISTORTIONS,
) -> list[SyntheticFrame]:
    """`per_distortion` frames of every subject under every distortion, reproducible by seed.

    A frame's randomness depends on (seed, subject text, distortion, index) only, so a subset
    of subjects (one per worker process, say) yields exactly the frames of the full set.
    """
    frames = []
    for subject in subjects:
        subject_key = zlib.crc32(f"{subject.symbology}:{subject.text}".encode())
        for distortion in distortions:
            distortion_key = DISTORTIONS.index(distortion)
            for index in range(per_distortion):
                rng = np.random.default_rng([seed, subject_key, distortion_key, index])
                frames.append(compose_frame(subject, distortion, rng))
    return frames


def write_video(frames: Sequence[Bgr], path: Path, *, fps: float = 30.0) -> Path:
    """Write BGR frames as an MJPG .avi and check that OpenCV reads every frame back."""
    if not 0 < len(frames) <= VIDEO_FRAMES_MAX:
        raise ValueError(f"need 1..{VIDEO_FRAMES_MAX} frames, got {len(frames)}")
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*VIDEO_FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"cv2.VideoWriter cannot write {VIDEO_FOURCC} to {path}")
    try:
        for frame in frames:
            if frame.shape[:2] != (height, width):
                raise ValueError("every frame of a video must have the same size")
            writer.write(frame)
    finally:
        writer.release()
    count = len(read_video(path))
    if count != len(frames):
        raise OSError(f"{path}: wrote {len(frames)} frames, OpenCV reads back {count}")
    return path


def read_video(path: Path) -> list[Bgr]:
    """Every frame of a video file (bounded by VIDEO_FRAMES_MAX)."""
    capture = cv2.VideoCapture(str(path), video_backend())
    frames: list[Bgr] = []
    try:
        for _ in range(VIDEO_FRAMES_MAX):
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(np.asarray(frame, dtype=np.uint8))
    finally:
        capture.release()
    return frames
