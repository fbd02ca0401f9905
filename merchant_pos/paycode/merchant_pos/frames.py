"""Where the POS gets its pictures: a webcam, a video file or a still image, as BGR frames.

`paycode-pos charge --source SPEC` takes one of

    camera:N      the N-th webcam (cv2.VideoCapture index), until the scan times out
    video:PATH    every frame of a video file, in order, until its end
    image:PATH    one still image, yielded `image_repeats` times (see `FrameSource`)
    stdin         typed digits from a USB barcode gun: no frames; the CLI reads those itself

Opening never half-succeeds: a source that cannot deliver its first frame raises
`SourceUnavailable` (stable code `source_unavailable`) naming what failed, so the cashier sees
"camera 0 is not available" rather than a scan that silently times out. Resources are bounded:
one frame in flight (the camera's driver queue is cut to one frame, so the POS always sees the
newest picture), a cap on the frames a source yields, and the capture released on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from paycode.appkit.decoding import (
    IMAGE_PIXELS_MAX,
    Gray,
    check_pixels,
    gray_image,
    open_image_file,
)
from paycode.merchant_pos.opencv import cv2, video_backend
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ImageUnreadable, PaycodeError

__all__ = [
    "FRAMES_MAX",
    "IMAGE_PIXELS_MAX",
    "IMAGE_REPEATS",
    "FrameSource",
    "SourceInvalid",
    "SourceSpec",
    "SourceUnavailable",
    "open_source",
    "parse_source",
    "to_gray",
]

Bgr = NDArray[np.uint8]
SourceKind = Literal["camera", "video", "image", "stdin"]

FRAMES_MAX = 108_000  # one hour at 30 fps: no scan session is longer
IMAGE_REPEATS = 12  # > the Scanner's starvation guard (10): every pass sees a still once
CAMERA_INDEX_MAX = 63
CAMERA_READ_FAILURES_MAX = 30  # ~1 s of dropped frames before the camera counts as gone
CAMERA_WIDTH_PX, CAMERA_HEIGHT_PX = 1280, 720  # what the scanner is tuned and measured on


class SourceUnavailable(PaycodeError):
    """A frame source cannot be opened or stopped delivering frames (no camera, no file, not
    a video or image OpenCV can read)."""

    code = ErrorCode.SOURCE_UNAVAILABLE


class SourceInvalid(PaycodeError):
    """A source spec is not `camera:N`, `video:PATH`, `image:PATH` or `stdin`."""

    code = ErrorCode.SOURCE_INVALID


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed `--source`: `target` is the camera index as text, a path, or "" for stdin."""

    kind: SourceKind
    target: str

    def __str__(self) -> str:
        return self.kind if self.kind == "stdin" else f"{self.kind}:{self.target}"


def parse_source(spec: str) -> SourceSpec:
    """Parse `camera:N`, `video:PATH`, `image:PATH` or `stdin`; SourceInvalid otherwise."""
    if spec == "stdin":
        return SourceSpec("stdin", "")
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise SourceInvalid(
            f"source {spec!r} is not one of camera:N, video:PATH, image:PATH, stdin"
        )
    if kind == "camera":
        if not (target.isascii() and target.isdigit() and int(target) <= CAMERA_INDEX_MAX):
            raise SourceInvalid(f"camera index must be 0..{CAMERA_INDEX_MAX}, got {target!r}")
        return SourceSpec("camera", str(int(target)))
    if kind in ("video", "image"):
        return SourceSpec("video" if kind == "video" else "image", target)
    raise SourceInvalid(f"unknown source kind {kind!r}; use camera:N, video:PATH, image:PATH")


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own warnings while probing: a missing camera makes every video
    backend print a paragraph to stderr, and the cashier should see one clear error."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _read_image(path: Path) -> Bgr:
    """Load a still as 8-bit BGR through the one bounded image reader (its size is checked
    from the header before decoding). Transparent, 16-bit and gray images become gray (alpha
    flattened onto white, as a phone screen shows it) and come back as BGR."""
    try:
        with open_image_file(path) as image:
            if image.mode == "RGB":
                return np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[:, :, ::-1])
            gray = gray_image(image)
    except ImageUnreadable as error:
        raise SourceUnavailable(error.message) from error
    return np.asarray(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), dtype=np.uint8)


