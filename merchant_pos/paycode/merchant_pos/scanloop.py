"""The POS scan loop: camera frames in, one payment code out, with bounded work per frame.

A till's webcam delivers 30 frames a second and nearly all of them show no code, so the cost
that matters is the steady-state cost of a frame, and it must stay well under 33 ms on one
core. `Scanner.scan_frame` therefore bounds the work per frame:

1. gray conversion, and a downscale to at most `working_width_px_max` (1280 px: a 1080p or
   4K camera costs what a 720p one does);
2. the plan's `always` passes (by default one zxing-cpp read of QR and Code 128), which read
   most codes for ~3.5 ms on a 720p frame;
3. when those found no payment code and the frame looks like it may hold one (dense edges:
   `merchant_pos.codelike`, ~0.4 ms), the `ring` passes (sharpened, enlarged, equalised,
   pyzbar: see `merchant_pos.scanpasses`) run in turn while their measured cost fits
   what is left of `budget_ms`; the turn carries over to the next frame. A pass that does not
   fit is not locked out: the starvation guard runs it at least every `STARVED_FRAMES_MAX`
   frames (a third of a second at 30 fps), so a code held to the camera meets every pass.

Every decoded text goes through the shared version registry (`route`, then the version's own
`parse`, which checks its check digit or structure). Anything else - a product barcode, a URL,
a merchant's EMV poster - is counted and dropped, never returned. Misreads fail `parse` and are
dropped the same way, so the loop keeps looking instead of charging a corrupt code.

A code is reported once per scanning session (debounce): payment codes are single use, so the
same text seen again - in the next frame or a second later - is never a new payment.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from paycode.appkit.decoding import Corners, Decoded, Gray
from paycode.merchant_pos.codelike import looks_like_code
from paycode.merchant_pos.frames import to_gray
from paycode.merchant_pos.opencv import cv2
from paycode.merchant_pos.scanpasses import DecodePass, Plan, default_plan
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import CodeMalformed, PaycodeError
from paycode.shared.versions.registry import route

__all__ = [
    "BUDGET_MS",
    "FRAMES_MAX",
    "STARVED_FRAMES_MAX",
    "Detection",
    "NoPaymentCode",
    "ScanTimeout",
    "Scanner",
]

Clock = Callable[[], float]
Gate = Callable[[Gray], bool]
FrameCallback = Callable[[NDArray[np.uint8], "list[Detection]"], None]

BUDGET_MS = 8.0  # a quarter of a 33 ms frame: capture, JPEG decode and display need the rest
WORKING_WIDTH_PX_MAX = 1280
FRAMES_MAX = 108_000  # one hour at 30 fps bounds any session, even with a frozen clock
SEEN_TEXTS_MAX = 256  # distinct texts remembered per session for debouncing and the summary
STARVED_FRAMES_MAX = 10  # a ring pass runs at least every 10 frames, budget or not
COST_SMOOTHING = 0.2  # weight of the newest measurement in a pass's running cost estimate


@dataclass(frozen=True, slots=True)
class Detection:
    """A payment code found in a frame. `corners` are 4 points in the ORIGINAL frame's pixels
    (clockwise from the symbol's top-left), ready for the POS window to outline."""

    text: str
    version: str
    format: str
    corners: Corners
    backend: str
    frame_index: int


class NoPaymentCode(PaycodeError):
    """The source ended (a video's last frame, a still image) without a payment code."""

    code = ErrorCode.NO_PAYMENT_CODE

    def __init__(self, message: str, *, frames_scanned: int, elapsed_seconds: float) -> None:
        super().__init__(message)
        self.frames_scanned = frames_scanned
        self.elapsed_seconds = elapsed_seconds


class ScanTimeout(NoPaymentCode):
    """No payment code was found within the scan's `timeout_seconds`."""

    code = ErrorCode.SCAN_TIMEOUT


@dataclass
class _Session:
    """What one scanning session has seen: texts by kind (bounded) and the frame count."""

    seen: OrderedDict[str, str] = field(default_factory=OrderedDict)
    frames: int = 0

    def remember(self, text: str, kind: str) -> bool:
        """Record `text`; True if it is new in this session."""
        if text in self.seen:
            self.seen.move_to_end(text)
            return False
        self.seen[text] = kind
        while len(self.seen) > SEEN_TEXTS_MAX:
            self.seen.popitem(last=False)
        return True

    def count(self, kind: str) -> int:
        return sum(1 for seen_kind in self.seen.values() if seen_kind == kind)


def to_original(corners: Corners, scale_x: float, scale_y: float) -> Corners:
    """Map pixel centres of an image resized by (scale_x, scale_y) back onto the frame."""
    return tuple(
        (round((x + 0.5) / scale_x - 0.5), round((y + 0.5) / scale_y - 0.5)) for x, y in corners
    )


def resized(gray: Gray, scale_x: float, scale_y: float) -> Gray:
    """`gray` resized by (scale_x, scale_y); the same array when both are 1.

    Shrinking averages areas (it smooths noise); enlarging is cubic, where area would only
    replicate pixels and keep a small code's blocky edges. A pass may do both (Code 128
    widened and squeezed): the shrink comes first, so the enlarging step has less to do.
    """
    height, width = gray.shape[:2]
    out = gray
    shrink_x, shrink_y = min(scale_x, 1.0), min(scale_y, 1.0)
    if (shrink_x, shrink_y) != (1.0, 1.0):
        size = (max(1, round(width * shrink_x)), max(1, round(height * shrink_y)))
        out = np.asarray(cv2.resize(out, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    if scale_x > 1.0 or scale_y > 1.0:
        size = (max(1, round(width * scale_x)), max(1, round(height * scale_y)))
        out = np.asarray(cv2.resize(out, size, interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
    return out


class Scanner:
    """Finds payment codes in camera frames with bounded work per frame (module docstring).

    `budget_ms` bounds a frame's work (gray conversion and decoding) except for the
    always-run passes and the starvation guard: a ring pass skipped for
    `STARVED_FRAMES_MAX` frames runs anyway, so a slow moment never locks a decoder out.
    `clock` (seconds, monotonic) times the passes; tests pass a frozen clock, under which
    every pass fits and each frame's plan is deterministic. `gate` decides, after the
    always-run passes read nothing, whether the frame may hold a code at all; only then do
    ring passes run (None: on every such frame).
    """

    def __init__(
        self,
        backends: Sequence[str] | None = None,
        *,
        plan: Plan | None = None,
        budget_ms: float = BUDGET_MS,
        working_width_px_max: int = WORKING_WIDTH_PX_MAX,
        clock: Clock = time.perf_counter,
        gate: Gate | None = looks_like_code,
    ) -> None:
        self.plan = plan if plan is not None else default_plan(backends)
        if not self.plan.always:
            raise ValueError("a Scanner needs at least one pass that runs on every frame")
        if budget_ms <= 0 or working_width_px_max < 64:
            raise ValueError("budget_ms must be > 0 and working_width_px_max >= 64")
        self._budget_ms = budget_ms
        self._width_max = working_width_px_max
        self._clock = clock
        self._gate = gate
        self._cost_ms: list[float | None] = [None] * len(self.plan.ring)  # None: not yet run
        self._skipped = [0] * len(self.plan.ring)  # consecutive frames each pass sat out
        self._cursor = 0
        self._session = _Session()

    @property
    def frames_scanned(self) -> int:
        return self._session.frames

    def cost_estimates_ms(self) -> dict[str, float | None]:
        """The running cost estimate of each ring pass (None: not run yet), for benchmarks."""
        return {p.label: cost for p, cost in zip(self.plan.ring, self._cost_ms, strict=True)}

    def seen_count(self, kind: str) -> int:
        """Distinct texts of `kind` ("payment", "foreign", "malformed") seen this session."""
        return self._session.count(kind)

    def reset(self) -> None:
        """Start a new session (a new sale): forget every text seen so far."""
        self._session = _Session()

    def scan_frame(self, frame: NDArray[Any]) -> list[Detection]:
        """Payment codes that appear in `frame` for the first time this session."""
        started = self._clock()
        gray = to_gray(frame)
        scale = min(1.0, self._width_max / gray.shape[1])
        work = resized(gray, scale, scale)
        index = self._session.frames
        self._session.frames += 1
        found: list[Detection] = []
        for decode_pass in self.plan.always:
            found = self._classify(self._run(decode_pass, work, scale), index)
            if found:
                break
        if not found and (self._gate is None or self._gate(work)):
            found = self._escalate(work, scale, started, index)
        return [d for d in found if self._session.remember(d.text, "payment")]

    def _run(self, decode_pass: DecodePass, work: Gray, work_scale: float) -> list[Decoded]:
        image = resized(work, decode_pass.scale_x, decode_pass.scale_y)
        scale_x, scale_y = work_scale * decode_pass.scale_x, work_scale * decode_pass.scale_y
        return [
            Decoded(d.format, d.text, to_original(d.corners, scale_x, scale_y), decode_pass.label)
            for d in decode_pass.decoder.decode(image)
        ]

    def _escalate(self, work: Gray, scale: float, started: float, index: int) -> list[Detection]:
        """Run ring passes, from the cursor on, while their estimated cost fits the budget.

        The cursor stops at the first pass that did not fit, so it goes first next frame.
        """
        ring = len(self.plan.ring)
        first_skipped: int | None = None
        for offset in range(ring):
            position = (self._cursor + offset) % ring
            spent_ms = (self._clock() - started) * 1000.0
            starved = self._skipped[position] >= STARVED_FRAMES_MAX
            estimate_ms = self._cost_ms[position] or 0.0  # unmeasured passes get one try
            if spent_ms + estimate_ms > self._budget_ms and not starved:
                self._skipped[position] += 1
                if first_skipped is None:
                    first_skipped = position
                continue
            found = self._classify(self._timed_run(position, work, scale), index)
            if found:
                self._cursor = first_skipped if first_skipped is not None else position + 1
                self._cursor %= ring
                return found
        if first_skipped is not None:
            self._cursor = first_skipped
        return []

    def _timed_run(self, position: int, work: Gray, scale: float) -> list[Decoded]:
        before = self._clock()
        decoded = self._run(self.plan.ring[position], work, scale)
        cost_ms = (self._clock() - before) * 1000.0
        old_ms = self._cost_ms[position]
        self._cost_ms[position] = (
            cost_ms if old_ms is None else old_ms + COST_SMOOTHING * (cost_ms - old_ms)
        )
        self._skipped[position] = 0
        return decoded

    def _classify(self, decoded: Iterable[Decoded], index: int) -> list[Detection]:
        """Keep well-formed payment codes (one per text); remember everything else by kind."""
        found: dict[str, Detection] = {}
        for item in decoded:
            try:
                codec = route(item.text)
            except CodeMalformed:
                self._session.remember(item.text, "foreign")
                continue
            try:
                codec.parse(item.text)
            except CodeMalformed:
                self._session.remember(item.text, "malformed")
                continue
            found.setdefault(
                item.text,
                Detection(item.text, codec.version, item.format, item.corners, item.backend, index),
            )
        return list(found.values())

    def first_payment_code(
        self,
        frames: Iterable[NDArray[Any]],
        *,
        clock: Clock,
        timeout_seconds: float,
        frames_max: int = FRAMES_MAX,
        on_frame: FrameCallback | None = None,
    ) -> Detection:
        """Scan `frames` in a new session until a payment code appears.

        Raises ScanTimeout when `timeout_seconds` (by `clock`) pass first, and NoPaymentCode
        when the frames run out first (or `frames_max` is reached). `on_frame(frame,
        detections)` runs after each frame, e.g. to show it with the code outlined.
        """
        if timeout_seconds <= 0 or frames_max < 1:
            raise ValueError("timeout_seconds must be > 0 and frames_max >= 1")
        self.reset()
        started = clock()
        for frame in itertools.islice(frames, frames_max):
            if clock() - started >= timeout_seconds:
                raise self._no_code(ScanTimeout, clock() - started, timeout_seconds)
            detections = self.scan_frame(frame)
            if on_frame is not None:
                on_frame(frame, detections)
            if detections:
                return detections[0]
        raise self._no_code(NoPaymentCode, clock() - started, timeout_seconds)

    def _no_code(
        self, kind: type[NoPaymentCode], elapsed_seconds: float, timeout_seconds: float
    ) -> NoPaymentCode:
        """The error a cashier reads: how long, how many frames, and what else was seen.
        Never the texts themselves: a payment code is a bearer credential until it expires."""
        frames = self._session.frames
        what = (
            f"no payment code found within {timeout_seconds:g} s"
            if kind is ScanTimeout
            else "the source ended without a payment code"
        )
        notes = [f"{frames} frames scanned"]
        foreign, malformed = self.seen_count("foreign"), self.seen_count("malformed")
        if foreign:
            notes.append(f"{foreign} other code(s) ignored: not payment codes")
        if malformed:
            notes.append(f"{malformed} damaged payment code(s) ignored: ask for a fresh code")
        return kind(
            f"{what} ({'; '.join(notes)})", frames_scanned=frames, elapsed_seconds=elapsed_seconds
        )
