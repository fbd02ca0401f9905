"""Signed wallet requests: after enrollment a wallet proves itself with its device key.

No password or bearer token is stored on the phone. Each online call carries the device id,
a timestamp, a nonce and a signature over the request (docs/api.md, "Wallet request signing").
Symmetric devices sign with a key derived from the device key (never the code key itself);
v3 devices sign with their Ed25519 key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared.keycheck import ed25519_signed
from paycode.shared.prf import mac
from paycode.shared.versions.base import DeviceCredential

SCHEME = "paycode-wallet-1"
_API_KEY_LABEL = b"paycode-wallet-api-key"
TIMESTAMP_SKEW_S_MAX = 300


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    device_id: str
    timestamp_s: int
    nonce: str
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {
            "Paycode-Device": self.device_id,
            "Paycode-Timestamp": str(self.timestamp_s),
            "Paycode-Nonce": self.nonce,
            "Paycode-Signature": self.signature,
        }


def signing_message(
    method: str, path: str, timestamp_s: int, nonce: str, body: bytes, *, scheme: str = SCHEME
) -> bytes:
    """The exact bytes signed: scheme, method, path with query, timestamp, nonce, body digest."""
    digest = hashlib.sha256(body).hexdigest()
    lines = (scheme, method.upper(), path, str(timestamp_s), nonce, digest)
    return "\n".join(lines).encode()


def api_key(device_key: bytes) -> bytes:
    """Symmetric devices' request key: separated from the code key by a fixed label."""
    return mac(device_key, _API_KEY_LABEL)


def sign(credential: DeviceCredential, message: bytes) -> str:
    if credential.version == "v3":
        signature = Ed25519PrivateKey.from_private_bytes(credential.secret).sign(message)
    else:
        signature = mac(api_key(credential.secret), message)
    return base64.b64encode(signature).decode()


def signature_valid(version: str, device_key: bytes, message: bytes, signature_b64: str) -> bool:
    """Server side: `device_key` is the stored HMAC key (v1/v2) or Ed25519 public key (v3)."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        return False
    if version == "v3":
        return ed25519_signed(device_key, signature, message)
    return hmac.compare_digest(mac(api_key(device_key), message), signature)
