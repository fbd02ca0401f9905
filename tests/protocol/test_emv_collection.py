"""Paycode collection QR codes: what the poster prints is what the wallet and server read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycode.merchant_pos.identify import describe
from paycode.shared.emv.collection import (
    GUID,
    CollectionCode,
    build_collection_payload,
    read_collection,
)
from paycode.shared.emv.mpm import crc16_ccitt_false, decode_mpm
from paycode.shared.errors import (
    AmountInvalid,
    CodeMalformed,
    CollectionInvalid,
    CurrencyUnknown,
    EmvCrcError,
    EmvFormatError,
    NotPaycodeCollection,
)
from paycode.shared.money import SUPPORTED_CURRENCIES

STATIC = CollectionCode(
    merchant_id="mer_0123456789abcdef",
    merchant_name="Corner Cafe",
    merchant_city="Shanghai",
    currency="CNY",
)
DYNAMIC = dataclasses.replace(STATIC, terminal_id="ter_42", amount="12.50", reference="ord_7f3a")
OTHER_SCHEMES = [
    v["payload"]
    for v in json.loads(
        (Path(__file__).resolve().parents[1] / "vectors" / "mpm_payloads.json").read_text(
            encoding="utf-8"
        )
    )["valid"]
]


def resigned(payload: str) -> str:
    """`payload` with its CRC recomputed after an edit (the CRC detects damage, not forgery)."""
    unsigned = payload[:-4]
    return unsigned + f"{crc16_ccitt_false(unsigned.encode('utf-8')):04X}"


def test_static_code_round_trips_and_says_static() -> None:
    payload = build_collection_payload(STATIC)
    assert payload.startswith("000201010211")
    assert f"0011{GUID}0120{STATIC.merchant_id}" in payload
    assert "54" not in [o.tag for o in decode_mpm(payload).objects]
    assert read_collection(payload) == STATIC


def test_dynamic_code_carries_amount_terminal_and_reference() -> None:
    payload = build_collection_payload(DYNAMIC)
    decoded = decode_mpm(payload)
    assert decoded.point_of_initiation == "dynamic" and decoded.scheme == "paycode"
    assert (decoded.value("53"), decoded.value("54")) == ("156", "12.50")
    additional = decoded.find("62")
    assert additional is not None and additional.child("05") is not None
    assert read_collection(payload) == DYNAMIC


@pytest.mark.parametrize(
    ("currency", "country", "amount", "written"),
    [
        ("CNY", "CN", "12.5", "12.50"),
        ("CNY", "CN", "0.01", "0.01"),
        ("JPY", "JP", "500", "500"),
        ("KWD", "KW", "1.234", "1.234"),
        ("VND", "VN", "120000", "120000"),
    ],
)
def test_amount_is_written_with_the_currencys_minor_digits(
    currency: str, country: str, amount: str, written: str
) -> None:
    code = dataclasses.replace(STATIC, currency=currency, country_code=country, amount=amount)
    read = read_collection(build_collection_payload(code))
    assert (read.amount, read.currency, read.country_code) == (written, currency, country)


@pytest.mark.parametrize(
    ("currency", "amount"),
    [("JPY", "500.5"), ("CNY", "1.234"), ("CNY", "0"), ("CNY", "-1"), ("CNY", "1e3"),
     ("CNY", "12345678901.00")],
)  # fmt: skip
def test_bad_amounts_are_amount_invalid(currency: str, amount: str) -> None:
    with pytest.raises(AmountInvalid):
        build_collection_payload(dataclasses.replace(STATIC, currency=currency, amount=amount))


@pytest.mark.parametrize("currency", ["156", "XXX", "cny"])
def test_currency_must_be_a_supported_alpha_code(currency: str) -> None:
    with pytest.raises(CurrencyUnknown):
        build_collection_payload(dataclasses.replace(STATIC, currency=currency))


def test_name_and_city_limits_are_the_specs() -> None:
    longest = dataclasses.replace(STATIC, merchant_name="N" * 25, merchant_city="C" * 15)
    assert read_collection(build_collection_payload(longest)) == longest
    for change in ({"merchant_name": "N" * 26}, {"merchant_city": "C" * 16}):
        with pytest.raises(CollectionInvalid) as caught:
            build_collection_payload(dataclasses.replace(STATIC, **change))
        assert isinstance(caught.value, ValueError) and caught.value.code == "invalid_argument"


@pytest.mark.parametrize(
    "change",
    [
        {"merchant_name": ""},
        {"merchant_name": "北京咖啡"},
        {"merchant_city": "Zürich"},
        {"merchant_id": ""},
        {"merchant_id": "m" * 80, "terminal_id": "t" * 10},
        {"reference": "ord_1"},  # a static code has no order to refer to
        {"amount": "1.00", "reference": "R" * 26},
        {"mcc": "12a4"},
        {"country_code": "cn"},
    ],
)
def test_what_cannot_be_written_is_refused(change: dict[str, str]) -> None:
    with pytest.raises(CollectionInvalid):
        build_collection_payload(dataclasses.replace(STATIC, **change))


@pytest.mark.parametrize("payload", OTHER_SCHEMES)
def test_another_schemes_qr_is_not_a_paycode_collection(payload: str) -> None:
    with pytest.raises(NotPaycodeCollection) as caught:
        read_collection(payload)
    assert isinstance(caught.value, CodeMalformed)
    assert caught.value.code == "not_paycode_collection"


def test_tampered_crc_is_a_crc_error() -> None:
    payload = build_collection_payload(DYNAMIC)
    tampered = payload[:-1] + ("0" if payload[-1] != "0" else "1")
    with pytest.raises(EmvCrcError) as caught:
        read_collection(tampered)
    assert caught.value.offset == len(payload) - 4


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("010212", "010211"),  # static, yet an amount
        ("5802CN", "5803CHN"),  # a spec deviation
        ("5303156", "5303999"),  # a currency we do not hold
        ("0120mer_0123456789abcdef", "0320mer_0123456789abcdef"),  # no merchant id
    ],
)
def test_our_template_breaking_our_rules_is_a_format_error(old: str, new: str) -> None:
    payload = build_collection_payload(DYNAMIC)
    assert old in payload
    with pytest.raises(EmvFormatError) as caught:
        read_collection(resigned(payload.replace(old, new)))
    assert not isinstance(caught.value, NotPaycodeCollection | EmvCrcError)
    assert 0 <= caught.value.offset < len(payload) + 2


def test_our_template_may_sit_beside_another_scheme() -> None:
    pix = "26580014br.gov.bcb.pix013671d6c6e1-64ea-4a11-9560-a10870c40ca2"
    payload = build_collection_payload(STATIC)
    assert "26390011dev.paycode" in payload
    mixed = resigned(payload.replace("26390011", pix + "27390011", 1))
    assert decode_mpm(mixed).scheme == "paycode"
    assert read_collection(mixed) == STATIC


@st.composite
def codes(draw: st.DrawFn) -> CollectionCode:
    ident = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=30)
    text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=25)
    money = draw(st.sampled_from(SUPPORTED_CURRENCIES))
    amount = None
    if draw(st.booleans()):
        minor = draw(st.integers(1, 10**10 - 1))
        whole, fraction = divmod(minor, 10**money.minor_digits)
        amount = f"{whole}.{fraction:0{money.minor_digits}d}" if money.minor_digits else str(whole)
    return CollectionCode(
        merchant_id=draw(ident),
        merchant_name=draw(text),
        merchant_city=draw(text.map(lambda city: city[:15])),
        currency=money.alpha,
        country_code=draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)),
        terminal_id=draw(st.none() | ident),
        amount=amount,
        reference=draw(st.none() | text) if amount is not None else None,
        mcc=draw(st.text("0123456789", min_size=4, max_size=4)),
    )


@settings(max_examples=300, deadline=None)
@given(codes())
def test_every_writable_code_reads_back_the_same(code: CollectionCode) -> None:
    payload = build_collection_payload(code)
    assert decode_mpm(payload).deviations == ()
    assert read_collection(payload) == code


def test_inspect_shows_paycode_fields() -> None:
    info = describe(build_collection_payload(DYNAMIC))
    assert info["kind"] == "emv_mpm" and info["well_formed"] is True
    assert info["scheme"] == "paycode" and info["amount"] == "12.50"
    assert info["paycode_collection"] == {
        "merchant_id": DYNAMIC.merchant_id,
        "terminal_id": "ter_42",
        "reference": "ord_7f3a",
    }
    broken = describe(resigned(build_collection_payload(DYNAMIC).replace("010212", "010211")))
    assert broken["well_formed"] is True  # valid EMV ...
    assert broken["paycode_collection"]["error"] == "code_malformed"  # ... but not ours to pay
