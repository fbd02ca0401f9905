"""BER-TLV and EMVCo Consumer-Presented Mode: the spec's worked examples, round trips, fuzzing.

The two CPM payloads are the examples printed in the EMVCo QR Code Specification for Payment
Systems (Consumer-Presented Mode); every expected value below was read from them.
"""

from __future__ import annotations

import base64
from typing import TypeAlias

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from paycode.shared.emv.cpm import (
    TEXT_CHARS_MAX,
    CpmApplication,
    decode_cpm,
    encode_cpm,
)
from paycode.shared.emv.tlv import (
    DEPTH_LIMIT,
    Tlv,
    decode_tlv,
    encode_constructed,
    encode_tlv,
    find_tlv,
    walk_tlv,
)
from paycode.shared.errors import CodeMalformed, EmvFormatError

SPEC_EXAMPLE_ONE_APP = "hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8="
SPEC_EXAMPLE_TWO_APPS = (
    "hQVDUFYwMWETTwegAAAAVVVVUAhQcm9kdWN0MWETTwegAAAAZmZmUAhQcm9kdWN0MmJJWggSNFZ4kBI0WF8gDkNBUkRI"
    "T0xERVIvRU1WXy0IcnVlc2RlZW5kIZ8QBwYBCgMAAACfJghYT9OF+iNLzJ82AgABnzcEbVjvEw=="
)
FORMAT_INDICATOR_ITEM = bytes.fromhex("85054350563031")

Node: TypeAlias = tuple[int, "bytes | list[Node]"]
"""A TLV tree for round trips: (tag, value) for primitives, (tag, children) for templates."""


def offset_of(error: pytest.ExceptionInfo[EmvFormatError]) -> int:
    return error.value.offset


# --- The spec's worked examples ---------------------------------------------------------------


def test_spec_example_with_one_application_decodes_to_its_fields() -> None:
    payload = decode_cpm(SPEC_EXAMPLE_ONE_APP)

    assert payload.format_indicator == "CPV01"
    assert payload.common is None
    assert [item.tag for item in payload.tlvs] == [0x85, 0x61]
    (app,) = payload.applications
    assert app.aid == bytes.fromhex("A0000000555555")
    assert app.track2 == bytes.fromhex("1234567890123458D191220112345F")
    assert (app.label, app.pan, app.cardholder_name) == (None, None, None)
    assert [item.tag for item in app.tlvs] == [0x4F, 0x57]


def test_spec_example_with_two_applications_decodes_to_its_fields() -> None:
    payload = decode_cpm(SPEC_EXAMPLE_TWO_APPS)

    assert [app.label for app in payload.applications] == ["Product1", "Product2"]
    assert [app.aid for app in payload.applications] == [
        bytes.fromhex("A0000000555555"),
        bytes.fromhex("A0000000666666"),
    ]
    common = payload.common
    assert common is not None
    assert common.pan == "1234567890123458"
    assert common.cardholder_name == "CARDHOLDER/EMV"
    assert common.language_preference == "ruesdeen"
    assert [item.tag for item in payload.tlvs] == [0x85, 0x61, 0x61, 0x62]


def test_spec_example_common_transparent_template_holds_the_cryptogram_data() -> None:
    common = decode_cpm(SPEC_EXAMPLE_TWO_APPS).common
    assert common is not None
    transparent = find_tlv(common.tlvs, 0x64)
    assert transparent is not None and transparent.constructed
    assert transparent.children is not None

    found = {item.tag: item.value.hex().upper() for item in transparent.children}

    assert found == {
        0x9F10: "06010A03000000",
        0x9F26: "584FD385FA234BCC",
        0x9F36: "0001",
        0x9F37: "6D58EF13",
    }


def test_spec_examples_walk_in_document_order_with_absolute_offsets() -> None:
    items = list(walk_tlv(decode_cpm(SPEC_EXAMPLE_TWO_APPS).tlvs))

    assert [item.tag for item in items] == [
        0x85, 0x61, 0x4F, 0x50, 0x61, 0x4F, 0x50,
        0x62, 0x5A, 0x5F20, 0x5F2D, 0x64, 0x9F10, 0x9F26, 0x9F36, 0x9F37,
    ]  # fmt: skip
    raw = base64.b64decode(SPEC_EXAMPLE_TWO_APPS)
    for item in items:
        assert raw[item.value_offset : item.value_offset + len(item.value)] == item.value


