"""How a charge transaction ended: what paycode.server.charge.postgres and .steps both answer."""

from __future__ import annotations

from dataclasses import dataclass

TERMINAL_REVOKED = "terminal_revoked"
NONCE_REPLAYED = "nonce_replayed"
STORED = "stored"


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """`outcome` is a reply name of the plan, or TERMINAL_REVOKED / NONCE_REPLAYED (nothing
    stored), or RATE_LIMITED (nothing stored; `body` is the block's end, Unix seconds), or
    STORED (the key's earlier reply: `status`, `body`, `request_hash` are its)."""

    outcome: str
    status: int = 0
    body: str = ""
    request_hash: str = ""
