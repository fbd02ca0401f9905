"""`python -m bench.scanner_eval FOLDER`: the command that measures the till's readers on a
folder of real photographs reads the same layout bench.scanner_set writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import real_photos, scanner_eval
from bench.scanner_set import Payload, Shown, generate, payloads, sample, twin, write_set


def test_a_folder_of_labelled_photos_is_measured_per_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = generate("holdout", every=13)[:4]  # 13 is prime to 12: four different kinds
    write_set(tmp_path, photos)
    assert scanner_eval.main([str(tmp_path), "--readers", "reader,zxing"]) == 0
    table = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    assert set(rows) >= {"reader", "zxing"}
    header = table.splitlines()[0]
    assert "QR payment code read" in header and "Code 128 read" in header
    read = scanner_eval.read_folder(tmp_path)
    assert [(p.name, p.text) for p in read] == [(f"{s.name}.jpg", s.payload.text) for s in photos]


def test_a_manifest_without_a_symbology_column_is_a_clear_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "expected.tsv").write_text("file\ttext\nphoto.jpg\t123\n", encoding="utf-8")
    assert scanner_eval.main([str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_text_with_line_breaks_survives_the_manifest(tmp_path: Path) -> None:
    """Real photographs hold codes with CR, LF and tabs (e.g. zxing's android-1/qrcode-2):
    the manifest escapes them, so one line stays one photo and the text compares exactly."""
    text = "UI office hours\r\nhttp://example.org/a\\b\tc \r\n"
    row = f"photo.jpg\tqr\t{scanner_eval.escaped(text)}\tother"
    (tmp_path / "expected.tsv").write_text(f"file\tsymbology\ttext\tkind\n{row}\n", "utf-8")
    assert [p.text for p in scanner_eval.read_folder(tmp_path)] == [text]


def test_an_unknown_escape_in_a_manifest_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown escape \\x"):
        scanner_eval.unescaped("a\\x41")


def test_the_real_photographs_are_pinned_and_their_texts_escape_cleanly() -> None:
    assert {p.tarball for p in real_photos.PHOTOS} == set(real_photos.TARBALLS)
    assert all(len(t.sha256) == 64 for t in real_photos.TARBALLS.values())
    assert len({p.file for p in real_photos.PHOTOS}) == len(real_photos.PHOTOS)
    for photo in real_photos.PHOTOS:
        assert scanner_eval.unescaped(scanner_eval.escaped(photo.text)) == photo.text


def test_a_twin_is_the_same_scene_with_another_code() -> None:
    """bench.scanner_v4 compares v4 with v3 on twins: with its own code at its own size a twin
    is the original frame byte for byte, so only the code differs between a v3 frame and its
    v4 twin (both media: the print sheet's grain is drawn per pixel)."""
    v3 = next(p for p in payloads() if p.kind == "v3")
    v3_indices = [i for i, p in enumerate(payloads()) if p == v3]
    screen, printed = v3_indices[0], v3_indices[0] + len(payloads())
    for index in (screen, printed):
        original = sample("holdout", index)
        assert twin("holdout", index, Shown(v3, "module")).jpeg == original.jpeg
        v4 = Payload("v4", "qr", "hQVDUFYwMWGB608J8FBBWUNPREUE" + "A" * 300)
        other = twin("holdout", index, Shown(v4, "width"))
        assert (other.medium, other.condition) == (original.medium, original.condition)
        assert other.payload == v4 and other.jpeg != original.jpeg
    assert {sample("holdout", i).medium for i in (screen, printed)} == {"screen", "print"}
