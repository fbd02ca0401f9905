"""Offline v4 codes and a till's keys copy, made in the test from seeds of public labels
(as docs/spec.md §11): a server offline key, allowances' device keys, certificates and codes
signed with `paycode.shared.offline`, and the `GET /v1/offline/keys` answer a till stores."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.merchant_pos import offline_keys
from paycode.merchant_pos.offline_keys import OfflineKeys
from paycode.shared import offline
from paycode.shared.binding import MerchantBinding
from paycode.shared.offline import CertificateFields, PaymentFields
from paycode.shared.timestep import step_at
from paycode.shared.versions import base, v4_offline

NOW_S = 1_763_888_400.0
MERCHANT_ID = "mer_noodle_bar"
TERMINAL_ID = "term_counter_1"


def seed(label: str) -> bytes:
    return hashlib.sha256(f"paycode-test-{label}".encode()).digest()


def public_key(key_seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(key_seed).public_key().public_bytes_raw()


SERVER_SEED = seed("server-offline-key")
SERVER_KEY_ID = offline.key_id(public_key(SERVER_SEED))


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def keys_answer(
    *,
    server_seeds: tuple[bytes, ...] = (SERVER_SEED,),
    accept_until_s: int = int(NOW_S) + 400_000,
    denied: tuple[str, ...] = (),
    floor_minor: int = 10_000,
    till_total_minor: int = 100_000,
    till_count_max: int = 200,
    unsynced_age_max_s: int = 86_400,
    currency: str = "CNY",
) -> dict[str, Any]:
    """`GET /v1/offline/keys` as the server answers it (docs/offline.md 4.1)."""
    return {
        "keys": [
            {
                "key_id": offline.key_id(public_key(s)).hex(),
                "public_key": b64url(public_key(s)),
                "status": "signing",
                "accept_until_s": accept_until_s,
            }
            for s in server_seeds
        ],
        "denied": [{"cert_id": c, "until_s": int(NOW_S) + 86_400} for c in denied],
        "limits": {
            "floor_minor": floor_minor,
            "till_total_minor": till_total_minor,
            "till_count_max": till_count_max,
            "unsynced_age_max_s": unsynced_age_max_s,
        },
        "currency": currency,
        "merchant_id": MERCHANT_ID,
        "terminal_id": TERMINAL_ID,
        "server_time": NOW_S,
    }


def till_keys(*, fetched_at_s: float = NOW_S, **changes: Any) -> OfflineKeys:
    return offline_keys.parse_answer(
        keys_answer(**changes), fetched_at_s=fetched_at_s, clock_offset_s=0.0
    )


def store_keys(home: Path, *, fetched_at_s: float, **changes: Any) -> OfflineKeys:
    keys = till_keys(fetched_at_s=fetched_at_s, **changes)
    offline_keys.save(home, keys)
    return keys


@dataclass
class Allowance:
    """One certificate and its device key: codes made one counter after another."""

    label: str
    per_payment_cap_minor: int = 10_000
    total_cap_minor: int = 12_500
    count_max: int = 16
    currency: str = "CNY"
    not_before_s: int = int(NOW_S) - 3600
    expiry_s: int = int(NOW_S) + 86_400
    server_seed: bytes = SERVER_SEED
    next_counter: int = field(default=0)

    @property
    def device_seed(self) -> bytes:
        return seed(f"device-{self.label}")

    @property
    def cert_id(self) -> bytes:
        return hashlib.sha256(f"cert-{self.label}".encode()).digest()[:16]

    def certificate(self) -> offline.Certificate:
        fields = CertificateFields(
            cert_id=self.cert_id,
            server_key_id=offline.key_id(public_key(self.server_seed)),
            offline_pk=public_key(self.device_seed),
            currency=self.currency,
            per_payment_cap_minor=self.per_payment_cap_minor,
            total_cap_minor=self.total_cap_minor,
            count_max=self.count_max,
            not_before_s=self.not_before_s,
            expiry_s=self.expiry_s,
        )
        return offline.parse_certificate(offline.sign_certificate(fields, self.server_seed))

    def code(
        self,
        *,
        at_s: float = NOW_S,
        amount_limit_minor: int = 10_000,
        counter: int | None = None,
        bound_to: MerchantBinding | None = None,
        flags: int = 0,
    ) -> str:
        """The next code's text (or the one of `counter`), made at `at_s`."""
        if counter is None:
            counter, self.next_counter = self.next_counter, self.next_counter + 1
        binding = b"" if bound_to is None else bound_to.digest
        payment = PaymentFields(
            counter=counter,
            step=step_at(at_s),
            amount_limit_minor=amount_limit_minor,
            flags=flags | (base.BOUND_FLAG if binding else 0),
        )
        return v4_offline.encode(
            offline.sign_payment(self.certificate(), payment, self.device_seed, binding)
        )

    def code_signed_anyway(self, payment: PaymentFields) -> str:
        """A code whose fields the honest builder would refuse (unknown flags, a counter past
        the count), signed by the device all the same."""
        certificate = self.certificate()
        message = offline.device_message(certificate.raw, offline.pack_payment(payment))
        signature = Ed25519PrivateKey.from_private_bytes(self.device_seed).sign(message)
        return v4_offline.encode(offline.OfflineCode(certificate, payment, signature))
