"""paycode.server.charge.merchant_qr: a merchant row to its collection code, and that code
written and read back exactly (tags 59/60 in ASCII, 64 in the merchant's own script)."""

from __future__ import annotations

import pytest

from paycode.server.charge.merchant_qr import collection_code_for
from paycode.server.database.models import Merchant
from paycode.shared.emv.collection import build_collection_payload, read_collection
from paycode.shared.emv.mpm import decode_mpm
from paycode.shared.errors import AmountInvalid

TOKEN = "A" * 24


def _merchant(**fields: object) -> Merchant:
    row: dict[str, object] = {
        "id": "mch_0123456789abcdef",
        "name": "Corner Cafe",
        "currency": "CNY",
        "city": "Beijing",
        "country": "CN",
        "ascii_name": None,
        "ascii_city": None,
        "language": None,
    }
    return Merchant(**(row | fields))


def test_an_ascii_merchant_has_no_language_template() -> None:
    code = collection_code_for(_merchant())
    assert (code.merchant_name, code.merchant_city, code.currency, code.country_code) == (
        "Corner Cafe",
        "Beijing",
        "CNY",
        "CN",
    )
    assert (code.language, code.local_name, code.local_city) == (None, None, None)
    assert code.amount is None and code.order_token is None and code.terminal_id is None
    payload = build_collection_payload(code)
    assert decode_mpm(payload).find("64") is None
    assert read_collection(payload) == code


def test_a_long_ascii_name_is_cut_to_emv_25_characters() -> None:
    name = "The Very Long Name Of A Noodle House"
    code = collection_code_for(_merchant(name=name))
    assert code.merchant_name == name[:25] and code.local_name is None


def test_a_chinese_merchant_carries_its_name_in_tag_64() -> None:
    merchant = _merchant(
        name="北京烤鸭店",
        city="北京",
        ascii_name="Beijing Kaoya Dian",
        ascii_city="Beijing",
        language="ZH",
    )
    code = collection_code_for(
        merchant, amount="88", order_token=TOKEN, reference="order-1", terminal_id="term_1"
    )
    assert (code.merchant_name, code.merchant_city) == ("Beijing Kaoya Dian", "Beijing")
    assert (code.language, code.local_name, code.local_city) == ("ZH", "北京烤鸭店", "北京")
    assert (code.display_name, code.display_city) == ("北京烤鸭店", "北京")
    assert (code.amount, code.order_token, code.reference, code.terminal_id) == (
        "88.00",
        TOKEN,
        "order-1",
        "term_1",
    )
    payload = build_collection_payload(code)
    template = decode_mpm(payload).find("64")
    assert template is not None
    assert [(child.tag, child.value) for child in template.children or ()] == [
        ("00", "ZH"),
        ("01", "北京烤鸭店"),
        ("02", "北京"),
    ]
    assert read_collection(payload) == code


def test_an_ascii_city_stays_out_of_tag_64() -> None:
    code = collection_code_for(
        _merchant(name="北京烤鸭店", ascii_name="Beijing Kaoya Dian", language="ZH")
    )
    assert (code.local_name, code.local_city, code.display_city) == ("北京烤鸭店", None, "Beijing")
    assert read_collection(build_collection_payload(code)) == code


def test_an_ascii_name_in_a_city_of_another_script() -> None:
    code = collection_code_for(
        _merchant(name="Corner Cafe", city="上海", ascii_city="Shanghai", language="ZH")
    )
    assert (code.merchant_name, code.merchant_city) == ("Corner Cafe", "Shanghai")
    assert (code.local_name, code.local_city) == ("Corner Cafe", "上海")
    assert read_collection(build_collection_payload(code)) == code


def test_amounts_are_canonical_in_the_merchants_currency() -> None:
    assert collection_code_for(_merchant(currency="JPY"), amount="500").amount == "500"
    with pytest.raises(AmountInvalid):
        collection_code_for(_merchant(currency="JPY"), amount="5.5")
