"""Properties of the three live versions: round trip, layout, windows, lifecycle, hostile input."""

from __future__ import annotations

import base64
import os
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from paycode.shared.checkdigit import damm_digit
from paycode.shared.errors import CodeMalformed, PaycodeError
from paycode.shared.timestep import STEP_SECONDS
from paycode.shared.verify import verify_code
from paycode.shared.versions import v1_numeric, v3_ed25519
from paycode.shared.versions.base import (
    Accepted,
    CodeVersion,
    DeviceCredential,
    Reason,
    Rejected,
    VerifierKeys,
    VersionStatus,
)
from paycode.shared.versions.registry import DEFAULT_STATUS, VERSIONS, by_name, route
from tests.support.protocol import CodeServer

NOW_S = 1_763_888_400.0
STEP = int(NOW_S // STEP_SECONDS)
VERSION_NAMES = [codec.version for codec in VERSIONS]


@pytest.fixture(scope="module")
def world() -> CodeServer:
    return CodeServer.new(NOW_S)


def _make(
    world: CodeServer, version: str, step: int = STEP, counter: int = 0, flags: int = 0
) -> str:
    credential = world.enroll(version)
    return by_name(version).generate(credential, step=step, counter=counter, flags=flags)


# --- layout ---------------------------------------------------------------------------------


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, v1_numeric.COUNTER_MAX),
    st.binary(min_size=32, max_size=32),
)
def test_v1_layout(step: int, counter: int, key: bytes) -> None:
    handle = v1_numeric.CODEC.new_handle()
    credential = DeviceCredential("v1", handle, key, hiding_key=key)
    code = v1_numeric.CODEC.generate(credential, step=step, counter=counter)
    assert len(code) == 24 and code.isdigit() and code.startswith("87")
    assert damm_digit(code[:-1]) == code[-1]
    assert handle.hex() not in code and str(int.from_bytes(handle, "big")) not in code


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_qr_versions_have_fixed_length(world: CodeServer, version: str) -> None:
    lengths = {len(_make(world, version, counter=c)) for c in range(5)}
    assert lengths == {43 if version == "v2" else 212}


def test_v3_is_an_emv_cpm_payload(world: CodeServer) -> None:
    from paycode.shared.emv.cpm import decode_cpm

    code = _make(world, "v3")
    assert code.startswith("hQVDUFY")
    payload = decode_cpm(code)
    assert payload.format_indicator == "CPV01"
    assert payload.applications[0].aid == v3_ed25519.AID


def test_prefixes_route_each_version(world: CodeServer) -> None:
    for codec in VERSIONS:
        assert route(_make(world, codec.version)) is codec


# --- round trip and the window --------------------------------------------------------------


@pytest.mark.parametrize("version", VERSION_NAMES)
def test_round_trip_and_distinct_codes_per_step(world: CodeServer, version: str) -> None:
    credential = world.enroll(version)
    codec = by_name(version)
    codes = [
        codec.generate(credential, step=STEP, counter=c) for c in range(codec.counter_max + 1)[:10]
    ]
    assert len(set(codes)) == len(codes)
    for counter, code in enumerate(codes):
        result = world.verify(code)
        assert isinstance(result, Accepted), result
        assert (result.step, result.counter, result.drift_steps) == (STEP, counter, 0)
    claim_keys = {world.verify(code).claim_key for code in codes}  # type: ignore[union-attr]
    assert len(claim_keys) == len(codes)


@pytest.mark.parametrize("version", VERSION_NAMES)
@pytest.mark.parametrize(
    ("offset_steps", "outcome"),
    [(-2, Reason.CODE_EXPIRED), (-1, None), (0, None), (1, None), (2, Reason.CODE_EXPIRED)],
)
def test_window(world: CodeServer, version: str, offset_steps: int, outcome: Reason | None) -> None:
    result = world.verify(_make(world, version, step=STEP + offset_steps))
    if outcome is None:
        assert isinstance(result, Accepted)
        assert result.drift_steps == offset_steps
    else:
        assert isinstance(result, Rejected) and result.reason is outcome
        assert result.device is not None  # genuine but stale: the server knows whose