def test_encoder_reproduces_the_spec_examples_byte_for_byte() -> None:
    one = encode_tlv(0x4F, bytes.fromhex("A0000000555555")) + encode_tlv(
        0x57, bytes.fromhex("1234567890123458D191220112345F")
    )
    assert encode_cpm([one]) == SPEC_EXAMPLE_ONE_APP

    apps = [
        encode_tlv(0x4F, bytes.fromhex(aid)) + encode_tlv(0x50, label)
        for aid, label in [("A0000000555555", b"Product1"), ("A0000000666666", b"Product2")]
    ]
    transparent = encode_constructed(
        0x64,
        encode_tlv(0x9F10, bytes.fromhex("06010A03000000")),
        encode_tlv(0x9F26, bytes.fromhex("584FD385FA234BCC")),
        encode_tlv(0x9F36, bytes.fromhex("0001")),
        encode_tlv(0x9F37, bytes.fromhex("6D58EF13")),
    )
    common = (
        encode_tlv(0x5A, bytes.fromhex("1234567890123458"))
        + encode_tlv(0x5F20, b"CARDHOLDER/EMV")
        + encode_tlv(0x5F2D, b"ruesdeen")
        + transparent
    )
    assert encode_cpm(apps, common) == SPEC_EXAMPLE_TWO_APPS


