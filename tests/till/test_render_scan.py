"""Round trips through real encoders and real decoders: what the wallet draws, the POS reads.

Nothing is mocked: codes are rendered to PNG files, read back with cv2.imread and decoded by
each backend that loads here. zxing-cpp and OpenCV come as wheels and must always work;
pyzbar needs the system library libzbar0, so without it its tests skip locally and fail in
CI (CI=true), where the set-up is supposed to have installed it.
"""

from __future__ import annotations

import base64
import math
import os
import random
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import zxingcpp
from numpy.typing import NDArray
from PIL import Image

from paycode.appkit import decoding
from paycode.appkit.rendering import code128_image, group_digits, qr_image, save_png, terminal_qr
from paycode.merchant_pos import decoders as scanner
from paycode.merchant_pos.frames import to_gray
from paycode.shared.errors import ImageUnreadable

NUMERIC_CODE = "870123456789012345678906"
BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
TERMINAL_QUIET_MODULES = 2
HALF_BLOCKS = {" ": (False, False), "▀": (True, False), "▄": (False, True), "█": (True, True)}
WALLET_BACKENDS = ("zxing", "pyzbar")  # readers a numeric barcode must work with


def _symmetric_code(rng: random.Random) -> str:
    return "PC2" + "".join(rng.choice(BASE32_ALPHABET) for _ in range(40))


def _emv_code(rng: random.Random) -> str:
    """An EMV CPM-shaped payload: tag 85 'CPV01', a 160-byte template 61, base64 (228 chars)."""
    payload = b"\x85\x05CPV01\x61\x81\xa0" + bytes(rng.randrange(256) for _ in range(160))
    return base64.b64encode(payload).decode("ascii")


_RNG = random.Random(20240601)
CODES = {"numeric": NUMERIC_CODE, "symmetric": _symmetric_code(_RNG), "emv": _emv_code(_RNG)}


def _require_backend(name: str) -> None:
    """Skip pyzbar only outside CI; any other missing backend is a broken install."""
    try:
        scanner.make_backend(name)
    except RuntimeError as exc:
        ci = os.environ.get("CI", "").lower() == "true"
        if name == "pyzbar" and not ci:
            pytest.skip(f"{exc} (set CI=true to make this a failure)")
        pytest.fail(f"decoder backend {name!r} must load here: {exc}")


@pytest.fixture(params=scanner.BACKEND_NAMES)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    _require_backend(name)
    return name


@pytest.fixture(params=WALLET_BACKENDS)
def barcode_backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    _require_backend(name)
    return name