@pytest.mark.parametrize("version", VERSION_NAMES)
def test_learned_drift_moves_the_window(world: CodeServer, version: str) -> None:
    credential = world.enroll(version, drift_steps=10)
    code = by_name(version).generate(credential, step=STEP + 10, counter=0)
    result = world.verify(code)
    assert isinstance(result, Accepted) and result.drift_steps == 10


def test_v1_resolves_the_step_across_a_hundred_boundary(world: CodeServer) -> None:
    boundary_step = (STEP // 100 + 1) * 100  # a step ending in 00
    credential = world.enroll("v1")
    code = v1_numeric.CODEC.generate(credential, step=boundary_step - 1, counter=2)
    result = world.verify(code, now_s=boundary_step * STEP_SECONDS + 1)
    assert isinstance(result, Accepted) and result.step == boundary_step - 1


@pytest.mark.parametrize("offset_s", [-600.0, -125.0, 125.0, 600.0])
def test_an_expired_code_names_no_time_and_carries_its_claim_to_burn(
    world: CodeServer, offset_s: float
) -> None:
    """No seconds figure (it would tell whoever holds the code when to come back), and the
    claim key the server stores so the code never pays later (issue 19, item 4)."""
    code = _make(world, "v2")
    result = world.verify(code, now_s=NOW_S - offset_s)
    assert isinstance(result, Rejected) and result.reason is Reason.CODE_EXPIRED
    assert "clock is wrong" in result.detail
    assert not any(char.isdigit() for char in result.detail), result.detail
    on_time = world.verify(code)
    assert isinstance(on_time, Accepted) and result.burn_key == on_time.claim_key


# --- lifecycle ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSION_NAMES)
def test_revoked_device_is_refused(world: CodeServer, version: str) -> None:
    credential = world.enroll(version)
    key = (version, credential.handle)
    world.registry.records[key] = replace(world.registry.records[key], revoked=True)
    result = world.verify(by_name(version).generate(credential, step=STEP, counter=0))
    assert isinstance(result, Rejected) and result.reason is Reason.DEVICE_REVOKED


@pytest.mark.parametrize("version", VERSION_NAMES)
def test_retired_and_deprecated_versions(world: CodeServer, version: str) -> None:
    code = _make(world, version)
    retired = {**DEFAULT_STATUS, version: VersionStatus.RETIRED}
    result = world.verify(code, statuses=retired)
    assert isinstance(result, Rejected) and result.reason is Reason.VERSION_RETIRED
    deprecated = {**DEFAULT_STATUS, version: VersionStatus.DEPRECATED}
    result = world.verify(code, statuses=deprecated)
    assert isinstance(result, Accepted) and result.deprecated


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_hiding_key_rotation_accepts_old_and_new(world: CodeServer, version: str) -> None:
    code = _make(world, version)
    rotated = VerifierKeys(
        hiding_keys={version: (os.urandom(32), world.hiding[version])},
        seal_keys=world.keys.seal_keys,
    )
    result = verify_code(code, world.registry.context(rotated, NOW_S))
    assert isinstance(result, Accepted)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_two_genuine_readings_are_ambiguous_not_guessed(world: CodeServer, version: str) -> None:
    code = _make(world, version)
    doubled = VerifierKeys(hiding_keys={version: (world.hiding[version],) * 2})
    result = verify_code(code, world.registry.context(doubled, NOW_S))
    assert isinstance(result, Rejected) and result.reason is Reason.CODE_AMBIGUOUS


def test_v3_seal_key_rotation(world: CodeServer) -> None:
    code = _make(world, "v3")
    old_first = VerifierKeys(
        seal_keys=(X25519PrivateKey.generate().private_bytes_raw(), *world.keys.seal_keys)
    )
    assert isinstance(verify_code(code, world.registry.context(old_first, NOW_S)), Accepted)


# --- forgery: wrong codes return results, never exceptions ----------------------------------


@pytest.mark.parametrize("version", VERSION_NAMES)
def test_every_single_character_change_is_refused(world: CodeServer, version: str) -> None:
    code = _make(world, version)
    alphabet = "0123456789" if version == "v1" else "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    start = len(by_name(version).prefix)
    for position in range(start, len(code), 3):
        replacement = next(c for c in alphabet if c != code[position])
        tampered = code[:position] + replacement + code[position + 1 :]
        try:
            result = world.verify(tampered)
        except CodeMalformed:
            continue
        assert isinstance(result, Rejected), (position, tampered)


def test_v3_signature_from_another_device_is_refused(world: CodeServer) -> None:
    victim = world.enroll("v3")
    attacker = world.enroll("v3")
    forged = v3_ed25519.CODEC.generate(
        replace(attacker, handle=victim.handle), step=STEP, counter=0
    )
    result = world.verify(forged)
    assert isinstance(result, Rejected) and result.reason is Reason.CODE_INVALID


def test_a_v3_device_stored_with_a_damaged_key_refuses_its_codes_instead_of_raising(
    world: CodeServer,
) -> None:
    """A stored public key of the wrong length (a damaged row) is no key: the code is refused
    as invalid, as every other signature check (wallet calls, key proofs, v4) already did,
    not a ValueError out of the verifier."""
    credential = world.enroll("v3")
    key = ("v3", credential.handle)
    world.registry.records[key] = replace(world.registry.records[key], key=b"\x01" * 31)
    result = world.verify(v3_ed25519.CODEC.generate(credential, step=STEP, counter=0))
    assert isinstance(result, Rejected) and result.reason is Reason.CODE_INVALID


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_device_key_of_another_device_is_refused(world: CodeServer, version: str) -> None:
    victim = world.enroll(version)
    attacker = world.enroll(version)
    forged = by_name(version).generate(
        replace(attacker, handle=victim.handle), step=STEP, counter=0
    )
    result = world.verify(forged)
    assert isinstance(result, Rejected) and result.reason is Reason.CODE_INVALID


@settings(max_examples=300)
@given(st.text(max_size=600))
def test_any_text_raises_only_code_malformed(text: str) -> None:
    _check_only_typed_errors(text)


@settings(max_examples=300)
@given(st.sampled_from(VERSIONS), st.text(max_size=260))
def test_prefixed_text_raises_only_code_malformed(codec: CodeVersion, tail: str) -> None:
    _check_only_typed_errors(codec.prefix + tail)


@settings(max_examples=300)
@given(st.binary(min_size=100, max_size=170))
def test_v3_shaped_base64_raises_only_code_malformed(tail: bytes) -> None:
    head = base64.b64decode(v3_ed25519.PREFIX)
    _check_only_typed_errors(base64.b64encode(head + tail).decode())


@settings(max_examples=300)
@given(st.text(alphabet="0123456789", min_size=22, max_size=22))
def test_random_v1_digits_are_refused(body: str) -> None:
    code = "87" + body[:21] + damm_digit("87" + body[:21])
    result = _WORLD.verify(code)
    assert isinstance(result, Rejected) and result.reason is Reason.CODE_INVALID


_WORLD = CodeServer.new(NOW_S)
for _ in range(50):
    _WORLD.enroll("v1")


def _check_only_typed_errors(text: str) -> None:
    try:
        result = _WORLD.verify(text)
    except PaycodeError as error:
        assert isinstance(error, CodeMalformed)
        assert error.code == "code_malformed"
    else:
        assert isinstance(result, Rejected)


def test_oversized_input_is_refused_before_work() -> None:
    with pytest.raises(CodeMalformed, match="at most 512"):
        route("87" * 1000)


def test_wrong_counter_or_flags_are_programmer_errors() -> None:
    credential = DeviceCredential("v1", b"\x00" * 5, b"k" * 32, hiding_key=b"h" * 32)
    with pytest.raises(ValueError, match="counter"):
        v1_numeric.CODEC.generate(credential, step=STEP, counter=10)
    with pytest.raises(ValueError, match="flags"):
        v1_numeric.CODEC.generate(credential, step=STEP, counter=0, flags=1)


def test_credential_repr_hides_keys() -> None:
    credential = DeviceCredential("v1", b"\x01" * 5, b"SECRETKEY" * 4, hiding_key=b"HIDINGKEY" * 4)
    assert "SECRET" not in repr(credential) and "HIDING" not in repr(credential)
