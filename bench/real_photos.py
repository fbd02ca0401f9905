"""Real photographs from outside this repository: phone and webcam pictures of QR and Code 128
symbols that two Debian source packages carry in their tests, fetched from Debian's archive.

    python -m bench.real_photos OUT        # then: python -m bench.scanner_eval OUT

Public decoder corpora live on hosts these machines cannot reach; Debian's mirror is reachable
and keeps old sources byte for byte. Each tarball is pinned by the SHA-256 that Debian's
`Sources` index publishes for it, downloaded once into OUT/.downloads, and only the listed
pictures are extracted, into OUT with an `expected.tsv` in bench.scanner_eval's layout.

The set is small (9 pictures) and easy: it proves the evaluation runs on real camera pictures
and that no pass misreads them, not that a read rate holds on hard photographs. The expected
texts are what zxing-cpp and zbar, two independent decoders, both read from each picture.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.scanner_eval import escaped, evaluate, read_folder, table

__all__ = ["PHOTOS", "TARBALLS", "fetch", "section"]

DEBIAN_POOL = "http://deb.debian.org/debian/pool/main"
DOWNLOAD_BYTES_MAX = 64 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 120


@dataclass(frozen=True, slots=True)
class Tarball:
    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class RealPhoto:
    file: str
    tarball: str
    member: str
    symbology: str
    text: str


TARBALLS = {
    "zxing": Tarball(
        "z/zxing/zxing_3.4.1+ds.orig.tar.xz",
        "94add6dafaf68a57de0e16d3ea7028023449adac60312f5876eb1d09f27846ff",
    ),
    "linphone": Tarball(
        "l/linphone/linphone_5.1.65.orig.tar.gz",
        "235e1fd2d9328bf073e942796a4fccd7c541370386b8e552067c6d899ecc5c54",
    ),
}

_ZXING = "zxing-zxing-3.4.1/core/src/test/resources/benchmark/"
_OWEN = "MECARD:N:Sean Owen;TEL:+12125658770;EMAIL:srowen@google.com;;"
PHOTOS = (
    RealPhoto("zxing-a1-qrcode-1.jpg", "zxing", _ZXING + "android-1/qrcode-1.jpg", "qr",
              "MECARD:N:Google 411,;TEL:18665881077;;"),
    RealPhoto("zxing-a1-qrcode-2.jpg", "zxing", _ZXING + "android-1/qrcode-2.jpg", "qr",
              "UI office hours signup\r\nhttp://www.corp.google.com/sparrow/ui_office_hours/ \r\n"),
    RealPhoto("zxing-a1-qrcode-3.jpg", "zxing", _ZXING + "android-1/qrcode-3.jpg", "qr", _OWEN),
    RealPhoto("zxing-a1-qrcode-4.jpg", "zxing", _ZXING + "android-1/qrcode-4.jpg", "qr", _OWEN),
    RealPhoto("zxing-a1-fail-4.jpg", "zxing", _ZXING + "android-1/fail-4.jpg", "qr", _OWEN),
    RealPhoto("zxing-a2-qrcode-1.png", "zxing", _ZXING + "android-2/qrcode-1.png", "qr", _OWEN),
    RealPhoto("zxing-a2-code128-1.png", "zxing", _ZXING + "android-2/code128-1.png", "code128",
              "Code 128"),
    RealPhoto("linphone-site-captured.jpg", "linphone",
              "linphone-5.1.65/tester/images/linphonesiteqr_captured.jpg", "qr",
              "https://www.linphone.org/"),
    RealPhoto("linphone-qrcodesite-captured.jpg", "linphone",
              "linphone-5.1.65/tester/images/qrcodesite_captured.jpg", "qr",
              "https://www.linphone.org/"),
)  # fmt: skip


def _download(tarball: Tarball, cache: Path) -> Path:
    target = cache / tarball.path.rsplit("/", 1)[1]
    if target.exists() and _sha256(target) == tarball.sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    url = f"{DEBIAN_POOL}/{tarball.path}"
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as reply:
        body = reply.read(DOWNLOAD_BYTES_MAX + 1)
    if len(body) > DOWNLOAD_BYTES_MAX:
        raise ValueError(f"{url}: larger than {DOWNLOAD_BYTES_MAX} bytes")
    if hashlib.sha256(body).hexdigest() != tarball.sha256:
        raise ValueError(f"{url}: SHA-256 differs from Debian's published sum")
    target.write_bytes(body)
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(out: Path) -> Path:
    """Download (once), verify and extract the photos into `out`; the manifest's path."""
    out.mkdir(parents=True, exist_ok=True)
    for name, tarball in TARBALLS.items():
        archive = _download(tarball, out / ".downloads")
        wanted = {p.member: p for p in PHOTOS if p.tarball == name}
        with tarfile.open(archive) as tar:
            for member in tar:
                photo = wanted.pop(member.name, None)
                if photo is None or not member.isfile():
                    continue
                source = tar.extractfile(member)
                assert source is not None
                (out / photo.file).write_bytes(source.read())
                if not wanted:
                    break
        if wanted:
            raise ValueError(f"{archive.name} lacks {sorted(wanted)}")
    manifest = out / "expected.tsv"
    rows = ["file\tsymbology\ttext\tkind"]
    rows += [f"{p.file}\t{p.symbology}\t{escaped(p.text)}\tother" for p in PHOTOS]
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest


def section(out: Path, names: list[str]) -> tuple[list[str], dict[str, object]]:
    """docs/scanner.md's lines and the JSON figures for the real photographs, every reader;
    a line saying why when they cannot be fetched (the rest of the benchmark still runs)."""
    heading = ["## Real photographs (bench/real_photos.py)", ""]
    try:
        manifest = fetch(out)
    except (OSError, ValueError, tarfile.TarError) as error:
        return [
            *heading,
            f"Not measured in this run: the photos could not be fetched ({error}).",
            "",
        ], {}
    tallies = evaluate(read_folder(manifest.parent), names)
    intro = [
        f"{len(PHOTOS)} phone and webcam pictures from the tests of Debian's `zxing` and",
        "`linphone` source packages (pinned by SHA-256; no payment codes, so the Scanner row",
        "is empty by design). A small, easy set: it shows the readers on real camera pictures",
        "and that none misreads them; it cannot show a read rate on hard photographs.",
        "",
    ]
    figures = {
        name: {
            "qr_read": t.read.get("other-qr", 0),
            "qr_shown": t.shown.get("other-qr", 0),
            "code128_read": t.read.get("code128", 0),
            "wrong_reads": len(t.wrong),
        }
        for name, t in tallies.items()
    }
    return [*heading, *intro, *table(tallies), ""], figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        manifest = fetch(args.out)
    except (OSError, ValueError, tarfile.TarError) as error:
        print(f"could not fetch the real photographs: {error}", file=sys.stderr)
        return 1
    print(f"written {manifest} ({len(PHOTOS)} photos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
