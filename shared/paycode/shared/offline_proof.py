"""Proof of possession of the fresh keys an offline allowance certifies (docs/offline.md §2.1).

The wallet sends only public keys; without a proof it could have the server certify a key it
does not hold. Each key signs a message binding it to the device asking, this request and its
place in the request:

    message = field("paycode-offline-key-proof") | field(public_key) | field(device_id)
              | field(idempotency_key) | field(u8(index))
    field(x) = u16_be(len(x)) | x
    proof    = Ed25519(sk_index, message)                                   64 bytes

Framed as the v3 enrollment proof (paycode.shared.key_proof), with its own domain, so a proof
of one kind is never a proof of the other.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared.keycheck import ed25519_signed

DOMAIN = b"paycode-offline-key-proof"
FIELD_BYTES_MAX = 0xFFFF
PROOF_BYTES = 64
INDEX_MAX = 255


def _field(data: bytes) -> bytes:
    if len(data) > FIELD_BYTES_MAX:
        raise ValueError("a proof field is at most 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def offline_key_proof_message(
    public_key: bytes, device_id: str, idempotency_key: str, index: int
) -> bytes:
    if not 0 <= index <= INDEX_MAX:
        raise ValueError(f"index must be within 0..{INDEX_MAX}")
    parts = (DOMAIN, public_key, device_id.encode(), idempotency_key.encode(), bytes([index]))
    return b"".join(_field(part) for part in parts)


def make_offline_key_proof(seed: bytes, device_id: str, idempotency_key: str, index: int) -> bytes:
    """The wallet's 64-byte proof that it holds the key of Ed25519 `seed`."""
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes_raw()
    return private.sign(offline_key_proof_message(public, device_id, idempotency_key, index))


def check_offline_key_proof(
    public_key: bytes, proof: bytes, device_id: str, idempotency_key: str, index: int
) -> bool:
    """True when `proof` is `public_key`'s signature over this request's message."""
    if len(proof) != PROOF_BYTES:
        return False
    message = offline_key_proof_message(public_key, device_id, idempotency_key, index)
    return ed25519_signed(public_key, proof, message)
