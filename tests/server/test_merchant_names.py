"""Merchants named in their own script (`paycode-server merchants create`, on SQLite and on
PostgreSQL): the name and city as given, the ASCII that EMV tags 59 and 60 need beside them
(the operator's or transliterated), the language of tag 64, and the limits of each."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from paycode.appkit.decoding import decode_image_file
from paycode.merchant_pos import poster
from paycode.server.charge.merchant_qr import collection_code_for
from paycode.server.database import migrate
from paycode.server.database.engine import make_engine
from paycode.server.database.models import Merchant
from paycode.server.operations import admin
from paycode.server.operations.merchant_names import infer_language, transliterate
from paycode.shared.emv.collection import build_collection_payload, read_collection
from paycode.shared.errors import ApiError
from tests.server.test_admin import assert_error, ok_json
from tests.support.servers import Server
from tests.support.shop import Shop


def _hex() -> str:
    """A fresh suffix: tests share one database per backend and module."""
    return secrets.token_hex(3)


def _create(server: Server, *args: str) -> dict[str, Any]:
    merchant: dict[str, Any] = ok_json(
        server.cli_in_process("--json", "merchants", "create", *args)
    )["merchant"]
    return merchant


def _row(server: Server, merchant_id: str) -> Merchant:
    with server.session() as session:
        row = session.get(Merchant, merchant_id)
        assert row is not None
        return row


def test_a_chinese_merchant_is_transliterated_for_emv(server: Server) -> None:
    name = f"北京烤鸭店 {_hex()}"
    made = server.cli_in_process("merchants", "create", name, "--city", "北京")
    assert made.returncode == 0, made.stderr
    assert "EMV name: Beijing Kaoya Dian" in made.stdout
    assert "(transliterated)" in made.stdout.split("EMV name:")[1].splitlines()[0]
    assert "EMV city: Beijing (transliterated)" in made.stdout
    assert f"EMV tag 64 (ZH): {name}, 北京" in made.stdout
    merchant_id = made.stdout.split("(", 1)[1].split(")", 1)[0]
    row = _row(server, merchant_id)
    assert (row.name, row.city, row.language) == (name, "北京", "ZH")
    assert row.ascii_name == f"Beijing Kaoya Dian {name[-6:]}"
    assert row.ascii_city == "Beijing"


def test_regression_non_ascii_merchant_cannot_print_a_poster(
    server: Server, tmp_path: Path
) -> None:
    """Found against main: `merchants create 北京烤鸭店 --city 北京` succeeded, then the poster
    failed with "merchant name must be printable ASCII". Now the row carries the ASCII of tags
    59/60 beside the name, and the poster prints the QR with the name in tag 64."""
    name = f"北京烤鸭店 {_hex()}"
    row = _row(server, _create(server, name, "--city", "北京")["id"])
    code = collection_code_for(row, amount="88.00", reference="order-1")
    payload = build_collection_payload(code)
    png = poster.save_poster(poster.render_poster(code, payload), tmp_path / "duck.png")
    read = read_collection(decode_image_file(png)[0].text)
    assert (read.language, read.local_name, read.local_city) == ("ZH", name, "北京")
    assert (read.merchant_name, read.merchant_city) == (row.ascii_name, "Beijing")
    assert (read.merchant_id, read.amount) == (row.id, "88.00")


def test_the_till_prints_the_poster_of_a_merchant_in_its_own_script(
    server: Server, tmp_path: Path
) -> None:
    name = f"北京烤鸭店 {_hex()}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PAYCODE_")}
    shop = Shop(server, tmp_path, env)
    shop.add_till(name)
    png = tmp_path / "duck.png"
    made = shop.pos("poster", "--out", str(png), "--amount", "88", merchant=name)
    assert made.returncode == 0, made.stdout + made.stderr
    read = read_collection(decode_image_file(png)[0].text)
    assert (read.local_name, read.merchant_name) == (name, f"Beijing Kaoya Dian {name[-6:]}")
    assert read.signature is not None  # the server's poster, signed


def test_json_says_what_emv_carries_and_what_was_transliterated(server: Server) -> None:
    name = f"重庆火锅 {_hex()}"
    merchant = _create(server, name, "--city", "重庆", "--ascii-city", "Chongqing City")
    assert merchant["ascii_name"] == f"Chongqing Huoguo {name[-6:]}"
    assert (merchant["ascii_city"], merchant["language"]) == ("Chongqing City", "ZH")
    assert merchant["emv"] == {
        "name": merchant["ascii_name"],
        "city": "Chongqing City",
        "language": "ZH",
        "local_name": name,
        "local_city": "重庆",
        "transliterated": ["name"],
    }


def test_operator_given_ascii_and_language_are_kept(server: Server) -> None:
    name = f"東京ラーメン {_hex()}"
    merchant = _create(
        server, name, "--city", "東京", "--ascii-name", f"Tokyo Ramen {name[-6:]}",
        "--ascii-city", "Tokyo", "--currency", "JPY", "--country", "JP",
    )  # fmt: skip
    row = _row(server, merchant["id"])
    assert (row.ascii_name, row.ascii_city, row.language) == (
        f"Tokyo Ramen {name[-6:]}",
        "Tokyo",
        "JA",  # kana: Japanese, though 東京 alone is Han
    )
    assert merchant["emv"]["transliterated"] == []
    korean = _create(server, f"김밥천국 {_hex()}", "--language", "ko")
    assert korean["language"] == "KO" and korean["ascii_city"] is None  # city: ASCII Beijing


def test_ascii_merchants_store_nothing_extra(server: Server) -> None:
    name = f"Corner Cafe {_hex()}"
    made = server.cli_in_process("merchants", "create", name)
    assert made.returncode == 0 and "EMV name" not in made.stdout
    long_name = f"The Very Long Name Of A Noodle House {_hex()}"  # > 25: 59 is cut, as before
    merchant = _create(server, long_name)
    row = _row(server, merchant["id"])
    assert (row.ascii_name, row.ascii_city, row.language) == (None, None, None)
    assert merchant["emv"]["name"] == long_name[:25]
    assert merchant["emv"]["local_name"] is None and merchant["emv"]["transliterated"] == []


def test_an_ascii_name_in_a_city_of_another_script(server: Server) -> None:
    name = f"Corner Cafe {_hex()}"
    merchant = _create(server, name, "--city", "上海")
    assert (merchant["ascii_name"], merchant["ascii_city"], merchant["language"]) == (
        None,
        "Shanghai",
        "ZH",
    )
    assert merchant["emv"]["local_name"] == name and merchant["emv"]["local_city"] == "上海"


def test_limits_and_bad_options_are_refused_with_their_reason(server: Server) -> None:
    cases = [
        (["北京烤鸭店" * 5 + "一"], "name_invalid", "at most 25 characters"),
        ([f"北京 {_hex()}", "--city", "北京" * 8], "invalid_argument", "1-15"),
        ([f"北京 {_hex()}", "--ascii-name", "x" * 26], "name_invalid", "1-25 printable ASCII"),
        ([f"北京 {_hex()}", "--ascii-name", "北京"], "name_invalid", "printable ASCII"),
        ([f"北京 {_hex()}", "--city", "北京", "--ascii-city", "B" * 16], "invalid_argument", "15"),
        ([f"Cafe {_hex()}", "--ascii-name", "Cafe"], "invalid_argument", "not ASCII"),
        ([f"Cafe {_hex()}", "--ascii-city", "Beijing"], "invalid_argument", "not ASCII"),
        ([f"Cafe {_hex()}", "--language", "EN"], "invalid_argument", "not ASCII"),
        ([f"Café Müller {_hex()}"], "invalid_argument", "--language"),
        ([f"北京 {_hex()}", "--language", "zho"], "invalid_argument", "ISO 639-1"),
        ([f"北京 {_hex()}", "--city", "\u0301"], "invalid_argument", "give --ascii-city"),
    ]
    for args, code, reason in cases:
        refused = server.cli_in_process("merchants", "create", *args)
        assert_error(refused, code)
        assert reason in refused.stderr, (args, refused.stderr)
    european = _create(server, f"Café Müller {_hex()}", "--language", "de", "--city", "Zürich")
    assert european["ascii_name"].startswith("Cafe Muller ")
    assert (european["ascii_city"], european["language"]) == ("Zurich", "DE")


def test_admin_service_refuses_before_writing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'unit.db'}"
    migrate.upgrade(url)
    with Session(make_engine(url)) as session:
        with pytest.raises(ApiError) as raised:
            admin.create_merchant(session, "北京烤鸭店" * 6, "CNY")
        assert raised.value.code == "name_invalid" and "25" in raised.value.message
        assert session.query(Merchant).count() == 0
        made = admin.create_merchant(session, "西安肉夹馍", "CNY", city="西安")
        assert (made.ascii_name, made.ascii_city) == ("Xi'an Roujia Mo", "Xi'an")


@pytest.mark.parametrize(
    ("text", "language", "chars_max", "city", "expected"),
    [
        ("北京烤鸭店", "ZH", 25, False, "Beijing Kaoya Dian"),
        ("北京", "ZH", 15, True, "Beijing"),
        ("石家庄", "ZH", 15, True, "Shijiazhuang"),
        ("重庆火锅", "ZH", 25, False, "Chongqing Huoguo"),  # 重 read chong, not zhong
        ("绿茶餐厅", "ZH", 25, False, "Lucha Canting"),  # ü written u
        ("北京烤鸭店\uff08王府井\uff09", "ZH", 25, False, "Beijing Kaoya Dian"),  # cut at a word
        ("北京Cafe 1号", "ZH", 25, False, "Beijing Cafe 1 Hao"),
        ("Café Müller", "DE", 25, False, "Cafe Muller"),
        ("Москва", "RU", 15, True, "Moskva"),
        ("ラーメン", "JA", 25, False, "ramen"),
        ("🍜", "ZH", 15, True, ":ramen:"),
        ("\u0301", "FR", 15, True, ""),  # a lone combining accent: nothing to write
    ],
)
def test_transliteration(
    text: str, language: str, chars_max: int, city: bool, expected: str
) -> None:
    written = transliterate(text, language, chars_max, city=city)
    assert written == expected
    assert written.isascii() and written.isprintable() and len(written) <= chars_max


def test_language_is_inferred_only_where_the_script_says_it() -> None:
    assert infer_language("北京烤鸭店") == "ZH"
    assert infer_language("東京ラーメン") == "JA"
    assert infer_language("김밥천국") == "KO"
    assert infer_language("Corner Cafe", "上海") == "ZH"
    assert infer_language("Café Müller") is None
    assert infer_language("Москва") is None
