"""Signed terminal (POS) requests: HMAC-SHA256 with the terminal's secret (docs/api.md).

Headers: Paycode-Key-Id, Paycode-Timestamp, Paycode-Nonce, Paycode-Signature. The message is
wallet_auth.signing_message with the scheme "paycode-terminal-1": method, path with query,
timestamp, nonce and the body's SHA-256, so no part of the request can be changed or replayed.
"""

from __future__ import annotations

import base64
import hmac
import secrets

from paycode.shared.prf import mac
from paycode.shared.wallet_auth import signing_message

SCHEME = "paycode-terminal-1"
SECRET_BYTES = 32


def sign_headers(
    key_id: str, secret: bytes, method: str, path: str, body: bytes, *, timestamp_s: int
) -> dict[str, str]:
    nonce = secrets.token_hex(16)
    message = signing_message(method, path, timestamp_s, nonce, body, scheme=SCHEME)
    return {
        "Paycode-Key-Id": key_id,
        "Paycode-Timestamp": str(timestamp_s),
        "Paycode-Nonce": nonce,
        "Paycode-Signature": base64.b64encode(mac(secret, message)).decode(),
    }


def signature_valid(
    secret: bytes,
    method: str,
    path: str,
    body: bytes,
    *,
    timestamp_s: int,
    nonce: str,
    signature_b64: str,
) -> bool:
    try:
        message = signing_message(method, path, timestamp_s, nonce, body, scheme=SCHEME)
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:  # not base64; or a lone surrogate (UnicodeEncodeError): nobody signed it
        return False
    return hmac.compare_digest(mac(secret, message), signature)