def _write(image: Image.Image, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    save_png(image, path)
    return path


def _assert_inside(decoded: decoding.Decoded, width: int, height: int) -> None:
    assert len(decoded.corners) == 4
    for x, y in decoded.corners:
        assert 0 <= x <= width and 0 <= y <= height, decoded.corners


def test_example_codes_have_the_shapes_the_protocol_uses() -> None:
    """Guards the inputs below: they must exercise every alphabet the formats use."""
    assert NUMERIC_CODE.isdigit() and len(NUMERIC_CODE) == 24
    assert len(CODES["symmetric"]) == 43 and set(CODES["symmetric"][3:]) <= set(BASE32_ALPHABET)
    emv = CODES["emv"]
    assert emv.startswith("hQVDUFYwM")
    assert 220 <= len(emv) <= 240
    assert {"+", "/", "="} <= set(emv) and emv != emv.lower() and emv != emv.upper()


def test_zxing_is_always_available_and_preferred() -> None:
    names = scanner.available_backends()
    assert names[0] == "zxing"
    assert names == [name for name in scanner.BACKEND_NAMES if name in names]
    assert "opencv" in names


@pytest.mark.parametrize("kind", sorted(CODES))
def test_qr_png_round_trip(kind: str, backend_name: str, tmp_path: Path) -> None:
    text = CODES[kind]
    image = qr_image(text)
    path = _write(image, tmp_path, f"{kind}.png")
    found = decoding.decode_image_file(path, backend=scanner.make_backend(backend_name))
    assert [(d.format, d.text, d.backend) for d in found] == [("qr", text, backend_name)]
    _assert_inside(found[0], *image.size)


def test_qr_image_is_black_on_white_with_exact_modules() -> None:
    text = CODES["symmetric"]
    bare = qr_image(text, box_px=1, border_modules=0)
    framed = qr_image(text, box_px=5, border_modules=4)
    modules = bare.size[0]
    assert (modules - 17) % 4 == 0  # 17 + 4 * version
    assert framed.size == ((modules + 8) * 5, (modules + 8) * 5)
    assert framed.mode in {"L", "1"}
    pixels = np.asarray(framed.convert("L"))
    assert set(np.unique(pixels).tolist()) == {0, 255}
    assert (pixels[:20, :] == 255).all()  # the quiet zone is white
    assert pixels[20, 20] == 0  # finder pattern's dark corner


def test_code128_png_round_trip(barcode_backend_name: str, tmp_path: Path) -> None:
    image = code128_image(NUMERIC_CODE)
    path = _write(image, tmp_path, "numeric-code128.png")
    found = decoding.decode_image_file(path, backend=scanner.make_backend(barcode_backend_name))
    assert [(d.format, d.text) for d in found] == [("code128", NUMERIC_CODE)]
    _assert_inside(found[0], *image.size)


def test_code128_uses_set_c_and_keeps_the_quiet_zone() -> None:
    """Set C packs two digits per symbol: start + 12 pairs + check = 14 x 11, stop = 13."""
    module_px, quiet, bars_px = 2, 12, 100
    image = code128_image(NUMERIC_CODE, module_px=module_px, height_px=bars_px, quiet_modules=quiet)
    symbol_modules = 11 * (2 + len(NUMERIC_CODE) // 2) + 13
    assert image.size[0] == (symbol_modules + 2 * quiet) * module_px
    pixels = np.asarray(image)
    assert (pixels[:bars_px, : quiet * module_px] == 255).all()
    assert (pixels[:bars_px, -quiet * module_px :] == 255).all()
    assert (pixels[:bars_px] == pixels[0]).all()  # bars run the full bar height


def test_code128_prints_the_digits_under_the_bars() -> None:
    image = code128_image(NUMERIC_CODE, height_px=80)
    caption = np.asarray(image)[80:]
    assert caption.shape[0] > 10
    assert (caption < 128).any()  # the digits are drawn
    assert group_digits(NUMERIC_CODE) == "8701 2345 6789 0123 4567 8906"


@pytest.mark.parametrize("bad", ["", "8701a345", "8701 2345", "\uff18\uff17\uff10\uff11", "12²4"])
def test_code128_rejects_non_digits(bad: str) -> None:
    with pytest.raises(ValueError, match="digits"):
        code128_image(bad)


def _modules_of(text: str) -> int:
    return qr_image(text, box_px=1, border_modules=0).size[0]


def _terminal_to_image(drawing: str, *, invert: bool, scale: int) -> NDArray[np.uint8]:
    """Map half blocks back to modules (inked = light unless inverted) and scale up."""
    grid: list[list[bool]] = []
    for line in drawing.split("\n"):
        grid.append([HALF_BLOCKS[ch][0] for ch in line])
        grid.append([HALF_BLOCKS[ch][1] for ch in line])
    inked = np.array(grid, dtype=np.bool_)
    dark = inked if invert else ~inked
    gray = np.where(dark, 0, 255).astype(np.uint8)
    return np.kron(gray, np.ones((scale, scale), dtype=np.uint8))


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("kind", sorted(CODES))
def test_terminal_qr_shape(kind: str, invert: bool) -> None:
    text = CODES[kind]
    lines = terminal_qr(text, invert=invert).split("\n")
    width = _modules_of(text) + 2 * TERMINAL_QUIET_MODULES
    assert len(lines) == math.ceil(width / 2)
    assert {len(line) for line in lines} == {width}
    assert set("".join(lines)) <= set(HALF_BLOCKS)


def test_terminal_qr_default_suits_dark_terminals() -> None:
    """On a light-on-dark terminal the quiet zone must be inked (light); invert flips it."""
    text = CODES["symmetric"]
    assert set(terminal_qr(text).split("\n")[0]) == {"█"}
    assert set(terminal_qr(text, invert=True).split("\n")[0]) == {" "}


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("kind", sorted(CODES))
def test_terminal_qr_is_a_real_qr(kind: str, invert: bool) -> None:
    text = CODES[kind]
    picture = _terminal_to_image(terminal_qr(text, invert=invert), invert=invert, scale=6)
    found = scanner.make_backend("zxing").decode(picture)
    assert [(d.format, d.text) for d in found] == [("qr", text)]


def test_noise_frame_decodes_to_nothing(backend_name: str) -> None:
    noise = np.random.default_rng(7).integers(0, 256, size=(480, 640), dtype=np.uint8)
    assert scanner.make_backend(backend_name).decode(noise) == []


def test_blank_frame_decodes_to_nothing(backend_name: str) -> None:
    blank = np.full((240, 320), 255, dtype=np.uint8)
    assert scanner.make_backend(backend_name).decode(blank) == []


def _ean13_frame() -> NDArray[np.uint8]:
    barcode = zxingcpp.create_barcode("4006381333931", zxingcpp.BarcodeFormat.EAN13)
    bitmap = np.asarray(zxingcpp.write_barcode_to_image(barcode, scale=3), dtype=np.uint8)
    return np.pad(bitmap, 60, constant_values=255)


def test_product_barcode_is_readable_but_not_returned(backend_name: str) -> None:
    frame = _ean13_frame()
    unrestricted = zxingcpp.read_barcodes(frame)
    assert [b.text for b in unrestricted] == ["4006381333931"]  # a real, readable EAN-13
    assert scanner.make_backend(backend_name).decode(frame) == []


def test_transparent_background_reads_as_paper(tmp_path: Path) -> None:
    """Black modules on a transparent background (RGBA 0,0,0,0) decode like black-on-white."""
    text = CODES["symmetric"]
    dark = np.asarray(qr_image(text)) == 0
    rgba = np.zeros((*dark.shape, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(dark, 255, 0)
    path = tmp_path / "transparent.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    found = decoding.decode_image_file(path)
    assert [d.text for d in found] == [text]


def test_to_gray_accepts_opencv_layouts() -> None:
    bgr = np.zeros((4, 5, 3), dtype=np.uint8)
    bgr[..., 2] = 255  # pure red
    red = to_gray(bgr)
    assert red.shape == (4, 5) and red.dtype == np.uint8
    assert int(red[0, 0]) == int(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[0, 0])
    deep = np.full((3, 3), 65535, dtype=np.uint16)
    assert (to_gray(deep) == 255).all()
    with pytest.raises(ValueError, match="shape"):
        to_gray(np.zeros((3, 3, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        to_gray(np.zeros((3, 3), dtype=np.float32))


def test_backend_rejects_a_frame_that_is_not_gray() -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        scanner.make_backend("zxing").decode(np.zeros((4, 4, 3), dtype=np.uint8))


def test_decode_image_file_names_a_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageUnreadable, match=re.escape(str(missing))):
        decoding.decode_image_file(missing)


def test_decode_image_file_names_a_file_that_is_not_an_image(tmp_path: Path) -> None:
    text_file = tmp_path / "code.png"
    text_file.write_text("PC2 not really a picture\n")
    with pytest.raises(ImageUnreadable, match=re.escape(str(text_file))):
        decoding.decode_image_file(text_file)


def test_make_backend_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="quagga"):
        scanner.make_backend("quagga")


def test_save_png_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "code.png"
    save_png(qr_image("first"), path)
    second = qr_image(CODES["emv"], box_px=2)
    save_png(second, path)
    with Image.open(path) as reread:
        assert reread.format == "PNG"
        assert np.array_equal(np.asarray(reread.convert("L")), np.asarray(second))
    assert [p.name for p in tmp_path.iterdir()] == ["code.png"]


def test_save_png_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "code.png"
    save_png(qr_image("first"), path)
    before = path.read_bytes()
    with pytest.raises(OSError, match="CMYK"):
        save_png(Image.new("CMYK", (4, 4)), path)  # PNG cannot hold CMYK
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["code.png"]
