"""Write tests/vectors/mandate_consent.json: points-mandate consents and the exact bytes a
wallet signs for each (docs/spec.md §16, paycode.shared.points.consent_message).

A second implementation builds `message` from `consent` byte for byte and signs it with each
device key under `devices` (a v2 device's API key HMAC, a v3 device's Ed25519 key, as wallet
requests are signed) to get `signatures`; both primitives are deterministic, so the file is
reproducible. The references are chosen to exercise the canonical JSON's escaping (quotes,
backslash, control characters, DEL, non-ASCII, a character outside the BMP) even though the
server accepts only printable ASCII: the builders must agree on every string. Test keys are
derived from public labels: never use them outside tests.

Run: `python -m scripts.gen_mandate_vectors` (tests/webwallet/test_mandate_consent.py fails when
the file and this script disagree).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from paycode.shared import wallet_auth
from paycode.shared.points import Consent, consent_message
from paycode.shared.versions.base import DeviceCredential

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "mandate_consent.json"
BASE = Consent(
    merchant_id="mch_0000000000000001",
    currency="CNY",
    rate_points=100,
    rate_minor=100,
    cap_per_payment_points=500,
    cap_per_day_points=800,
    expires_at_s=1_800_000_000,
    device_id="dev_0000000000000001",
)
CASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("no reference", {}),
    ("customer number", {"reference": "member-42"}),
    ("largest terms", {
        "rate_points": 1_000_000, "rate_minor": 1_000_000, "cap_per_payment_points": 10**12,
        "cap_per_day_points": 10**12, "expires_at_s": 2**53 - 1, "currency": "KWD",
    }),
    ("quotes and backslash", {"reference": 'say "hi" \\ bye / ok'}),
    ("control characters and DEL", {"reference": "a\tb\nc\rd\be\ff\x00g\x1fh\x7f"}),
    ("non-ASCII and outside the BMP", {"reference": "café 会员 \U0001f600"}),
)  # fmt: skip


def _key(label: str) -> bytes:
    return hashlib.sha256(f"paycode test vector: mandate consent {label}".encode()).digest()


DEVICES = {
    "v2": DeviceCredential("v2", b"\x00" * 16, _key("v2 device key")),
    "v3": DeviceCredential("v3", b"\x00" * 16, _key("v3 ed25519 seed")),
}


def build() -> dict[str, Any]:
    vectors = []
    for name, changes in CASES:
        consent = Consent(**(asdict(BASE) | changes))
        message = consent_message(consent)
        vectors.append(
            {
                "name": name,
                "consent": asdict(consent),
                "message": message.decode("ascii"),
                "signatures": {
                    version: wallet_auth.sign(credential, message)
                    for version, credential in DEVICES.items()
                },
            }
        )
    return {
        "format": "paycode-mandate-consent-vectors/1",
        "devices": {
            "v2": {"device_key": DEVICES["v2"].secret.hex()},
            "v3": {"ed25519_seed": DEVICES["v3"].secret.hex()},
        },
        "vectors": vectors,
    }


def text() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=True) + "\n"


def main() -> int:
    OUT.write_text(text(), encoding="ascii")
    print(f"wrote {len(CASES)} vectors to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