def _open_capture(spec: SourceSpec) -> Any:
    """Open a cv2.VideoCapture for a camera index or a video path; SourceUnavailable if not."""
    if spec.kind == "video" and not Path(spec.target).is_file():
        raise SourceUnavailable(f"no video file at {spec.target}")
    with _quiet_opencv():
        if spec.kind == "camera":
            capture = cv2.VideoCapture(int(spec.target))
            # The newest frame, not a backlog: a slow frame must not make the POS lag behind.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, CAMERA_WIDTH_PX)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, CAMERA_HEIGHT_PX)
        else:
            capture = cv2.VideoCapture(spec.target, video_backend())
    if not capture.isOpened():
        capture.release()
        what = f"camera {spec.target}" if spec.kind == "camera" else spec.target
        raise SourceUnavailable(f"cannot open {what} (is it connected / a video file?)")
    try:
        # A video's frame size is in its header: a frame too large to be a picture of a
        # phone is refused before the first one is decoded (a camera's driver bounds its own).
        width_px = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height_px = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        check_pixels(width_px, height_px, spec.target if spec.kind == "video" else str(spec))
    except BaseException:
        capture.release()
        raise
    return capture


class FrameSource:
    """An open source of BGR frames; use it as a context manager and iterate it once.

    A still image is yielded `image_repeats` times and then the source ends: the Scanner
    spreads its slower decoding passes over consecutive frames, so a few repeats let every
    pass look at the picture, and a picture with no payment code ends the scan at once
    instead of waiting for the timeout. A video ends at its last frame; a camera only ends
    at `frames_max` (the scan's timeout normally stops it first).
    """

    def __init__(
        self, spec: SourceSpec, *, frames_max: int = FRAMES_MAX, image_repeats: int = IMAGE_REPEATS
    ) -> None:
        if spec.kind == "stdin":
            raise SourceInvalid("stdin carries typed digits, not frames; read it as text")
        if frames_max < 1 or image_repeats < 1:
            raise ValueError("frames_max and image_repeats must be >= 1")
        self.spec = spec
        self._frames_max = frames_max
        self._image_repeats = image_repeats
        self._capture: Any = None
        self._first: Bgr | None = None
        self._iterated = False
        if spec.kind == "image":
            self._first = _read_image(Path(spec.target))
        else:
            self._capture = _open_capture(spec)
            self._first = self._read_first()

    def _read_first(self) -> Bgr:
        """Read one frame now, so a file that opens but holds no video fails at open time."""
        attempts = CAMERA_READ_FAILURES_MAX if self.spec.kind == "camera" else 1
        for _ in range(attempts):
            ok, frame = self._capture.read()
            if ok and frame is not None:
                return np.asarray(frame, dtype=np.uint8)
        self.close()
        raise SourceUnavailable(f"{self.spec} opened but delivered no frame")

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the frames, from the first frame."""
        assert self._first is not None
        return int(self._first.shape[1]), int(self._first.shape[0])

    def __iter__(self) -> Iterator[Bgr]:
        if self._iterated:
            raise RuntimeError("a FrameSource is iterated once; open the source again")
        self._iterated = True
        first, self._first = self._first, None
        assert first is not None
        if self.spec.kind == "image":
            yield from (first for _ in range(min(self._image_repeats, self._frames_max)))
            return
        yield first
        yield from self._stream(self._frames_max - 1)

    def _stream(self, frames_max: int) -> Iterator[Bgr]:
        failures = 0
        yielded = 0
        while yielded < frames_max and self._capture is not None:
            ok, frame = self._capture.read()
            if ok and frame is not None:
                failures = 0
                yielded += 1
                yield np.asarray(frame, dtype=np.uint8)
            elif self.spec.kind == "video":
                return  # end of file
            else:
                failures += 1
                if failures >= CAMERA_READ_FAILURES_MAX:
                    raise SourceUnavailable(f"{self.spec} stopped delivering frames")

    def close(self) -> None:
        """Release the capture device or file; safe to call more than once."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_source(
    spec: str | SourceSpec, *, frames_max: int = FRAMES_MAX, image_repeats: int = IMAGE_REPEATS
) -> FrameSource:
    """Open `camera:N`, `video:PATH` or `image:PATH` (text or parsed) as a FrameSource."""
    parsed = parse_source(spec) if isinstance(spec, str) else spec
    return FrameSource(parsed, frames_max=frames_max, image_repeats=image_repeats)


def _gray_from_bgra(image: NDArray[np.uint8]) -> Gray:
    """Flatten alpha onto white: an exported code with a transparent background is
    black-on-nothing, which would otherwise read as black-on-black."""
    gray = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY).astype(np.float32)
    alpha = image[:, :, 3].astype(np.float32) / 255.0
    flat: Gray = np.round(gray * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return flat


def to_gray(image: NDArray[Any]) -> Gray:
    """Convert an OpenCV image (gray, BGR or BGRA; 8- or 16-bit) to 8-bit gray."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {image.dtype}; expected uint8 or uint16")
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    if channels == 1:
        return np.ascontiguousarray(image.reshape(image.shape[:2]))
    if channels == 3:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    if channels == 4:
        return _gray_from_bgra(image)
    raise ValueError(f"unsupported image shape {image.shape}; expected gray, BGR or BGRA")
