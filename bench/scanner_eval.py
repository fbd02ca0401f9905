"""Read rate of the till's readers on a folder of labelled photos: real ones or bench.scanner_set's.

    python -m bench.scanner_eval FOLDER [--readers scanner,reader,zxing,pyzbar,opencv]

FOLDER holds the images (JPEG, PNG, ...) and `expected.tsv`: a header line, then one line per
image, tab-separated: `file`, `symbology` (qr or code128), `text` (exactly what the code
holds; a backslash escapes a tab, CR or LF inside it as \\t, \\r, \\n, and itself as \\\\), and
optionally `kind` (v1, v2, v3, v4: payment codes; anything else, e.g. emv, is a code the till's
scanner ignores by design). Each image should show one code.

Per reader: the share of QR and of Code 128 images whose expected text it read, wrong reads
(an image where it returned any other text: a misread, the one failure that can charge the
wrong code), and ms per image (median and p95, one core).

  scanner   the till's Scanner, real clock and budget, the image held up to HOLD_FRAMES
            frames as a customer holds a phone; only images of payment codes (it ignores the
            rest by design).
  reader    every pass of the same plan until one reads (`inspect --image`, stills).
  zxing, pyzbar, opencv
            one read by that decoder alone.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.scanner_set import generate
from paycode.merchant_pos.decoders import available_backends, make_backend
from paycode.merchant_pos.frames import to_gray
from paycode.merchant_pos.opencv import cv2
from paycode.merchant_pos.scanloop import Scanner
from paycode.merchant_pos.stillread import read_still

__all__ = [
    "HOLD_FRAMES",
    "Photo",
    "Tally",
    "escaped",
    "evaluate",
    "evaluation_section",
    "read_folder",
    "table",
    "unescaped",
]

HOLD_FRAMES = 3
PAYMENT_KINDS = ("v1", "v2", "v3", "v4")
SYMBOLOGIES = ("qr", "code128")
GROUPS = {"qr": "QR payment code", "other-qr": "other QR", "code128": "Code 128"}
PHOTOS_MAX = 10_000
SPLIT_NOTES = {
    "tune": "the passes and their parameters were chosen on it",
    "holdout": "never tuned on; only reported",
}

Bgr = NDArray[np.uint8]
Reader = Callable[[Bgr], "tuple[set[str], list[float]]"]


@dataclass(frozen=True, slots=True)
class Photo:
    """One labelled image: how to load it, and what it shows."""

    name: str
    symbology: str
    text: str
    kind: str
    load: Callable[[], Bgr]
    condition: str = ""

    @property
    def group(self) -> str:
        """qr (a payment code), other-qr (e.g. the EMV poster, or kind unknown) or code128:
        the Scanner reads only payment codes, so its rates compare on those alone."""
        if self.symbology == "qr" and self.kind not in PAYMENT_KINDS:
            return "other-qr"
        return self.symbology


@dataclass
class Tally:
    """One reader's results: images shown and read per group (Photo.group), wrong reads, ms."""

    shown: dict[str, int] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)

    def add(self, photo: Photo, texts: set[str], ms: list[float]) -> None:
        self.shown[photo.group] = self.shown.get(photo.group, 0) + 1
        hit = photo.text in texts
        self.read[photo.group] = self.read.get(photo.group, 0) + hit
        if not hit:
            self.missed.append(photo.name)
        if texts - {photo.text}:
            self.wrong.append(photo.name)
        self.ms += ms

    def rate(self, group: str) -> float | None:
        shown = self.shown.get(group, 0)
        return self.read.get(group, 0) / shown if shown else None


def _file_loader(path: Path) -> Callable[[], Bgr]:
    def load() -> Bgr:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path} is not an image OpenCV can read")
        return np.asarray(image, dtype=np.uint8)

    return load


def escaped(text: str) -> str:
    """`text` for one manifest cell: backslash, tab, CR and LF escaped as `unescaped` reads them."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")


_ESCAPES = {"\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


def unescaped(cell: str) -> str:
    """A manifest's text cell with its backslash escapes (module docstring) resolved."""
    parts = iter(cell)
    out = []
    for char in parts:
        if char != "\\":
            out.append(char)
            continue
        follower = next(parts, "")
        if follower not in _ESCAPES:
            raise ValueError(f"unknown escape \\{follower} in {cell!r}")
        out.append(_ESCAPES[follower])
    return "".join(out)


def read_folder(folder: Path) -> list[Photo]:
    """The photos `folder/expected.tsv` lists (module docstring)."""
    manifest = folder / "expected.tsv"
    with manifest.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    photos = []
    for row in rows[:PHOTOS_MAX]:
        symbology = row["symbology"].strip().lower()
        if symbology not in SYMBOLOGIES:
            raise ValueError(f"{manifest}: {row['file']}: symbology must be one of {SYMBOLOGIES}")
        kind = (row.get("kind") or "").strip()
        path = folder / row["file"]
        text = unescaped(row["text"])
        photos.append(Photo(row["file"], symbology, text, kind, _file_loader(path)))
    return photos


def _timed(call: Callable[[], set[str]]) -> tuple[set[str], list[float]]:
    start = time.perf_counter()
    texts = call()
    return texts, [(time.perf_counter() - start) * 1000.0]


