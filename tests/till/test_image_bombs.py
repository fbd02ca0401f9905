"""Decoder memory (issue 19, item 8): a small, highly compressible image (a PNG bomb: 144 MP
of white in well under a megabyte) is refused from its header with `image_too_large`, quickly
and without decoding it, by every command that reads an image file: `paycode-pos inspect
--image` and `charge --source image:`, `paycode-wallet pay --qr-image` and `code --bind-qr`.
Each runs as a process of its own, whose peak memory is the point."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from paycode.appkit import decoding
from paycode.appkit.decoding import open_image_file
from paycode.client.wallet import Wallet
from paycode.merchant_pos import settings
from paycode.merchant_pos.frames import open_source
from paycode.merchant_pos.synthetic_frames import write_video
from paycode.shared.errors import ImageTooLarge
from tests.support.shop import use_fast_keystore, wallet_env

BOMB_SIDE_PX = 12_000
"""144 MP: under Pillow's own refusal (179 MP), so only our bound stands in the way."""
BOMB_FILE_BYTES_MAX = 1 << 20
PEAK_RSS_MB_MAX = 400
"""The commands' interpreter, OpenCV and zxing take ~150 MB; decoding the bomb took ~0.9 GB."""
REFUSED_IN_S = 10.0

# VmHWM, not getrusage's ru_maxrss: Linux carries the maxrss of the process that forked into
# the exec'd child, so a late pytest process (~470 MB) showed up as the command's own peak.
MEASURED = """
import sys
from importlib import import_module
code = import_module(sys.argv[1]).main(sys.argv[2:])
status = open("/proc/self/status").read()
peak_mb = int(status.split("VmHWM:", 1)[1].split()[0]) / 1024
print(f"peak_rss_mb={peak_mb:.0f}", file=sys.stderr)
sys.exit(code)
"""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_bomb(path: Path, side_px: int = BOMB_SIDE_PX) -> Path:
    """A valid RGB PNG of `side_px` squared white pixels, compressed row by row."""
    row = b"\x00" + b"\xff" * (3 * side_px)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side_px)) + packer.flush()
    header = struct.pack(">IIBBBBB", side_px, side_px, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_png_bomb(tmp_path_factory.mktemp("bomb") / "white.png")
    assert path.stat().st_size < BOMB_FILE_BYTES_MAX
    return path


def _measured(module: str, env: dict[str, str], *args: str) -> tuple[dict[str, object], float]:
    """Run `module`'s main(ARGS) in a process of its own: its JSON answer and peak RSS (MB)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, module, "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    before_peak, peak_text = done.stderr.rsplit("peak_rss_mb=", 1)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Warning" not in before_peak, before_peak  # Pillow's DecompressionBombWarning leaked
    peak = float(peak_text)
    answer: dict[str, object] = json.loads(done.stdout)
    return answer, peak


def test_a_png_bomb_is_refused_from_its_header_by_every_command(
    bomb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_keystore(monkeypatch)
    Wallet.open_or_create(tmp_path / "wallet").set_server("http://127.0.0.1:9", "carol")
    env = wallet_env()
    pos_env = env | {"PAYCODE_POS_HOME": str(tmp_path / "pos")}
    configured = settings.validated("http://127.0.0.1:9", "term_x", b"k" * 32, "CNY")
    settings.save(tmp_path / "pos", configured)
    wallet = ["--home", str(tmp_path / "wallet")]
    commands = [
        ("paycode.merchant_pos.cli", pos_env, ["inspect", "--image", str(bomb)]),
        (
            "paycode.merchant_pos.cli",
            pos_env,
            ["charge", "--amount", "1.00", "--source", f"image:{bomb}", "--headless"],
        ),
        ("paycode.client.cli", env, [*wallet, "pay", "--qr-image", str(bomb), "--yes"]),
        ("paycode.client.cli", env, [*wallet, "code", "--version", "v2", "--bind-qr", str(bomb)]),
    ]
    for module, command_env, args in commands:
        started = time.monotonic()
        answer, peak_mb = _measured(module, command_env, *args)
        error = answer["error"]
        assert isinstance(error, dict) and error["code"] == "image_too_large", (args, answer)
        assert "12000 x 12000" in error["message"] and "50 MP" in error["message"]
        assert peak_mb < PEAK_RSS_MB_MAX, (args, peak_mb)
        assert time.monotonic() - started < REFUSED_IN_S, args


def test_a_video_whose_frames_are_too_large_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A video's frame size is read from its container before a frame is decoded (the bound
    is lowered here, so the video can stay small)."""
    video = write_video([np.full((64, 64, 3), 255, np.uint8)] * 3, tmp_path / "wide.avi")
    monkeypatch.setattr(decoding, "IMAGE_PIXELS_MAX", 64 * 64 - 1)
    with pytest.raises(ImageTooLarge, match="64 x 64"):
        open_source(f"video:{video}")


def test_a_picture_at_the_bound_still_decodes(tmp_path: Path) -> None:
    """40 MP photos worked before and still do; the bound refuses only what is above it."""
    path = tmp_path / "forty.png"
    Image.new("L", (8000, 5000), 255).save(path)
    assert decoding.decode_image_file(path) == []


def test_a_png_past_pillows_own_limit_is_too_large_not_unreadable(tmp_path: Path) -> None:
    """Over ~179 MP Pillow refuses to open at all: that too is image_too_large, in our words."""
    huge = write_png_bomb(tmp_path / "huge.png", side_px=14_000)
    with pytest.raises(ImageTooLarge, match="at most 50 MP"):
        open_image_file(huge)
