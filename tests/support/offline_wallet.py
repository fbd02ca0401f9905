"""A tiny stand-in for the server's offline allowance endpoints (docs/offline.md §2.1, §2.4),
mounted on the wallet's HTTP client (paycode.appkit.http_client.mount) in this process.

It speaks exactly the shapes of the design, checks every key's proof with the shared checker,
signs real certificates with a test server key (`paycode.shared.offline.sign_certificate`)
and keeps idempotent answers as the server does. It is a neighbour for shape and flow only:
the real endpoints are tests/server/'s. At each POST it reads the wallet's keystore from disk,
so a test can tell what the wallet had saved before it sent the request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.appkit.http_client import WireReply, WireRequest
from paycode.client.offline_state import SECTION
from paycode.client.wallet import Wallet
from paycode.shared.emv.qr_signature import from_b64url
from paycode.shared.enrollment import build_grant
from paycode.shared.errors import ServerUnreachable
from paycode.shared.offline import CertificateFields, key_id, sign_certificate
from paycode.shared.offline_proof import check_offline_key_proof

BASE_URL = "http://offline-fake.test:8080"
ALLOWANCES = "/v1/wallet/offline/allowances"
SERVER_SEED = hashlib.sha256(b"paycode test: the server's offline key").digest()
SERVER_PUBLIC = Ed25519PrivateKey.from_private_bytes(SERVER_SEED).public_key().public_bytes_raw()
KEY_ID = key_id(SERVER_PUBLIC)
SERVER_KEYS = {KEY_ID: SERVER_PUBLIC}
DEVICE_ID = "dev_offline_test"
BALANCE_MINOR = 100_000


def enroll(home: Path) -> Wallet:
    """A wallet with one v2 device, pointed at the fake (no password, no real server)."""
    wallet = Wallet.open_or_create(home)
    wallet.add_grant(
        build_grant(
            version="v2",
            device_id=DEVICE_ID,
            handle=os.urandom(8),
            server_time_s=1.0e9,
            device_key=os.urandom(32),
            hiding_key=os.urandom(32),
        )
    )
    wallet.set_server(BASE_URL, "alice")
    return wallet


def _reply(status: int, body: dict[str, Any]) -> WireReply:
    return WireReply(status, json.dumps(body).encode(), None)


def _problem(status: int, code: str, detail: str) -> WireReply:
    return _reply(status, {"type": "about:blank", "status": status, "code": code, "detail": detail})


@dataclass
class FakeOfflineServer:
    """Implements paycode.appkit.http_client.Transport."""

    home: Path
    now_s: float
    count_max: int = 16
    per_payment_max_minor: int = 10_000
    lifetime_s: int = 86_400
    grace_s: int = 259_200
    lose_next_answer: bool = False
    """Do the work and store the answer, then drop the connection (the answer is lost)."""
    refuse_next: tuple[int, str] | None = None
    edit_answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    requests: list[WireRequest] = field(default_factory=list)
    on_disk: list[dict[str, Any]] = field(default_factory=list)
    """The wallet's offline section as saved when each POST arrived."""
    stored: dict[str, tuple[str, int, dict[str, Any]]] = field(default_factory=dict)
    allowances: dict[str, dict[str, Any]] = field(default_factory=dict)
    returns: list[dict[str, Any]] = field(default_factory=list)
    funded_minor: int = 0

    def send(self, request: WireRequest, timeout_s: float) -> WireReply:
        self.requests.append(request)
        path = request.url.removeprefix(BASE_URL)
        if self.refuse_next is not None:
            (status, code), self.refuse_next = self.refuse_next, None
            return _problem(status, code, "refused by the test")
        if request.method == "GET":
            return self._get(path)
        assert "Paycode-Signature" in request.headers, "a wallet call is signed"
        self.on_disk.append(Wallet.open(self.home).section(SECTION))
        key = request.headers["Idempotency-Key"]
        digest = hashlib.sha256(request.body or b"").hexdigest()
        if key in self.stored:
            first, status, body = self.stored[key]
            if first != digest:
                return _problem(409, "idempotency_conflict", "another request had this key")
        else:
            status, body = self._work(request, path)
            self.stored[key] = (digest, status, body)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise ServerUnreachable("the test dropped the connection after the work")
        return _reply(status, body)

    def _get(self, path: str) -> WireReply:
        if path == ALLOWANCES:
            return _reply(200, {"allowances": list(self.allowances.values())})
        if path == "/v1/wallet/balance":
            balance = f"{(BALANCE_MINOR - self.funded_minor) / 100:.2f}"
            return _reply(200, {"accounts": [{"balance": balance, "currency": "CNY"}]})
        return _problem(404, "not_found", path)

    def _work(self, request: WireRequest, path: str) -> tuple[int, dict[str, Any]]:
        body = json.loads(request.body or b"{}")
        if path == ALLOWANCES:
            return self._take(request, body)
        if path.startswith(ALLOWANCES + "/") and path.endswith("/return"):
            return self._return(path.split("/")[-2], body)
        return 404, {"code": "not_found"}

    def _take(self, request: WireRequest, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        device, key = request.headers["Paycode-Device"], request.headers["Idempotency-Key"]
        keys = []
        for index, item in enumerate(body["keys"]):
            public_key, proof = from_b64url(item["public_key"]), from_b64url(item["proof"])
            assert public_key is not None and proof is not None, "keys are base64url"
            if not check_offline_key_proof(public_key, proof, device, key, index):
                return 400, {"code": "key_proof_invalid"}
            keys.append(public_key)
        amount, currency = body["amount_minor"], body["currency"]
        total = amount // len(keys)
        expiry = math.ceil((self.now_s + self.lifetime_s) / 3600) * 3600
        certificates = [
            sign_certificate(
                CertificateFields(
                    cert_id=secrets.token_bytes(16),
                    server_key_id=KEY_ID,
                    offline_pk=public_key,
                    currency=currency,
                    per_payment_cap_minor=min(total, self.per_payment_max_minor),
                    total_cap_minor=total,
                    count_max=self.count_max,
                    not_before_s=math.floor(self.now_s / 3600) * 3600,
                    expiry_s=expiry,
                ),
                SERVER_SEED,
            )
            for public_key in keys
        ]
        allowance_id = f"alw_{secrets.token_hex(8)}"
        self.funded_minor += amount
        answer = {
            "allowance_id": allowance_id,
            "amount_minor": amount,
            "currency": currency,
            "expires_at_s": expiry,
            "returns_at_s": expiry + self.grace_s,
            "certificates": [base64.b64encode(c).decode() for c in certificates],
            "balance_minor": BALANCE_MINOR - self.funded_minor,
        }
        self.allowances[allowance_id] = {
            "allowance_id": allowance_id,
            "state": "live",
            "amount_minor": amount,
            "currency": currency,
            "expires_at_s": expiry,
            "returns_at_s": expiry + self.grace_s,
            "settled_minor": 0,
            "returned_minor": 0,
        }
        return 201, self.edit_answer(answer) if self.edit_answer else answer

    def _return(self, allowance_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        listed = self.allowances.get(allowance_id)
        if listed is None:
            return 404, {"code": "not_found"}
        self.returns.append({"allowance_id": allowance_id, **body})
        held = sum(item["reserved_minor"] for item in body["certificates"])
        returned = listed["amount_minor"] - held
        listed |= {"state": "returned", "returned_minor": returned}
        self.funded_minor -= returned
        return 200, {
            "allowance_id": allowance_id,
            "state": "returned",
            "returned_minor": returned,
            "held_minor": held,
            "balance_minor": BALANCE_MINOR - self.funded_minor,
        }
