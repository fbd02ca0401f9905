"""Offline v4 codes (docs/offline.md §2.3, §3, §4.2 steps 3-6): tests/vectors/offline.json is
reproduced byte for byte from its inputs and every verdict in it is what the till-side check
says; each refusal of that check; the strict parser lets only CodeMalformed out."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from paycode.appkit.rendering import qr_image
from paycode.shared import offline
from paycode.shared.binding import MerchantBinding, charging_point_bindings
from paycode.shared.emv.tlv import encode_constructed, encode_tlv
from paycode.shared.errors import CodeMalformed, WeakKey
from paycode.shared.offline import (
    CertificateFields,
    OfflineAccepted,
    OfflineCode,
    OfflineReason,
    OfflineRefused,
    PaymentFields,
)
from paycode.shared.versions import registry, v3_ed25519
from paycode.shared.versions import v4_offline as v4

DOCUMENT = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "offline.json").read_text("utf-8")
)
SERVER_SEED = bytes.fromhex(DOCUMENT["server"]["seed"])
DEVICE_SEED = bytes.fromhex(DOCUMENT["device"]["seed"])
KEY_ID = bytes.fromhex(DOCUMENT["server"]["key_id"])
SERVER_KEYS = {KEY_ID: bytes.fromhex(DOCUMENT["server"]["public_key"])}
CERT = DOCUMENT["certificate"]
CODES: list[dict[str, Any]] = DOCUMENT["codes"]
VERDICTS: list[dict[str, Any]] = DOCUMENT["verdicts"]
UNBOUND, BOUND = CODES[0], CODES[1]
NOW_S = float(UNBOUND["unix_time"])
TILL = charging_point_bindings("mer_corner_cafe", "t1")


def _fields(**changes: Any) -> CertificateFields:
    raw = dict(CERT["fields"])
    del raw["format"]
    for name in ("cert_id", "server_key_id", "offline_pk"):
        raw[name] = bytes.fromhex(raw[name])
    return replace(CertificateFields(**raw), **changes)


def _payment(vector: dict[str, Any], **changes: int) -> PaymentFields:
    names = ("counter", "step", "amount_limit_minor", "flags")
    return replace(PaymentFields(**{name: vector[name] for name in names}), **changes)


def _signed_body(body: bytes) -> offline.Certificate:
    """A certificate the vector server key signs over any body: what only it could make."""
    signature = Ed25519PrivateKey.from_private_bytes(SERVER_SEED).sign(offline.CERT_DOMAIN + body)
    return offline.parse_certificate(body + signature)


def _code(
    payment: PaymentFields,
    *,
    certificate: offline.Certificate | None = None,
    seed: bytes = DEVICE_SEED,
    binding: bytes = b"",
) -> OfflineCode:
    certificate = certificate or offline.parse_certificate(bytes.fromhex(CERT["cert"]))
    if seed == DEVICE_SEED:
        return offline.sign_payment(certificate, payment, seed, binding)
    message = offline.device_message(certificate.raw, offline.pack_payment(payment), binding)
    return OfflineCode(
        certificate, payment, Ed25519PrivateKey.from_private_bytes(seed).sign(message)
    )


def _verdict(code: OfflineCode, now_s: float = NOW_S, **kwargs: Any) -> offline.OfflineVerdict:
    kwargs.setdefault("bindings", TILL)
    return offline.verify_offline(code, server_keys=SERVER_KEYS, now_s=now_s, **kwargs)


def _reason(verdict: offline.OfflineVerdict) -> str:
    return "accepted" if isinstance(verdict, OfflineAccepted) else verdict.reason


# -- the vectors -------------------------------------------------------------------------------


def test_the_certificate_is_rebuilt_byte_for_byte() -> None:
    fields = _fields()
    cert = offline.sign_certificate(fields, SERVER_SEED)
    assert offline.pack_body(fields).hex() == CERT["body"]
    assert (offline.CERT_DOMAIN + offline.pack_body(fields)).hex() == CERT["signed_message"]
    assert cert.hex() == CERT["cert"] and len(cert) == offline.CERT_BYTES == 137
    assert cert[offline.BODY_BYTES :].hex() == CERT["cert_sig"]
    assert offline.parse_certificate(cert).fields == fields
    assert offline.key_id(SERVER_KEYS[KEY_ID]) == KEY_ID


@pytest.mark.parametrize("vector", CODES, ids=[v["name"] for v in CODES])
def test_each_code_is_rebuilt_and_parsed_byte_for_byte(vector: dict[str, Any]) -> None:
    binding = vector["binding"]
    digest = MerchantBinding(**binding).digest if binding else b""
    assert digest.hex() == vector["binding_digest"]
    code = _code(_payment(vector), binding=digest)
    text = v4.encode(code)
    assert text == vector["code"] and len(text) == v4.LENGTH == 328
    assert text.startswith(v4.PREFIX) and v4.CODEC.matches(text)
    assert base64.b64decode(text).hex() == vector["payload"]
    assert code.device_sig.hex() == vector["device_sig"]
    packed = offline.pack_payment(code.payment)
    assert packed.hex() == vector["payment"]
    assert (
        offline.device_message(code.certificate.raw, packed, digest).hex()
        == (vector["device_message"])
    )
    assert v4.parse(text) == code
    assert vector["qr_version"] == 13


@pytest.mark.parametrize("case", VERDICTS, ids=[v["name"] for v in VERDICTS])
def test_each_vector_verdict(case: dict[str, Any]) -> None:
    till = case["till"]
    try:
        code = v4.parse(case["code"])
    except CodeMalformed:
        assert case["expected"] == "code_malformed"
        return
    verdict = offline.verify_offline(
        code,
        server_keys=SERVER_KEYS,
        now_s=float(case["unix_time"]),
        bindings=charging_point_bindings(till["merchant_id"], till["terminal_id"]),
        currency=till["currency"],
    )
    assert _reason(verdict) == case["expected"]


def test_the_verdicts_cover_every_reason_and_malformed() -> None:
    expected = {case["expected"] for case in VERDICTS}
    assert expected == {"accepted", "code_malformed"} | set(OfflineReason)


def test_the_code_renders_at_qr_version_13_at_ecc_m() -> None:
    image = qr_image(UNBOUND["code"], box_px=1, border_modules=0)
    assert image.size == (4 * 13 + 17, 4 * 13 + 17)


# -- refusals the vectors do not show ----------------------------------------------------------


def test_a_bound_code_at_a_till_with_no_bindings_is_merchant_mismatch() -> None:
    code = v4.parse(BOUND["code"])
    assert _reason(_verdict(code, bindings=())) == OfflineReason.MERCHANT_MISMATCH
    assert isinstance(_verdict(code), OfflineAccepted)
    merchant_only = charging_point_bindings("mer_corner_cafe", "t1")[1:]
    assert _reason(_verdict(code, bindings=merchant_only)) == OfflineReason.MERCHANT_MISMATCH


def test_another_device_signing_is_code_invalid() -> None:
    code = _code(_payment(UNBOUND), seed=bytes(32))
    verdict = _verdict(code)
    assert isinstance(verdict, OfflineRefused) and verdict.reason == OfflineReason.CODE_INVALID
    assert "device signature" in verdict.detail


def test_a_signature_swapped_between_the_two_codes_is_refused() -> None:
    unbound, bound = v4.parse(UNBOUND["code"]), v4.parse(BOUND["code"])
    assert _reason(_verdict(replace(unbound, device_sig=bound.device_sig))) == "code_invalid"
    assert _reason(_verdict(replace(bound, device_sig=unbound.device_sig))) == "merchant_mismatch"


def test_a_certificate_signed_by_the_server_for_a_weak_key_is_refused() -> None:
    identity = (1).to_bytes(32, "little")
    with pytest.raises(WeakKey):
        offline.pack_body(_fields(offline_pk=identity))
    body = bytearray.fromhex(CERT["body"])
    body[21:53] = identity
    code = OfflineCode(_signed_body(bytes(body)), _payment(UNBOUND), bytes(64))
    verdict = _verdict(code)
    assert isinstance(verdict, OfflineRefused)
    assert verdict.reason == OfflineReason.CERTIFICATE_INVALID and "weak" in verdict.detail


@pytest.mark.parametrize(
    ("offset", "value"),
    [(56, (12_501).to_bytes(4, "big")), (64, b"\x00"), (56, bytes(4))],
    ids=["cap above total", "count zero", "cap zero"],
)
def test_void_caps_even_when_signed_are_certificate_invalid(offset: int, value: bytes) -> None:
    body = bytearray.fromhex(CERT["body"])
    body[offset : offset + len(value)] = value
    code = OfflineCode(_signed_body(bytes(body)), _payment(UNBOUND), bytes(64))
    assert _reason(_verdict(code)) == OfflineReason.CERTIFICATE_INVALID


def test_a_key_the_till_dropped_is_unknown() -> None:
    code = v4.parse(UNBOUND["code"])
    verdict = offline.verify_offline(code, server_keys={}, now_s=NOW_S, bindings=TILL)
    assert _reason(verdict) == OfflineReason.CERTIFICATE_INVALID
    assert isinstance(_verdict(code, currency="CNY"), OfflineAccepted)


def test_the_last_counter_is_accepted_and_the_next_is_not() -> None:
    last = _code(_payment(UNBOUND, counter=15))
    assert isinstance(_verdict(last), OfflineAccepted)
    assert _reason(_verdict(_code(_payment(UNBOUND, counter=16)))) == "code_invalid"


def test_builders_refuse_what_could_never_verify() -> None:
    certificate = offline.parse_certificate(bytes.fromhex(CERT["cert"]))
    with pytest.raises(ValueError, match="binding"):
        offline.sign_payment(certificate, _payment(BOUND), DEVICE_SEED)
    with pytest.raises(ValueError, match="binding"):
        offline.sign_payment(certificate, _payment(UNBOUND), DEVICE_SEED, bytes(32))
    with pytest.raises(ValueError, match="offline key"):
        offline.sign_payment(certificate, _payment(UNBOUND), bytes(32))
    with pytest.raises(ValueError, match="server_key_id"):
        offline.sign_certificate(_fields(), DEVICE_SEED)
    for bad in (
        {"per_payment_cap_minor": 12_501},
        {"count_max": 0},
        {"currency": "cny"},
        {"expiry_s": CERT["fields"]["not_before_s"]},
        {"total_cap_minor": 2**32},
    ):
        with pytest.raises(ValueError):
            offline.pack_body(_fields(**bad))
    with pytest.raises(ValueError):
        offline.pack_payment(_payment(UNBOUND, counter=256))


# -- the strict parser -------------------------------------------------------------------------


def _reframed(*fields: bytes) -> str:
    app_data = b"".join(fields)
    application = encode_tlv(v4.TAG_AID, v4.AID) + encode_constructed(v4.TAG_APP_DATA, app_data)
    payload = encode_tlv(v4.TAG_FORMAT, b"CPV01") + encode_constructed(v4.TAG_APP, application)
    return base64.b64encode(payload).decode()


def test_only_the_one_spelling_parses() -> None:
    code = v4.parse(UNBOUND["code"])
    cert = encode_tlv(v4.TAG_CERT, code.certificate.raw)
    payment = encode_tlv(v4.TAG_PAYMENT, offline.pack_payment(code.payment))
    signature = encode_tlv(v4.TAG_SIGNATURE, code.device_sig)
    assert _reframed(cert, payment, signature) == UNBOUND["code"]
    for fields in ((cert, signature, payment), (signature, payment, cert)):
        with pytest.raises(CodeMalformed, match="one spelling"):
            v4.parse(_reframed(*fields))
    with pytest.raises(CodeMalformed):
        v4.parse(_reframed(cert, payment, signature, encode_tlv(0xDF14, b"")))
    with pytest.raises(CodeMalformed):
        v4.parse(UNBOUND["code"][:-4])
    with pytest.raises(CodeMalformed):
        v4.parse(UNBOUND["code"].replace("=", "A"))


@pytest.mark.parametrize(
    ("offset", "value"), [(0, 2), (53, ord("c")), (55, 0)], ids=["format", "lower", "nul"]
)
def test_a_certificate_with_a_broken_layout_is_malformed(offset: int, value: int) -> None:
    raw = bytearray.fromhex(CERT["cert"])
    raw[offset] = value
    with pytest.raises(CodeMalformed):
        offline.parse_certificate(bytes(raw))


def test_v4_routes_apart_from_v3_as_an_offline_version_no_device_path_takes() -> None:
    assert v4.PREFIX == "hQVDUFYwMWGB608J8FBBWUNPREUE"
    assert registry.prefixes_disjoint([v4.PREFIX, v3_ed25519.PREFIX])
    assert registry.prefixes_disjoint([codec.prefix for codec in registry.ROUTED])
    assert not registry.prefixes_disjoint(["hQVDUFYwMWGB", v4.PREFIX])
    assert len(UNBOUND["code"]) < registry.TEXT_CHARS_MAX
    assert registry.route(UNBOUND["code"]) is v4.CODEC
    assert registry.is_offline(UNBOUND["code"])
    assert "v4" not in {codec.version for codec in registry.VERSIONS}  # no device enrolls v4
    with pytest.raises(CodeMalformed, match="offline code"):
        registry.route_device(UNBOUND["code"])


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_any_text_parses_or_raises_code_malformed(text: str) -> None:
    for candidate in (text, v4.PREFIX + text):
        try:
            v4.parse(candidate)
        except CodeMalformed:
            continue


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 244), st.integers(0, 255)), min_size=1, max_size=4))
def test_a_damaged_payload_is_malformed_or_a_verdict(changes: list[tuple[int, int]]) -> None:
    payload = bytearray(base64.b64decode(UNBOUND["code"]))
    for index, value in changes:
        payload[index] = value
    try:
        code = v4.parse(base64.b64encode(payload).decode())
    except CodeMalformed:
        return
    assert isinstance(_verdict(code), OfflineAccepted | OfflineRefused)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_any_bytes_as_certificate_or_payment_raise_only_code_malformed(raw: bytes) -> None:
    for parse in (offline.parse_certificate, offline.unpack_payment):
        try:
            parse(raw)
        except CodeMalformed:
            continue
