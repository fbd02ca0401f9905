"""Points mandates from the wallet (docs/api.md "Points mandates", docs/spec.md §16): bind a
merchant with a signed consent, list the mandates, revoke one.

The consent is signed with the same device key and primitive as the request itself
(paycode.shared.wallet_auth), over the bytes paycode.shared.points.consent_message builds, so
the server keeps evidence of exactly what the user agreed to.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

from paycode.client import online
from paycode.client.wallet import Wallet
from paycode.shared import wallet_auth
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import WalletError
from paycode.shared.points import POINTS_ASSET, Consent, consent_message

DAY_S = 86_400
EXPIRES_IN_DAYS_MAX = 730


def parse_rate(text: str) -> tuple[int, int]:
    """'100:1' -> (100 points, 1 minor unit); usage error otherwise."""
    points, colon, minor = text.partition(":")
    if not colon or not all(part.isascii() and part.isdigit() for part in (points, minor)):
        raise WalletError("--rate is POINTS:MINOR, e.g. 100:100", code=ErrorCode.USAGE)
    if int(points) < 1 or int(minor) < 1:
        raise WalletError("both sides of --rate must be 1 or more", code=ErrorCode.USAGE)
    return int(points), int(minor)


def bind(
    wallet: Wallet,
    *,
    merchant_id: str,
    currency: str,
    rate: tuple[int, int],
    per_payment_points: int,
    per_day_points: int,
    expires_in_days: int,
    reference: str = "",
) -> dict[str, Any]:
    """Sign the consent with the default device and bind the merchant (one Idempotency-Key)."""
    if not 1 <= expires_in_days <= EXPIRES_IN_DAYS_MAX:
        raise WalletError(
            f"--expires-in-days must be 1-{EXPIRES_IN_DAYS_MAX}", code=ErrorCode.USAGE
        )
    enrollment = wallet.enrollment()
    server_now_s = time.time() + wallet.clock_offset_s
    consent = Consent(
        merchant_id=merchant_id,
        currency=currency,
        rate_points=rate[0],
        rate_minor=rate[1],
        cap_per_payment_points=per_payment_points,
        cap_per_day_points=per_day_points,
        expires_at_s=int(server_now_s) + expires_in_days * DAY_S,
        device_id=enrollment.device_id,
        reference=reference,
    )
    body: dict[str, Any] = {
        "merchant_id": consent.merchant_id,
        "asset": POINTS_ASSET,
        "currency": consent.currency,
        "rate_points": consent.rate_points,
        "rate_minor": consent.rate_minor,
        "cap_per_payment_points": consent.cap_per_payment_points,
        "cap_per_day_points": consent.cap_per_day_points,
        "expires_at_s": consent.expires_at_s,
        "reference": consent.reference,
        "signature": wallet_auth.sign(enrollment.credential, consent_message(consent)),
    }
    reply = online.signed_call(
        wallet,
        "POST",
        "/v1/wallet/mandates",
        body,
        enrollment=enrollment,
        idempotency_key=str(uuid.uuid4()),
    )
    return reply.body


def mandates(wallet: Wallet) -> list[dict[str, Any]]:
    items = online.signed_call(wallet, "GET", "/v1/wallet/mandates").body.get("items")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def revoke(wallet: Wallet, mandate_id: str) -> dict[str, Any]:
    path = f"/v1/wallet/mandates/{quote(mandate_id, safe='')}/revoke"
    key = str(uuid.uuid4())
    return online.signed_call(wallet, "POST", path, {}, idempotency_key=key).body
