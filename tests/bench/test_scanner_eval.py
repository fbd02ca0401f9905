"""`python -m bench.scanner_eval FOLDER`: the command that measures the till's readers on a
folder of real photographs reads the same layout bench.scanner_set writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import real_photos, scanner_eval
from bench.scanner_set import generate, write_set


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
