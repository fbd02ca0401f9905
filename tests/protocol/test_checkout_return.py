"""The signed return of a hosted checkout (docs/spec.md, section 15): built and verified with
public keys only; every way of changing what a shop would act on is caught, and reads as the
verdict that says why."""

from __future__ import annotations

import hashlib
import urllib.parse

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared.checkout_return import (
    DOMAIN,
    FIELDS,
    ReturnVerdict,
    build_return,
    signed_message,
    verify_return,
)

SEED = hashlib.sha256(b"paycode test vector: checkout return key").digest()
KEY_ID = "sk_test0001"
PRIVATE = Ed25519PrivateKey.from_private_bytes(SEED)
PUBLIC = {KEY_ID: PRIVATE.public_key().public_bytes_raw()}
FIELDS_PAID = {
    "order": "ord_0123456789abcdef",
    "merchant": "mer_0123456789abcdef",
    "merchant_order_id": "INV-1042",
    "status": "paid",
    "payment": "pay_0123456789abcdef",
    "amount": "12.50",
    "currency": "CNY",
    "time": "1796601600",
    "key": KEY_ID,
}


def _sign(message: bytes) -> tuple[str, bytes]:
    return KEY_ID, PRIVATE.sign(message)


def _pairs() -> list[tuple[str, str]]:
    return build_return(FIELDS_PAID, _sign)


def _verdict(pairs: list[tuple[str, str]]) -> ReturnVerdict:
    return verify_return(pairs, PUBLIC).verdict


def test_message_is_the_domain_then_one_line_per_field_in_order() -> None:
    expected = DOMAIN + "\n".join(f"{name}={FIELDS_PAID[name]}" for name in FIELDS)
    assert signed_message(FIELDS_PAID) == expected.encode()
    assert signed_message(FIELDS_PAID).startswith(b"paycode-return/1\norder=ord_")
    assert not signed_message(FIELDS_PAID).endswith(b"\n")


def test_a_return_as_built_verifies_and_gives_its_fields() -> None:
    pairs = _pairs()
    assert [name for name, _ in pairs] == [f"paycode_{name}" for name in (*FIELDS, "sig")]
    check = verify_return(pairs, PUBLIC)
    assert check.valid and check.verdict is ReturnVerdict.VALID
    assert dict(check.fields) == FIELDS_PAID


def test_the_shops_own_parameters_and_their_order_do_not_matter() -> None:
    """Through a real query string: the shop's parameters before and after, ours in any order
    (the message has a fixed order of its own)."""
    pairs = [("cart", "7"), *reversed(_pairs()), ("lang", "en")]
    query = urllib.parse.urlencode(pairs)
    parsed = urllib.parse.parse_qsl(query, keep_blank_values=True)
    assert _verdict(parsed) is ReturnVerdict.VALID


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", "1.25"),
        ("amount", "12.5"),
        ("currency", "USD"),
        ("status", "failed"),
        ("payment", "pay_fedcba9876543210"),
        ("order", "ord_fedcba9876543210"),
        ("merchant", "mer_fedcba9876543210"),
        ("merchant_order_id", "INV-1043"),
        ("time", "1796601601"),
    ],
)
def test_a_changed_field_is_altered(field: str, value: str) -> None:
    pairs = [(name, value if name == f"paycode_{field}" else kept) for name, kept in _pairs()]
    assert _verdict(pairs) is ReturnVerdict.ALTERED


def test_swapped_values_are_altered() -> None:
    """Two fields' values exchanged (the same set of values, in other places)."""
    values = dict(_pairs())
    values["paycode_order"], values["paycode_payment"] = (
        values["paycode_payment"],
        values["paycode_order"],
    )
    assert _verdict(list(values.items())) is ReturnVerdict.ALTERED


def test_another_signature_is_altered() -> None:
    other = build_return(FIELDS_PAID | {"amount": "1.00"}, _sign)
    pairs = _pairs()[:-1] + other[-1:]
    assert _verdict(pairs) is ReturnVerdict.ALTERED


@pytest.mark.parametrize("dropped", [*FIELDS, "sig"])
def test_a_dropped_field_is_malformed(dropped: str) -> None:
    pairs = [(name, value) for name, value in _pairs() if name != f"paycode_{dropped}"]
    assert _verdict(pairs) is ReturnVerdict.MALFORMED


def test_an_added_repeated_or_empty_field_is_malformed() -> None:
    pairs = _pairs()
    assert _verdict([*pairs, ("paycode_refunded", "0")]) is ReturnVerdict.MALFORMED
    assert _verdict([*pairs, ("paycode_amount", "12.50")]) is ReturnVerdict.MALFORMED
    assert _verdict([("paycode_amount", "1.00"), *pairs]) is ReturnVerdict.MALFORMED
    empty = [(name, "" if name == "paycode_merchant_order_id" else v) for name, v in pairs]
    assert _verdict(empty) is ReturnVerdict.MALFORMED


def test_a_respelled_or_short_signature_is_malformed() -> None:
    pairs = _pairs()
    signature = pairs[-1][1]
    for spelled in (signature + "=", signature[:-1], signature.replace("-", "+"), "x" * 86):
        if spelled == signature:
            continue
        verdict = _verdict([*pairs[:-1], ("paycode_sig", spelled)])
        assert verdict in {ReturnVerdict.MALFORMED, ReturnVerdict.ALTERED}
    assert _verdict([*pairs[:-1], ("paycode_sig", signature + "=")]) is ReturnVerdict.MALFORMED
    assert _verdict([*pairs[:-1], ("paycode_sig", signature[:-2])]) is ReturnVerdict.MALFORMED


def test_an_unknown_key_says_so_and_a_wrong_key_says_altered() -> None:
    assert verify_return(_pairs(), {}).verdict is ReturnVerdict.UNKNOWN_KEY
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert verify_return(_pairs(), {KEY_ID: other}).verdict is ReturnVerdict.ALTERED
    renamed = [(n, "sk_other" if n == "paycode_key" else v) for n, v in _pairs()]
    assert verify_return(renamed, PUBLIC | {"sk_other": PUBLIC[KEY_ID]}).verdict is (
        ReturnVerdict.ALTERED
    )


def test_a_value_the_format_cannot_carry_is_never_signed() -> None:
    with pytest.raises(ValueError, match="merchant_order_id"):
        build_return(FIELDS_PAID | {"merchant_order_id": "A\nstatus=paid"}, _sign)
    with pytest.raises(ValueError, match="exactly"):
        build_return({k: v for k, v in FIELDS_PAID.items() if k != "time"}, _sign)
    with pytest.raises(ValueError, match="another key"):
        build_return(FIELDS_PAID | {"key": "sk_other"}, _sign)
