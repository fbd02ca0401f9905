"""Merchant-bound codes (docs/spec.md §10): they pay only at the charging point they were made
for, an attacker can neither strip nor add the binding, and unbound codes are unchanged."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import replace

import pytest

from paycode.shared.binding import MerchantBinding, charging_point_bindings
from paycode.shared.errors import CodeMalformed
from paycode.shared.verify import verify_code
from paycode.shared.versions import plaintext, v1_numeric, v2_qr, v3_ed25519
from paycode.shared.versions.base import (
    Accepted,
    DeviceCredential,
    Flags,
    Reason,
    Rejected,
    Verification,
)
from paycode.shared.versions.registry import VERSIONS, by_name
from tests.protocol.test_versions import NOW_S, STEP
from tests.support.protocol import CodeServer

BOUND = int(Flags.MERCHANT_BOUND)
CAFE, SHOP = "mer_cafe", "mer_shop"
TILL_1, TILL_2 = "term_1", "term_2"
BINDABLE = [codec.version for codec in VERSIONS if codec.bindable]


@pytest.fixture(scope="module")
def world() -> CodeServer:
    return CodeServer.new(NOW_S)


def _bound(
    world: CodeServer,
    version: str,
    binding: MerchantBinding,
    *,
    flags: int = BOUND,
    counter: int = 0,
) -> tuple[DeviceCredential, str]:
    credential = world.enroll(version)
    code = by_name(version).generate(
        credential, step=STEP, counter=counter, flags=flags, binding=binding.digest
    )
    return credential, code


def _at(world: CodeServer, code: str, merchant_id: str, terminal_id: str) -> Verification:
    """Verify as the server does for a charge from `terminal_id` of `merchant_id`."""
    bindings = charging_point_bindings(merchant_id, terminal_id)
    return verify_code(code, world.registry.context(world.keys, NOW_S, bindings=bindings))


def _mismatch(result: Verification) -> bool:
    return isinstance(result, Rejected) and result.reason is Reason.MERCHANT_MISMATCH


# --- the digest -----------------------------------------------------------------------------


def test_digest_is_the_published_construction() -> None:
    expected = hashlib.sha256(b"paycode-bind-1" + b"mer_cafe" + b"\x00" + b"term_1").digest()
    assert MerchantBinding(CAFE, TILL_1).digest == expected
    merchant_only = hashlib.sha256(b"paycode-bind-1mer_cafe\x00").digest()
    assert MerchantBinding(CAFE).digest == merchant_only


def test_digests_separate_merchants_and_terminals() -> None:
    digests = {
        MerchantBinding(CAFE).digest,
        MerchantBinding(CAFE, TILL_1).digest,
        MerchantBinding(CAFE, TILL_2).digest,
        MerchantBinding(SHOP).digest,
        MerchantBinding(SHOP, TILL_1).digest,
        MerchantBinding("mer_caf", "e" + TILL_1).digest,
    }
    assert len(digests) == 6
    assert charging_point_bindings(CAFE, TILL_1) == (
        MerchantBinding(CAFE, TILL_1).digest,
        MerchantBinding(CAFE).digest,
    )


@pytest.mark.parametrize(
    ("merchant_id", "terminal_id"),
    [("", None), ("a\x00b", None), ("x" * 100, None), (CAFE, ""), (CAFE, "t\x00")],
    ids=["empty", "nul", "too-long", "empty-terminal", "nul-terminal"],
)
def test_bad_ids_raise(merchant_id: str, terminal_id: str | None) -> None:
    with pytest.raises(ValueError):
        MerchantBinding(merchant_id, terminal_id)


# --- where a bound code pays ----------------------------------------------------------------


@pytest.mark.parametrize("version", BINDABLE)
def test_merchant_bound_code_pays_at_any_terminal_of_its_merchant(
    world: CodeServer, version: str
) -> None:
    _, code = _bound(world, version, MerchantBinding(CAFE))
    for terminal_id in (TILL_1, TILL_2):
        result = _at(world, code, CAFE, terminal_id)
        assert isinstance(result, Accepted), result
        assert result.flags == BOUND
    assert _mismatch(_at(world, code, SHOP, TILL_1))


@pytest.mark.parametrize("version", BINDABLE)
def test_terminal_bound_code_pays_only_at_its_terminal(world: CodeServer, version: str) -> None:
    _, code = _bound(world, version, MerchantBinding(CAFE, TILL_1))
    assert isinstance(_at(world, code, CAFE, TILL_1), Accepted)
    assert _mismatch(_at(world, code, CAFE, TILL_2))
    assert _mismatch(_at(world, code, SHOP, TILL_1))


@pytest.mark.parametrize("version", BINDABLE)
def test_bound_code_without_charging_point_is_a_mismatch_not_a_proof(
    world: CodeServer, version: str
) -> None:
    _, code = _bound(world, version, MerchantBinding(CAFE))
    result = world.verify(code)  # a context that names no charging point
    assert _mismatch(result)
    assert isinstance(result, Rejected) and result.device is None  # never claimable


@pytest.mark.parametrize("version", BINDABLE)
def test_bound_code_keeps_its_other_flags_and_window(world: CodeServer, version: str) -> None:
    flags = BOUND | int(Flags.USER_VERIFIED)
    credential, code = _bound(world, version, MerchantBinding(CAFE), flags=flags)
    result = _at(world, code, CAFE, TILL_1)
    assert isinstance(result, Accepted) and result.flags == flags
    stale = by_name(version).generate(
        credential, step=STEP - 2, counter=1, flags=BOUND, binding=MerchantBinding(CAFE).digest
    )
    expired = _at(world, stale, CAFE, TILL_1)
    assert isinstance(expired, Rejected) and expired.reason is Reason.CODE_EXPIRED


@pytest.mark.parametrize("version", BINDABLE)
def test_unbound_codes_ignore_the_charging_point(world: CodeServer, version: str) -> None:
    credential = world.enroll(version)
    code = by_name(version).generate(credential, step=STEP, counter=0)
    for merchant_id in (CAFE, SHOP):
        result = _at(world, code, merchant_id, TILL_1)
        assert isinstance(result, Accepted) and result.flags == 0


# --- the binding cannot be stripped, added or moved -----------------------------------------


def _v2_rewrite_flags(world: CodeServer, code: str, flags: int) -> str:
    """What anyone holding K_hide[v2] (every v2 phone) can do: unmask, edit, re-mask."""
    tag, masked = v2_qr.CODEC.parse(code)
    hiding_key = world.hiding["v2"]
    fields = plaintext.unpack(v2_qr._xor_pad(hiding_key, tag, masked))
    edited = plaintext.pack(fields._replace(flags=flags))
    return v2_qr.PREFIX + base64.b32encode(tag + v2_qr._xor_pad(hiding_key, tag, edited)).decode()


def test_v2_stripping_the_flag_fails_everywhere(world: CodeServer) -> None:
    _, code = _bound(world, "v2", MerchantBinding(CAFE))
    stripped = _v2_rewrite_flags(world, code, 0)
    for merchant_id in (CAFE, SHOP):
        result = _at(world, stripped, merchant_id, TILL_1)
        assert isinstance(result, Rejected) and result.reason is Reason.CODE_INVALID
    assert isinstance(world.verify(stripped), Rejected)


def test_v2_adding_the_flag_never_pays(world: CodeServer) -> None:
    credential = world.enroll("v2")
    code = v2_qr.CODEC.generate(credential, step=STEP, counter=0)
    added = _v2_rewrite_flags(world, code, BOUND)
    for merchant_id in (CAFE, SHOP):
        assert not isinstance(_at(world, added, merchant_id, TILL_1), Accepted)


def test_v3_resealing_without_the_flag_fails(world: CodeServer) -> None:
    """Even the holder of the server's seal key cannot strip the flag: the signature covers
    the envelope (and, for a bound code, the binding)."""
    _, code = _bound(world, "v3", MerchantBinding(CAFE))
    envelope, signature = v3_ed25519.CODEC.parse(code)
    seal_private = world.keys.seal_keys[0]
    plain = v3_ed25519.unseal(envelope, seal_private)
    assert plain is not None
    fields = plaintext.unpack(plain)
    assert fields.flags == BOUND
    stripped_plain = plaintext.pack(fields._replace(flags=0))
    resealed = v3_ed25519.seal(stripped_plain, world.seal_public, os.urandom(32))
    stripped = base64.b64encode(v3_ed25519._container(resealed, signature)).decode()
    for merchant_id in (CAFE, SHOP):
        result = _at(world, stripped, merchant_id, TILL_1)
        assert isinstance(result, Rejected) and result.reason is Reason.CODE_INVALID


@pytest.mark.parametrize("version", BINDABLE)
def test_another_device_cannot_forge_a_bound_code(world: CodeServer, version: str) -> None:
    """The attacker's own device signs for the victim's handle: still not the victim's code."""
    victim = world.enroll(version)
    attacker = world.enroll(version)
    forged = by_name(version).generate(
        replace(attacker, handle=victim.handle),
        step=STEP,
        counter=0,
        flags=BOUND,
        binding=MerchantBinding(SHOP).digest,
    )
    assert not isinstance(_at(world, forged, SHOP, TILL_1), Accepted)