def _scanner_reader() -> Reader:
    scanner = Scanner()

    def read(image: Bgr) -> tuple[set[str], list[float]]:
        scanner.reset()
        texts: set[str] = set()
        ms: list[float] = []
        for _ in range(HOLD_FRAMES):
            start = time.perf_counter()
            found = scanner.scan_frame(image)
            ms.append((time.perf_counter() - start) * 1000.0)
            texts |= {d.text for d in found}
            if found:
                break
        return texts, ms

    return read


def _still_reader(image: Bgr) -> tuple[set[str], list[float]]:
    return _timed(lambda: {d.text for d in read_still(to_gray(image))})


def _decoder_reader(name: str) -> Reader:
    decoder = make_backend(name)

    def read(image: Bgr) -> tuple[set[str], list[float]]:
        return _timed(lambda: {d.text for d in decoder.decode(to_gray(image))})

    return read


def readers(names: Sequence[str]) -> dict[str, Reader]:
    """The named readers (module docstring), each image in, (texts, ms per frame) out."""
    built: dict[str, Reader] = {}
    for name in names:
        if name == "scanner":
            built[name] = _scanner_reader()
        elif name == "reader":
            built[name] = _still_reader
        else:
            built[name] = _decoder_reader(name)
    return built


def evaluate(photos: Sequence[Photo], names: Sequence[str]) -> dict[str, Tally]:
    """Every reader on every photo, back to back in rotating order (shared-machine noise
    hits all alike). The scanner sees payment codes only."""
    built = readers(names)
    tallies = {name: Tally() for name in names}
    for index, photo in enumerate(photos):
        image = photo.load()
        shift = index % len(names)
        for name in [*names[shift:], *names[:shift]]:
            if name == "scanner" and photo.kind not in PAYMENT_KINDS:
                continue
            texts, ms = built[name](image)
            tallies[name].add(photo, texts, ms)
    return tallies


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def table(tallies: dict[str, Tally]) -> list[str]:
    """Markdown: per reader, read rate (read/shown) per group, wrong reads, ms."""
    groups = [g for g in GROUPS if any(t.shown.get(g) for t in tallies.values())]
    lines = [
        "| reader | "
        + " | ".join(f"{GROUPS[g]} read" for g in groups)
        + " | wrong reads | median ms | p95 ms |",
        "| --- |" + " ---: |" * (len(groups) + 3),
    ]
    for name, tally in tallies.items():
        cells = [
            f"{_percent(tally.rate(s))} ({tally.read.get(s, 0)}/{tally.shown.get(s, 0)})"
            for s in groups
        ]
        times = "| - | -"
        if tally.ms:
            median = statistics.median(tally.ms)
            times = f"| {median:.2f} | {float(np.percentile(tally.ms, 95)):.2f}"
        lines.append(f"| {name} | {' | '.join(cells)} | {len(tally.wrong)} {times} |")
    return lines


def set_photos(split: str, repeats: int, every: int) -> list[Photo]:
    """The photos of one split of bench.scanner_set, decoded from their JPEG bytes."""
    return [
        Photo(
            item.name,
            item.payload.symbology,
            item.payload.text,
            item.payload.kind,
            item.image,
            item.condition.split("+")[0],
        )
        for item in generate(split, repeats, every=every)
    ]


def by_condition(photos: Sequence[Photo], tally: Tally) -> str:
    """`condition: read/shown` for a reader's tally, main condition only, worst first."""
    condition_of = {photo.name: photo.condition for photo in photos}
    shown = Counter(condition_of.values())
    missed = Counter(condition_of[name] for name in tally.missed if name in condition_of)
    ordered = sorted(shown, key=lambda c: (shown[c] - missed[c]) / shown[c])
    return ", ".join(f"{c} {shown[c] - missed[c]}/{shown[c]}" for c in ordered)


def evaluation_section(names: Sequence[str], *, quick: bool) -> tuple[list[str], dict[str, object]]:
    """Markdown and JSON figures for both splits of the evaluation set, every reader."""
    every = 7 if quick else 1  # 7 is prime to the 12 frames of a condition: every kind
    lines: list[str] = []
    figures: dict[str, object] = {}
    for split, note in SPLIT_NOTES.items():
        photos = set_photos(split, 1, every)
        tallies = evaluate(photos, names)
        lines += [f"### `{split}` split: {note}", "", *table(tallies), ""]
        lines.append(
            f"Combined reader by main condition: {by_condition(photos, tallies['reader'])}."
        )
        lines.append("")
        figures[split] = {
            name: {
                "qr_read_rate": t.rate("qr"),
                "other_qr_read_rate": t.rate("other-qr"),
                "code128_read_rate": t.rate("code128"),
                "wrong_reads": len(t.wrong),
                "median_ms": statistics.median(t.ms) if t.ms else None,
            }
            for name, t in tallies.items()
        }
    return lines, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--readers", default="scanner,reader," + ",".join(available_backends()))
    parser.add_argument("--list-misses", action="store_true", help="name the images missed")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    names = [name.strip() for name in args.readers.split(",") if name.strip()]
    try:
        photos = read_folder(args.folder)
    except (OSError, KeyError, ValueError) as error:  # KeyError: a column is missing
        print(f"cannot read {args.folder / 'expected.tsv'}: {error!r}", file=sys.stderr)
        return 2
    tallies = evaluate(photos, names)
    print("\n".join(table(tallies)))
    for name, tally in tallies.items():
        if tally.wrong:
            print(f"{name}: wrong read on {', '.join(tally.wrong)}")
        if args.list_misses and tally.missed:
            print(f"{name}: missed {', '.join(tally.missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
