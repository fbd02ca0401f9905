"""The provisioning message both sides agree on (docs/api.md, "Enroll a device").

The server builds a grant with `build_grant`; the wallet turns it into a `DeviceCredential`
with `read_grant`, refusing anything incomplete. Symmetric versions receive their device key
here, exactly once; for v3 the device made its key pair and sent only the public half.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared.errors import EnrollmentInvalid, WeakKey
from paycode.shared.keycheck import check_x25519_public
from paycode.shared.timestep import STEP_SECONDS
from paycode.shared.versions.base import DeviceCredential, Rng
from paycode.shared.versions.registry import by_name

SYMMETRIC_KEY_BYTES = 32
ED25519_BYTES = 32
SERVER_TIME_MAX = 1e11
"""Unix seconds (the year 5138): the bound a grant's server_time must stay under."""


@dataclass(frozen=True, slots=True)
class GrantInfo:
    """The non-secret parts of a grant the wallet keeps beside the credential."""

    device_id: str
    version: str
    step_seconds: int
    counter_max: int
    server_time_s: float


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def new_ed25519_seed(rng: Rng = os.urandom) -> tuple[bytes, bytes]:
    """(private seed, public key) for a v3 device: the seed never leaves the phone."""
    seed = rng(ED25519_BYTES)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    return seed, public


def build_grant(
    *,
    version: str,
    device_id: str,
    handle: bytes,
    server_time_s: float,
    device_key: bytes = b"",
    hiding_key: bytes = b"",
    seal_public_key: bytes = b"",
) -> dict[str, object]:
    """The JSON body of a successful enrollment (server side)."""
    codec = by_name(version)
    grant: dict[str, object] = {
        "device_id": device_id,
        "version": version,
        "handle": handle.hex(),
        "step_seconds": STEP_SECONDS,
        "counter_max": codec.counter_max,
        "server_time": server_time_s,
    }
    if version == "v3":
        assert len(seal_public_key) == ED25519_BYTES and not device_key
        grant["seal_public_key"] = b64(seal_public_key)
    else:
        assert len(device_key) == SYMMETRIC_KEY_BYTES and len(hiding_key) == SYMMETRIC_KEY_BYTES
        grant["device_key"] = b64(device_key)
        grant["hiding_key"] = b64(hiding_key)
    return grant


def _field(grant: Mapping[str, object], name: str, kind: type) -> object:
    value = grant.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise EnrollmentInvalid(
            f"enrollment grant field {name!r} is missing or not {kind.__name__}"
        )
    return value


def _key_field(grant: Mapping[str, object], name: str, size: int) -> bytes:
    text = _field(grant, name, str)
    assert isinstance(text, str)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise EnrollmentInvalid(f"enrollment grant field {name!r} is not base64") from error
    if len(raw) != size:
        raise EnrollmentInvalid(f"enrollment grant field {name!r} must be {size} bytes")
    return raw


def read_grant(
    grant: Mapping[str, object], *, ed25519_seed: bytes = b""
) -> tuple[DeviceCredential, GrantInfo]:
    """Validate a grant and build the wallet's credential (wallet side)."""
    version = _field(grant, "version", str)
    assert isinstance(version, str)
    try:
        codec = by_name(version)
    except KeyError as error:
        raise EnrollmentInvalid(
            f"server granted an unknown code version {version[:8]!r}"
        ) from error
    handle_hex = _field(grant, "handle", str)
    assert isinstance(handle_hex, str)
    try:
        handle = bytes.fromhex(handle_hex)
    except ValueError as error:
        raise EnrollmentInvalid("enrollment grant field 'handle' is not hex") from error
    if len(handle) != codec.handle_bytes:
        raise EnrollmentInvalid("enrollment grant field 'handle' has the wrong length")
    if version == "v3":
        if len(ed25519_seed) != ED25519_BYTES:
            raise EnrollmentInvalid("a v3 enrollment needs the device's own Ed25519 seed")
        seal_public = _key_field(grant, "seal_public_key", ED25519_BYTES)
        try:
            check_x25519_public(seal_public)
        except WeakKey as error:
            # Every envelope sealed to a low-order key has an all-zero secret: it hides nothing.
            raise EnrollmentInvalid(f"the grant's seal key is refused: {error.message}") from error
        credential = DeviceCredential(version, handle, ed25519_seed, seal_public_key=seal_public)
    else:
        device_key = _key_field(grant, "device_key", SYMMETRIC_KEY_BYTES)
        hiding_key = _key_field(grant, "hiding_key", SYMMETRIC_KEY_BYTES)
        credential = DeviceCredential(version, handle, device_key, hiding_key=hiding_key)
    return credential, _grant_info(grant, version)


def _grant_info(grant: Mapping[str, object], version: str) -> GrantInfo:
    device_id = _field(grant, "device_id", str)
    step_seconds = _field(grant, "step_seconds", int)
    counter_max = _field(grant, "counter_max", int)
    server_time = grant.get("server_time")
    if not isinstance(server_time, int | float) or isinstance(server_time, bool):
        raise EnrollmentInvalid("enrollment grant field 'server_time' is missing or not a number")
    if not abs(server_time) < SERVER_TIME_MAX:  # NaN, Infinity or an int no float can hold
        raise EnrollmentInvalid("enrollment grant field 'server_time' is out of range")
    assert isinstance(device_id, str) and isinstance(step_seconds, int)
    assert isinstance(counter_max, int)
    if step_seconds != STEP_SECONDS:
        raise EnrollmentInvalid(f"server uses {step_seconds} s steps; this wallet knows 30 s")
    if not 0 <= counter_max <= by_name(version).counter_max:
        raise EnrollmentInvalid("enrollment grant field 'counter_max' is out of range")
    return GrantInfo(device_id, version, step_seconds, counter_max, float(server_time))