@pytest.mark.parametrize("version", BINDABLE)
def test_every_bit_flip_of_a_bound_code_is_refused(world: CodeServer, version: str) -> None:
    _, code = _bound(world, version, MerchantBinding(CAFE))
    codec = by_name(version)
    raw = base64.b32decode(code[3:]) if version == "v2" else base64.b64decode(code)
    for bit in range(0, len(raw) * 8, 3):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        text = (
            v2_qr.PREFIX + base64.b32encode(bytes(flipped)).decode()
            if version == "v2"
            else base64.b64encode(bytes(flipped)).decode()
        )
        if not codec.matches(text):
            continue
        try:
            result = _at(world, text, CAFE, TILL_1)
        except CodeMalformed:  # a broken container: malformed, never another error
            continue
        assert isinstance(result, Rejected), bit


# --- generation arguments -------------------------------------------------------------------


@pytest.mark.parametrize("version", BINDABLE)
def test_flag_and_binding_go_together(world: CodeServer, version: str) -> None:
    credential = world.enroll(version)
    codec = by_name(version)
    digest = MerchantBinding(CAFE).digest
    with pytest.raises(ValueError, match="together"):
        codec.generate(credential, step=STEP, counter=0, flags=BOUND)
    with pytest.raises(ValueError, match="together"):
        codec.generate(credential, step=STEP, counter=0, binding=digest)
    with pytest.raises(ValueError, match="32 bytes"):
        codec.generate(credential, step=STEP, counter=0, flags=BOUND, binding=digest[:16])


def test_v1_cannot_be_bound() -> None:
    assert not v1_numeric.CODEC.bindable
    credential = DeviceCredential("v1", b"\x00" * 5, b"k" * 32, hiding_key=b"h" * 32)
    with pytest.raises(ValueError, match="cannot be merchant-bound"):
        v1_numeric.CODEC.generate(
            credential, step=STEP, counter=0, binding=MerchantBinding(CAFE).digest
        )
