"""EMVCo Merchant-Presented Mode: real national payloads, hand-made defects, rules, fuzzing.

The real payloads and their expected fields live in tests/vectors/mpm_payloads.json, each with
the public source it was copied from; invalid ones are kept exactly as published.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycode.merchant_pos.identify import describe
from paycode.shared.emv.mpm import (
    PAYLOAD_CHARS_MAX,
    DataObject,
    FieldValue,
    MpmPayload,
    crc16_ccitt_false,
    decode_mpm,
    encode_mpm,
)
from paycode.shared.errors import EmvCrcError, EmvFormatError
from paycode.shared.money import SUPPORTED_CURRENCIES

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "mpm_payloads.json").read_text(
        encoding="utf-8"
    )
)
VALID: list[dict[str, Any]] = VECTORS["valid"]
INVALID: list[dict[str, Any]] = VECTORS["invalid"]
EMVCO_EXAMPLE = next(v["payload"] for v in VALID if v["name"] == "emvco_spec_example")
PAYNOW = next(v["payload"] for v in VALID if v["name"] == "paynow_odoo")

ACCOUNT = "26150011dev.paycode"
MANDATORY = "52040000" + "5303156" + "5802CN" + "5905Alice" + "6008Shanghai"


def signed(body: str) -> str:
    """`body` (which starts with 000201) closed by a correct CRC."""
    unsigned = body + "6304"
    return unsigned + f"{crc16_ccitt_false(unsigned.encode('utf-8')):04X}"


def rules(payload: str) -> list[str]:
    return [f"{d.rule}:{d.tag}" for d in decode_mpm(payload).deviations]


def field(decoded: MpmPayload, key: str) -> str | None:
    """A value by "59" or "26/01"."""
    tag, _, sub = key.partition("/")
    found: DataObject | None = decoded.find(tag)
    if found is not None and sub:
        found = found.child(sub)
    return None if found is None else found.value


# --- CRC -----------------------------------------------------------------------------------------


def test_crc_is_ccitt_false() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1  # the catalogue check value
    assert crc16_ccitt_false(b"") == 0xFFFF


def test_crc_of_the_emvco_example_covers_utf8_bytes_up_to_6304() -> None:
    body = EMVCO_EXAMPLE[:-4]
    assert body.endswith("6304") and "最佳运输" in body
    assert crc16_ccitt_false(body.encode("utf-8")) == 0xA13A
    assert EMVCO_EXAMPLE.endswith("A13A")


# --- Real payloads -----------------------------------------------------------------------------


def test_vectors_cover_at_least_five_national_schemes() -> None:
    schemes = {v["expect"]["scheme"] for v in VALID} - {None}
    assert len(schemes) >= 5, schemes
    assert all(v["source"] for v in VALID + INVALID)


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["name"])
def test_real_payload_decodes_to_its_published_fields(vector: dict[str, Any]) -> None:
    decoded = decode_mpm(vector["payload"])
    expect = vector["expect"]
    assert decoded.scheme == expect["scheme"]
    assert decoded.point_of_initiation == expect["point_of_initiation"]
    assert decoded.value("59") == expect["merchant_name"]
    assert decoded.value("60") == expect["merchant_city"]
    assert decoded.value("53") == expect["currency"]
    assert decoded.value("54") == expect["amount"]
    assert decoded.value("58") == expect["country_code"]
    assert [f"{d.rule}:{d.tag}" for d in decoded.deviations] == expect["deviations"]
    for key, value in expect.get("fields", {}).items():
        assert field(decoded, key) == value, key


@pytest.mark.parametrize("vector", INVALID, ids=lambda v: v["name"])
def test_published_payload_with_a_wrong_crc_is_refused(vector: dict[str, Any]) -> None:
    errors = {"EmvCrcError": EmvCrcError, "EmvFormatError": EmvFormatError}
    with pytest.raises(errors[vector["error"]]) as caught:
        decode_mpm(vector["payload"])
    assert type(caught.value) is errors[vector["error"]]
    assert caught.value.offset == vector["offset"]


def test_real_payloads_survive_a_re_encode() -> None:
    """Decoding keeps every object and value, so encoding the objects again gives the text."""
    for vector in VALID:
        decoded = decode_mpm(vector["payload"])
        text = "".join(f"{o.tag}{len(o.value):02d}{o.value}" for o in decoded.objects)
        assert text == vector["payload"]


# --- Hard errors name the offset ----------------------------------------------------------------

OVERRUN = "26220011dev.paycode0109abc"
BROKEN = [
    ("crc digit changed", PAYNOW[:-1] + ("0" if PAYNOW[-1] != "0" else "1"), EmvCrcError, 140),
    ("crc not hex", PAYNOW[:-4] + "12G4", EmvCrcError, 140),
    ("truncated", PAYNOW[:100], EmvFormatError, 86),
    ("truncated header", "00020101", EmvFormatError, 6),
    ("duplicate tag", signed("000201" + ACCOUNT + MANDATORY + "5802CN"), EmvFormatError, 67),
    ("non-numeric length", signed("000201" + "52A40000"), EmvFormatError, 8),
    ("non-numeric id", signed("000201" + "5X040000"), EmvFormatError, 6),
    ("overrunning length", signed("000201" + "599"), EmvFormatError, 8),
    ("missing crc", "000201" + ACCOUNT + MANDATORY, EmvFormatError, 67),
    ("data after crc", signed("000201" + ACCOUNT + MANDATORY) + "6103123", EmvFormatError, 75),
    ("crc length 05", "000201" + "630512345", EmvFormatError, 8),
    ("empty", "", EmvFormatError, 0),
    ("too long", "0" * (PAYLOAD_CHARS_MAX + 1), EmvFormatError, PAYLOAD_CHARS_MAX),
    ("lone surrogate", "000201\ud800", EmvFormatError, 6),
    # Inside a template, once the CRC vouches for the text: 26/01 declares 9 characters of 3.
    ("template overrun", signed("000201" + OVERRUN + MANDATORY), EmvFormatError, 27),
    ("template duplicate", signed("000201" + "26120002ab0002cd" + MANDATORY), EmvFormatError, 16),
]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "error", "offset"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_broken_payload_raises_a_typed_error_at_the_offset(
    payload: str, error: type[EmvFormatError], offset: int
) -> None:
    with pytest.raises(error) as caught:
        decode_mpm(payload)
    assert type(caught.value) is error
    assert caught.value.offset == offset
    assert f"at offset {offset}" in str(caught.value)


def test_non_text_is_a_format_error() -> None:
    with pytest.raises(EmvFormatError):
        decode_mpm(b"000201")  # type: ignore[arg-type]


def test_lowercase_crc_is_read_and_flagged() -> None:
    lower = PAYNOW[:-4] + PAYNOW[-4:].lower()
    assert lower != PAYNOW
    assert rules(lower) == ["crc_lowercase:63"]


# --- Lenient reading: each broken rule is named ------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (ACCOUNT + MANDATORY.replace("5905Alice", "5926" + "A" * 26), ["field_length:59"]),
        (ACCOUNT + MANDATORY.replace("6008Shanghai", "6016" + "C" * 16), ["field_length:60"]),
        (ACCOUNT + MANDATORY + "54051.234", ["amount_minor_digits:54"]),
        (ACCOUNT + MANDATORY + "54041,00", ["field_format:54"]),
        ("010213" + ACCOUNT + MANDATORY, ["initiation_method_value:01"]),
        (ACCOUNT + MANDATORY.replace("5905Alice", "5902李四"), ["character_set:59"]),
        (ACCOUNT + MANDATORY + "56031.0", ["convenience_fee:56"]),
        (ACCOUNT + MANDATORY + "550202", ["convenience_fee:56"]),
        ("26080104abcd" + MANDATORY, ["template_guid_missing:26"]),
        (ACCOUNT + MANDATORY + "7002xx", ["reserved_id:70"]),
        (ACCOUNT + MANDATORY + "8003xyz", ["template_unparsed:80"]),
        (ACCOUNT + MANDATORY + "62300526" + "R" * 26, ["field_length:62/05"]),
        (ACCOUNT + MANDATORY + "64060002ZH", ["mandatory_missing:64/01"]),
        (MANDATORY, ["mandatory_missing:02-51"]),
        (ACCOUNT + MANDATORY.replace("52040000", ""), ["mandatory_missing:52"]),
    ],
)
def test_spec_breaches_are_deviations_not_errors(body: str, expected: list[str]) -> None:
    assert rules(signed("000201" + body)) == expected


def test_format_indicator_must_come_first_with_01() -> None:
    payload = signed(ACCOUNT + "000201" + MANDATORY)
    assert rules(payload) == ["format_indicator_first:00"]
    assert rules(signed("000202" + ACCOUNT + MANDATORY)) == ["format_indicator_value:00"]


def test_a_well_formed_payload_has_no_deviation_and_nested_offsets_are_absolute() -> None:
    payload = signed("000201010211" + ACCOUNT + MANDATORY + "62090505ord_1")
    decoded = decode_mpm(payload)
    assert decoded.deviations == ()
    reference = decoded.find("62")
    assert reference is not None and reference.children is not None
    (child,) = reference.children
    assert payload[child.offset : child.offset + 4] == "0505" and child.value == "ord_1"
    assert decoded.point_of_initiation == "static" and decoded.scheme == "paycode"


# --- Strict writing ---------------------------------------------------------------------------

GOOD_FIELDS: list[tuple[str, FieldValue]] = [
    ("26", [("00", "dev.paycode")]),
    ("52", "0000"),
    ("53", "392"),
    ("58", "JP"),
    ("59", "Alice"),
    ("60", "Tokyo"),
]


def with_field(tag: str, value: FieldValue) -> list[tuple[str, FieldValue]]:
    return [(t, v) for t, v in GOOD_FIELDS if t != tag] + [(tag, value)]


def test_encode_writes_format_first_and_crc_last() -> None:
    payload = encode_mpm(GOOD_FIELDS)
    assert payload.startswith("000201") and payload[-8:-4] == "6304"
    assert decode_mpm(payload).deviations == ()


@pytest.mark.parametrize(
    "fields",
    [
        with_field("59", "N" * 26),
        with_field("60", "C" * 16),
        with_field("54", "100.5"),  # JPY has no minor unit
        with_field("54", "12345678901234"),
        with_field("01", "13"),
        with_field("59", "東京"),
        with_field("26", [("01", "no guid")]),
        [f for f in GOOD_FIELDS if f[0] != "52"],
        [f for f in GOOD_FIELDS if f[0] != "26"],
        [*GOOD_FIELDS, ("00", "01")],
        [*GOOD_FIELDS, ("63", "ABCD")],
        [*GOOD_FIELDS, ("52", "1234")],
        with_field("26", [("00", "a"), ("00", "b")]),
        with_field("5A", "x"),
        with_field("62", "R" * 100),
        with_field("62", ""),
        [*GOOD_FIELDS, *((f"{n}", "x" * 99) for n in range(80, 85))],
    ],
)
def test_encode_refuses_what_the_spec_forbids(fields: list[tuple[str, FieldValue]]) -> None:
    with pytest.raises(ValueError):
        encode_mpm(fields)


# --- Round trip and fuzzing -------------------------------------------------------------------

ANS = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def ans(low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(ANS, min_size=low, max_size=high)


@st.composite
def templates(draw: st.DrawFn, sub_count_max: int, value_chars_max: int) -> list[tuple[str, str]]:
    subs = draw(st.lists(st.integers(1, 99), max_size=sub_count_max, unique=True))
    rest = [(f"{sub:02d}", draw(ans(1, value_chars_max))) for sub in subs]
    return [("00", draw(ans(1, 20))), *rest]


@st.composite
def amounts(draw: st.DrawFn, minor_digits: int) -> str:
    whole = str(draw(st.integers(0, 10**8)))
    decimals = draw(st.integers(0, minor_digits))
    fraction = "".join(
        draw(st.lists(st.sampled_from("0123456789"), min_size=decimals, max_size=decimals))
    )
    return whole + ("." + fraction if fraction else "")


@st.composite
def field_lists(draw: st.DrawFn) -> list[tuple[str, FieldValue]]:
    money = draw(st.sampled_from(SUPPORTED_CURRENCIES))
    account_tags = draw(st.lists(st.integers(26, 51), min_size=1, max_size=2, unique=True))
    fields: list[tuple[str, FieldValue]] = []
    if draw(st.booleans()):
        fields.append(("01", draw(st.sampled_from(["11", "12"]))))
    fields += [(f"{tag}", draw(templates(3, 15))) for tag in account_tags]
    fields += [
        ("52", draw(st.text("0123456789", min_size=4, max_size=4))),
        ("53", money.numeric),
        ("58", draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2))),
        ("59", draw(ans(1, 25))),
        ("60", draw(ans(1, 15))),
    ]
    if draw(st.booleans()):
        fields.append(("54", draw(amounts(money.minor_digits))))
    if draw(st.booleans()):
        subs = draw(st.lists(st.integers(1, 8), min_size=1, max_size=4, unique=True))
        fields.append(("62", [(f"{sub:02d}", draw(ans(1, 15))) for sub in subs]))
    return draw(st.permutations(fields))


@settings(max_examples=300, deadline=None)
@given(field_lists())
def test_encode_then_decode_is_identity(fields: list[tuple[str, FieldValue]]) -> None:
    decoded = decode_mpm(encode_mpm(fields))
    assert decoded.deviations == ()
    objects = decoded.objects[1:-1]  # without 00 and 63
    assert [o.tag for o in objects] == [tag for tag, _ in fields]
    for item, (_, value) in zip(objects, fields, strict=True):
        if isinstance(value, str):
            assert item.value == value
        else:
            assert [(c.tag, c.value) for c in item.children or ()] == list(value)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=PAYLOAD_CHARS_MAX + 8))
def test_arbitrary_text_raises_nothing_but_typed_errors(text: str) -> None:
    try:
        decode_mpm(text)
    except EmvFormatError as error:
        assert 0 <= error.offset <= PAYLOAD_CHARS_MAX


MUTATIONS = "0123456789AZaz.* \x00é"


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([v["payload"] for v in VALID]),
    st.lists(st.tuples(st.integers(0, 400), st.text(MUTATIONS, max_size=3)), max_size=4),
    st.booleans(),
)
def test_mutated_real_payloads_raise_nothing_but_typed_errors(
    payload: str, edits: list[tuple[int, str]], resign: bool
) -> None:
    """Splice, delete and insert characters; with `resign` the CRC is recomputed so that the
    nested templates behind it are parsed too."""
    text = payload
    for position, insert in edits:
        at = position % (len(text) + 1)
        text = text[:at] + insert + text[at + len(insert) // 2 :]
    if resign:
        text = signed(text[:-8])
    try:
        decoded = decode_mpm(text)
    except EmvFormatError:
        return
    assert all(isinstance(d.rule, str) and d.message for d in decoded.deviations)


# --- paycode-pos inspect ----------------------------------------------------------------------


def test_inspect_shows_a_real_payloads_fields_and_deviations() -> None:
    pix = next(v["payload"] for v in VALID if v["name"] == "pix_odoo")
    info = describe(pix)
    assert info["kind"] == "emv_mpm" and info["well_formed"] is True
    assert (info["scheme"], info["point_of_initiation"]) == ("pix", "dynamic")
    assert (info["merchant_name"], info["currency"], info["amount"]) == (
        "COMPANY_1_DATA",
        "BRL",
        "12.30",
    )
    assert info["merchant_accounts"]["26"]["00"] == "br.gov.bcb.pix"
    assert info["additional_data"] == {"05": "NFeTEST0001"}
    assert [d["rule"] for d in info["deviations"]] == ["mandatory_missing"]
    assert info["paycode_collection"] is None
    json.dumps(info)  # JSON-ready


def test_inspect_reads_duitnow_format_02_and_reports_errors_with_offsets() -> None:
    duitnow = next(v["payload"] for v in VALID if v["name"] == "duitnow_paynet")
    assert describe(duitnow)["scheme"] == "duitnow"
    bad = describe(PAYNOW[:-1] + "0")
    assert bad["kind"] == "emv_mpm" and bad["well_formed"] is False
    assert (bad["error"], bad["reason"], bad["offset"]) == ("code_malformed", "crc_mismatch", 140)
    cut = describe(PAYNOW[:100])
    assert (cut["reason"], cut["offset"]) == ("format", 86) and "offset 86" in cut["message"]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80).map(lambda tail: "0002" + tail))
def test_inspect_never_raises(text: str) -> None:
    info = describe(text)
    assert info["kind"] == "emv_mpm" and isinstance(info["well_formed"], bool)
