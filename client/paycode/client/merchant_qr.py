"""A merchant's QR, checked offline before the wallet shows or pays anything.

The server signs every payload it issues (docs/spec.md, section 12); the wallet keeps the
server's QR public keys (learned at enrollment, refreshed from GET /v1/wallet/qr-keys when a
payload names a key it does not hold) and says who is really paid: "Corner Cafe, Beijing —
verified", or a plain warning. An altered Paycode payload is refused here, before any call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paycode.client.wallet import Wallet
from paycode.shared.codes import ErrorCode
from paycode.shared.emv.collection import CollectionCode, read_collection
from paycode.shared.emv.qr_signature import (
    KEY_ID_CHARS_MAX,
    PUBLIC_KEY_BYTES,
    Verdict,
    from_b64url,
)
from paycode.shared.emv.qr_signature import verify_signature as verify
from paycode.shared.errors import WalletError, WeakKey
from paycode.shared.keycheck import check_ed25519_public

QR_KEYS_MAX = 16
WARNINGS = {
    Verdict.UNSIGNED: "not signed by a Paycode server: nobody vouches for this payee",
    Verdict.UNKNOWN_KEY: "signed with a key your server does not use: the payee is not verified",
}


@dataclass(frozen=True)
class CheckedQr:
    code: CollectionCode
    verdict: Verdict

    @property
    def payee(self) -> str:
        """Who is paid, as the consumer reads it before paying."""
        where = f"{self.code.display_name}, {self.code.display_city}"
        if self.verdict is Verdict.VERIFIED:
            return f"{where} — verified"
        return f"{where} — warning: {WARNINGS[self.verdict]}"


def parse_qr_keys(listed: object) -> dict[str, str]:
    """Key id -> public key (base64url) from a server reply; raises WalletError if malformed."""
    if not isinstance(listed, list) or len(listed) > QR_KEYS_MAX:
        raise WalletError("the server sent no list of QR keys", code=ErrorCode.ENROLLMENT_INVALID)
    keys: dict[str, str] = {}
    for item in listed:
        key_id = item.get("key_id") if isinstance(item, dict) else None
        public = item.get("public_key") if isinstance(item, dict) else None
        if not isinstance(key_id, str) or not 0 < len(key_id) <= KEY_ID_CHARS_MAX:
            raise WalletError("a QR key has no valid id", code=ErrorCode.ENROLLMENT_INVALID)
        raw = from_b64url(public) if isinstance(public, str) else None
        if not isinstance(public, str) or len(raw or b"") != PUBLIC_KEY_BYTES:
            raise WalletError("a QR key is not 32 bytes", code=ErrorCode.ENROLLMENT_INVALID)
        try:
            check_ed25519_public(raw or b"")
        except WeakKey as error:
            # A small-order key would let one fixed signature "verify" every merchant QR.
            message = f"a QR key is refused: {error.message}"
            raise WalletError(message, code=ErrorCode.WEAK_KEY) from error
        keys[key_id] = public
    return keys


def public_keys(stored: Mapping[str, str]) -> dict[str, bytes]:
    return {key_id: from_b64url(text) or b"" for key_id, text in stored.items()}


def check(wallet: Wallet, payload: str) -> CheckedQr:
    """Read and verify `payload` with the keys the wallet holds. Raises CodeMalformed for
    text that is not a Paycode collection QR, WalletError (qr_invalid) for an altered one."""
    code = read_collection(payload)
    verdict = verify(code.signature, public_keys(wallet.qr_keys))
    if verdict is Verdict.ALTERED:
        raise WalletError(
            "this QR was changed after the server signed it (a sticker over the real one?): "
            "not paying",
            code=ErrorCode.QR_INVALID,
        )
    return CheckedQr(code, verdict)


def checked_json(checked: CheckedQr) -> dict[str, Any]:
    code = checked.code
    return {
        "verdict": str(checked.verdict),
        "merchant_id": code.merchant_id,
        "name": code.display_name,
        "city": code.display_city,
        "amount": code.amount,
        "currency": code.currency,
        "order": code.order_token is not None,
        "reference": code.reference,
    }
