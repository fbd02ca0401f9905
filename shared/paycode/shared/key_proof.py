"""Proof of possession of a v3 device key at enrollment (docs/spec.md §6.1).

A v3 device sends only its public key; without a proof, a wallet could enroll a key it does
not hold (another device's, say), and the server would record this user as its holder. So the
device signs, with the new key, a message that binds the key to this one request:

    message = field("paycode-v3-key-proof") | field(version) | field(public_key)
              | field(bound_to) | field(idempotency_key)
    field(x) = u16_be(len(x)) | x
    bound_to = "session:" hex(SHA-256(session token))   (POST /v1/wallet/devices)
             | "device:" device_id of the signing device (POST /v1/wallet/devices/rotate)
    proof    = base64(Ed25519(sk_new, message))

Every field is length-prefixed, so no two different tuples give one message. The session or
device binds it to who enrolls; the request's Idempotency-Key (fresh per request, and part of
the request an idempotent retry repeats byte for byte) binds it to this request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared.keycheck import ed25519_signed

DOMAIN = b"paycode-v3-key-proof"
FIELD_BYTES_MAX = 0xFFFF
PROOF_BYTES = 64
PROOF_CHARS_MAX = 4 * ((PROOF_BYTES + 2) // 3)


@dataclass(frozen=True, slots=True)
class ProofScope:
    """What a proof binds besides the version and key: who enrolls, and which request."""

    bound_to: str
    idempotency_key: str


def session_scope(token: str, idempotency_key: str) -> ProofScope:
    """A password session's enrollment: bound to the token's hash, never the token itself."""
    return ProofScope(f"session:{hashlib.sha256(token.encode()).hexdigest()}", idempotency_key)


def device_scope(device_id: str, idempotency_key: str) -> ProofScope:
    """A rotation signed by an enrolled device: bound to that device."""
    return ProofScope(f"device:{device_id}", idempotency_key)


def _field(data: bytes) -> bytes:
    assert len(data) <= FIELD_BYTES_MAX
    return len(data).to_bytes(2, "big") + data


def proof_message(version: str, public_key: bytes, scope: ProofScope) -> bytes:
    bound_to, fresh = scope.bound_to.encode(), scope.idempotency_key.encode()
    parts = (DOMAIN, version.encode(), public_key, bound_to, fresh)
    return b"".join(_field(part) for part in parts)


def make_proof(seed: bytes, version: str, scope: ProofScope) -> str:
    """The wallet's proof (base64) that it holds the key of Ed25519 `seed`."""
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes_raw()
    return base64.b64encode(private.sign(proof_message(version, public, scope))).decode()


def proof_valid(proof: object, version: str, public_key: bytes, scope: ProofScope) -> bool:
    """True when `proof` is a base64 Ed25519 signature by `public_key` over the message."""
    if not isinstance(proof, str) or len(proof) > PROOF_CHARS_MAX:
        return False
    try:
        signature = base64.b64decode(proof, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(signature) != PROOF_BYTES:
        return False
    return ed25519_signed(public_key, signature, proof_message(version, public_key, scope))