# --- TLV encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "field_hex"),
    [(0, "00"), (127, "7F"), (128, "8180"), (255, "81FF"), (256, "820100"), (65536, "83010000")],
)
def test_encode_tlv_uses_the_shortest_length_form(length: int, field_hex: str) -> None:
    encoded = encode_tlv(0x9F26, bytes(length))

    assert encoded[2 : 2 + len(field_hex) // 2].hex().upper() == field_hex
    (item,) = decode_tlv(encoded)
    assert (item.tag, item.value, item.value_offset) == (
        0x9F26,
        bytes(length),
        len(encoded) - length,
    )


def test_three_byte_tags_round_trip() -> None:
    (item,) = decode_tlv(encode_tlv(0xDF8101, b"\x01\x02"))

    assert (item.tag, item.value, item.constructed, item.children) == (
        0xDF8101,
        b"\x01\x02",
        False,
        None,
    )


@pytest.mark.parametrize("tag", [-1, 0x1F, 0x5A01, 0x9F80, 0x9F0101, 0x1000000, True])
def test_encode_tlv_rejects_malformed_tags(tag: int) -> None:
    with pytest.raises(ValueError, match="tag"):
        encode_tlv(tag, b"")


def test_encode_tlv_rejects_values_too_long_for_three_length_bytes() -> None:
    with pytest.raises(ValueError, match="longer"):
        encode_tlv(0x4F, bytes(0x1000000))


def test_encode_constructed_rejects_primitive_tags() -> None:
    with pytest.raises(ValueError, match="not constructed"):
        encode_constructed(0x4F, encode_tlv(0x50, b"x"))


@pytest.mark.parametrize(
    "limits", [{"max_depth": 0}, {"max_depth": DEPTH_LIMIT + 1}, {"max_items": 0}]
)
def test_decode_tlv_rejects_nonsense_limits(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="max_"):
        decode_tlv(b"\x4f\x00", **limits)


def test_find_tlv_returns_the_first_match_at_its_own_level_only() -> None:
    items = decode_tlv(bytes.fromhex("4F01AA 6103 500142 4F01BB"))

    first = find_tlv(items, 0x4F)
    assert first is not None and (first.value, first.offset) == (b"\xaa", 0)
    assert find_tlv(items, 0x50) is None


def test_walk_tlv_refuses_trees_larger_than_its_bound() -> None:
    items = decode_tlv(bytes.fromhex("4F00") * 5)

    assert len(list(walk_tlv(items, max_items=5))) == 5
    with pytest.raises(ValueError, match="more than 4"):
        list(walk_tlv(items, max_items=4))


# --- TLV decoding errors, each at its offset ------------------------------------------------


@pytest.mark.parametrize(
    ("data_hex", "offset", "message"),
    [
        ("", 0, "empty"),
        ("5A80 0000", 1, "indefinite"),
        ("6103 4F80 00", 3, "indefinite"),
        ("4F05 A000", 1, "overruns"),
        ("6104 4F05A000", 3, "overruns"),
        ("5A0100 9F", 3, "truncated multi-byte tag"),
        ("9F81", 0, "truncated multi-byte tag"),
        ("9F818101 00", 0, "tag longer"),
        ("4F", 0, "length missing"),
        ("4F8201", 1, "truncated length"),
        ("4F84 00000001 00", 1, "too long"),
        ("4F8105 0000000000", 1, "shortest form"),
        ("4F820080" + "00" * 128, 1, "shortest form"),
    ],
)
def test_decode_tlv_reports_each_defect_at_its_offset(
    data_hex: str, offset: int, message: str
) -> None:
    with pytest.raises(EmvFormatError, match=message) as error:
        decode_tlv(bytes.fromhex(data_hex))

    assert offset_of(error) == offset
    assert isinstance(error.value, CodeMalformed) and error.value.code == "code_malformed"


def test_decode_tlv_rejects_nesting_deeper_than_max_depth() -> None:
    with pytest.raises(EmvFormatError, match="deeper than 2") as error:
        decode_tlv(bytes.fromhex("6104 6202 6300"), max_depth=2)
    assert offset_of(error) == 4

    nine_levels = b""
    for _ in range(9):
        nine_levels = encode_constructed(0x61, nine_levels)
    assert len(list(walk_tlv(decode_tlv(nine_levels, max_depth=9)))) == 9
    with pytest.raises(EmvFormatError, match="deeper than 8") as error:
        decode_tlv(nine_levels)
    assert offset_of(error) == 16


def test_decode_tlv_counts_items_across_the_whole_tree() -> None:
    with pytest.raises(EmvFormatError, match="too many") as error:
        decode_tlv(bytes.fromhex("4F00 4F00 4F00"), max_items=2)
    assert offset_of(error) == 4

    with pytest.raises(EmvFormatError, match="too many") as error:
        decode_tlv(bytes.fromhex("6104 4F00 4F00"), max_items=2)
    assert offset_of(error) == 4


# --- CPM decoding errors, each at its offset ------------------------------------------------


def cpm_text(*items: bytes) -> str:
    return base64.b64encode(b"".join(items)).decode("ascii")


@pytest.mark.parametrize(
    ("text", "offset", "message"),
    [
        ("", 0, "empty"),
        ("hQVD UFYw", 4, "character"),
        ("hQVDUFYwMW!a", 10, "character"),
        ("hQVD\nUFYw", 4, "character"),
        ("hQVDé", 4, "character"),
        ("hQVDUFYwM", 8, "not padded"),
        ("hQ=D", 2, "padding"),
        ("h===", 1, "padding"),
        ("hQ==hQ==", 2, "padding"),
        ("hR==", 1, "non-canonical"),
        ("A" * (TEXT_CHARS_MAX + 4), TEXT_CHARS_MAX, "longer"),
    ],
)
def test_decode_cpm_rejects_invalid_base64_at_its_char_offset(
    text: str, offset: int, message: str
) -> None:
    with pytest.raises(EmvFormatError, match=message) as error:
        decode_cpm(text)
    assert offset_of(error) == offset


@pytest.mark.parametrize(
    ("payload_hex", "offset", "message"),
    [
        ("85054350563032 6100", 2, "not CPV01"),
        ("6100 85054350563031", 0, "does not start"),
        ("85054350563031", 0, "no application"),
        ("85054350563031 6300", 0, "no application"),
        ("85054350563031 6100 85054350563031", 9, "repeated payload format"),
        ("85054350563031 6100 6200 6200", 11, "repeated common"),
        ("85054350563031 6105 500341C242", 12, "not ASCII"),
        ("85054350563031 6105 5003074142", 11, "not ASCII"),
        ("85054350563031 6104 5A02123A", 12, "not BCD"),
        ("85054350563031 6104 5A021F23", 11, "not BCD"),
        ("85054350563031 6102 5A00", 9, "no digits"),
    ],
)
def test_decode_cpm_rejects_bad_contents_at_their_byte_offset(
    payload_hex: str, offset: int, message: str
) -> None:
    with pytest.raises(EmvFormatError, match=message) as error:
        decode_cpm(cpm_text(bytes.fromhex(payload_hex)))
    assert offset_of(error) == offset


def test_decode_cpm_keeps_unknown_tags_and_templates() -> None:
    app = encode_tlv(0x4F, b"\xa0\x00") + encode_tlv(0x9F7F, b"x") + encode_constructed(0x63)
    unknown_top = encode_constructed(0x63, encode_tlv(0x9F26, bytes(8)))
    payload = decode_cpm(
        cpm_text(FORMAT_INDICATOR_ITEM, encode_constructed(0x61, app), unknown_top)
    )

    assert [item.tag for item in payload.applications[0].tlvs] == [0x4F, 0x9F7F, 0x63]
    assert [item.tag for item in walk_tlv(payload.tlvs)][-2:] == [0x63, 0x9F26]


def test_encode_cpm_rejects_input_that_would_not_decode() -> None:
    with pytest.raises(ValueError, match="at least one"):
        encode_cpm([])
    with pytest.raises(ValueError, match="would not decode"):
        encode_cpm([b"\x4f\x05"])
    with pytest.raises(ValueError, match="would not decode"):
        encode_cpm([encode_tlv(0x50, bytes(1600))])


# --- Hypothesis: round trips --------------------------------------------------------------


def tag_from(first_bytes: list[int], constructed: bool) -> st.SearchStrategy[int]:
    """Well-formed 1-3 byte tags whose first byte is primitive or constructed as asked."""
    kind = 0x20 if constructed else 0x00
    single = st.integers(0, 0xFF).filter(lambda b: b & 0x20 == kind and b & 0x1F != 0x1F)
    firsts = st.sampled_from([b for b in first_bytes if b & 0x20 == kind])
    double = st.builds(lambda a, b: a << 8 | b, firsts, st.integers(0, 0x7F))
    triple = st.builds(
        lambda a, b, c: a << 16 | b << 8 | c, firsts, st.integers(0x80, 0xFF), st.integers(0, 0x7F)
    )
    return st.one_of(single, double, triple)


MULTI_BYTE_FIRSTS = [0x1F, 0x3F, 0x5F, 0x7F, 0x9F, 0xBF, 0xDF, 0xFF]
primitive_tags = tag_from(MULTI_BYTE_FIRSTS, constructed=False)
constructed_tags = tag_from(MULTI_BYTE_FIRSTS, constructed=True)
values = st.one_of(st.binary(max_size=20), st.binary(min_size=120, max_size=300))
leaves: st.SearchStrategy[Node] = st.tuples(primitive_tags, values)
trees: st.SearchStrategy[Node] = st.recursive(
    leaves,
    lambda children: st.tuples(constructed_tags, st.lists(children, max_size=4)),
    max_leaves=12,
)


def encode_tree(node: Node) -> bytes:
    tag, content = node
    if isinstance(content, bytes):
        return encode_tlv(tag, content)
    return encode_constructed(tag, *(encode_tree(child) for child in content))


def tree_of(item: Tlv) -> Node:
    if item.children is None:
        return (item.tag, item.value)
    return (item.tag, [tree_of(child) for child in item.children])


def depth_of(node: Node) -> int:
    _, content = node
    if isinstance(content, bytes):
        return 1
    return 1 + max((depth_of(child) for child in content), default=0)


@given(st.lists(trees, min_size=1, max_size=4))
def test_tlv_trees_round_trip_exactly(nodes: list[Node]) -> None:
    assume(max(depth_of(node) for node in nodes) <= DEPTH_LIMIT)
    encoded = b"".join(encode_tree(node) for node in nodes)

    decoded = decode_tlv(encoded, max_depth=DEPTH_LIMIT, max_items=10_000)

    assert [tree_of(item) for item in decoded] == nodes
    assert b"".join(encode_tree(tree_of(item)) for item in decoded) == encoded


application_contents = st.lists(st.tuples(primitive_tags, values), max_size=5)


@given(st.lists(application_contents, min_size=1, max_size=3), st.none() | application_contents)
def test_cpm_payloads_round_trip(
    apps: list[list[tuple[int, bytes]]], common: list[tuple[int, bytes]] | None
) -> None:
    def content(pairs: list[tuple[int, bytes]]) -> bytes:
        return b"".join(encode_tlv(tag, value) for tag, value in pairs)

    raw_size = 7 + sum(4 + len(content(app)) for app in apps) + 4 + len(content(common or []))
    assume(raw_size * 4 // 3 + 4 <= TEXT_CHARS_MAX)
    for pairs in [*apps, common or []]:
        assume(all(tag not in {0x50, 0x5A, 0x5F20, 0x5F2D} for tag, _ in pairs))
    text = encode_cpm([content(app) for app in apps], None if common is None else content(common))

    payload = decode_cpm(text)

    assert text.startswith("hQVDUFYwMW")  # 85 "CPV01" then the 61 tag
    assert [[(i.tag, i.value) for i in app.tlvs] for app in payload.applications] == apps
    decoded_common = (
        None if payload.common is None else [(i.tag, i.value) for i in payload.common.tlvs]
    )
    assert decoded_common == common


@given(
    label=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=16),
    pan=st.text("0123456789", min_size=1, max_size=19),
    aid=st.binary(min_size=5, max_size=16),
)
def test_cpm_named_fields_round_trip(label: str, pan: str, aid: bytes) -> None:
    bcd = bytes.fromhex(pan + "F" * (len(pan) % 2))
    app = (
        encode_tlv(0x4F, aid)
        + encode_tlv(0x50, label.encode("ascii"))
        + encode_tlv(0x5A, bcd)
        + encode_tlv(0x5F20, label.encode("ascii"))
        + encode_tlv(0x5F2D, b"en")
        + encode_tlv(0x9F08, b"\x00\x02")
    )

    (decoded,) = decode_cpm(encode_cpm([app])).applications

    assert decoded == CpmApplication(
        aid=aid,
        label=label,
        track2=None,
        pan=pan,
        cardholder_name=label,
        language_preference="en",
        app_version=b"\x00\x02",
        tlvs=decoded.tlvs,
    )
    assert [item.tag for item in decoded.tlvs] == [0x4F, 0x50, 0x5A, 0x5F20, 0x5F2D, 0x9F08]


# --- Hypothesis: hostile input raises only EmvFormatError ---------------------------------


def assert_format_error_inside(error: EmvFormatError, size: int) -> None:
    assert 0 <= error.offset < max(size, 1)


SPEC_PAYLOAD_BYTES = base64.b64decode(SPEC_EXAMPLE_TWO_APPS)
mutated_payloads = st.builds(
    lambda data, index, byte: data[:index] + bytes([byte]) + data[index + 1 :],
    st.just(SPEC_PAYLOAD_BYTES),
    st.integers(0, len(SPEC_PAYLOAD_BYTES) - 1),
    st.integers(0, 0xFF),
)
hostile_bytes = st.one_of(
    st.binary(max_size=600),
    st.lists(
        st.sampled_from([0x1F, 0x20, 0x61, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0x9F, 0xFF])
    ).map(bytes),
    mutated_payloads,
    st.builds(lambda tail: FORMAT_INDICATOR_ITEM + tail, st.binary(max_size=200)),
)


@settings(max_examples=500)
@given(hostile_bytes)
def test_decode_tlv_raises_only_emv_format_errors(data: bytes) -> None:
    try:
        items = decode_tlv(data)
    except EmvFormatError as error:
        assert_format_error_inside(error, len(data))
    else:
        assert b"".join(encode_tree(tree_of(item)) for item in items) == data


hostile_text = st.one_of(
    st.text(max_size=200),
    st.text(alphabet="ABCDhQVUFYwM+/=\n ", max_size=200),
    hostile_bytes.map(lambda data: base64.b64encode(data).decode("ascii")),
)


@settings(max_examples=500)
@given(hostile_text)
def test_decode_cpm_raises_only_emv_format_errors(text: str) -> None:
    try:
        payload = decode_cpm(text)
    except EmvFormatError as error:
        assert_format_error_inside(error, len(text))
    else:
        assert payload.applications and payload.format_indicator == "CPV01"


# --- Truncation at every position ---------------------------------------------------------


@pytest.mark.parametrize("text", [SPEC_EXAMPLE_ONE_APP, SPEC_EXAMPLE_TWO_APPS])
def test_every_truncated_tlv_prefix_fails_inside_the_buffer_unless_it_ends_an_item(
    text: str,
) -> None:
    raw = base64.b64decode(text)
    full = decode_tlv(raw)
    ends = {item.offset + len(encode_tree(tree_of(item))): index for index, item in enumerate(full)}

    for size in range(len(raw)):
        if size in ends:
            assert decode_tlv(raw[:size]) == full[: ends[size] + 1]
            continue
        with pytest.raises(EmvFormatError) as error:
            decode_tlv(raw[:size])
        assert_format_error_inside(error.value, size)


@pytest.mark.parametrize("text", [SPEC_EXAMPLE_ONE_APP, SPEC_EXAMPLE_TWO_APPS])
def test_every_truncated_cpm_payload_fails_inside_the_buffer_unless_it_ends_a_template(
    text: str,
) -> None:
    raw = base64.b64decode(text)
    full = decode_tlv(raw)
    template_ends = {
        item.offset + len(encode_tree(tree_of(item))): i for i, item in enumerate(full)
    }
    del template_ends[len(FORMAT_INDICATOR_ITEM)]

    for size in range(len(raw)):
        if size in template_ends:
            assert decode_cpm(cpm_text(raw[:size])).tlvs == full[: template_ends[size] + 1]
            continue
        with pytest.raises(EmvFormatError) as error:
            decode_cpm(cpm_text(raw[:size]))
        assert_format_error_inside(error.value, size)


@pytest.mark.parametrize("text", [SPEC_EXAMPLE_ONE_APP, SPEC_EXAMPLE_TWO_APPS])
def test_every_truncated_cpm_text_fails_inside_the_text(text: str) -> None:
    for size in range(len(text)):
        with pytest.raises(EmvFormatError) as error:
            decode_cpm(text[:size])
        assert_format_error_inside(error.value, size)
