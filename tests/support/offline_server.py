"""A tiny HTTP server standing in for the payment server's offline endpoints, for the till's
sync and configure tests (the real ones are docs/offline.md 4.1 and 6.1):

    GET  /v1/merchant               whom the terminal collects for (configure proves its key)
    GET  /v1/offline/keys           tests.support.offline_till.keys_answer()
    POST /v1/offline/acceptances    checks the terminal signature, the Idempotency-Key, and
                                    the chain as the server does (seq = last + 1, prev = the
                                    SHA-256 of the previous accept line rebuilt from the body
                                    and the code); answers `paid` unless scripted otherwise

Real sockets, real HTTP: the till's client and its retries run unchanged against it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from paycode.merchant_pos.offline_records import GENESIS_HASH, chain_hash, encode
from paycode.shared import terminal_auth
from paycode.shared.versions import v4_offline
from tests.support.offline_till import MERCHANT_ID, NOW_S, TERMINAL_ID, keys_answer

KEY_ID = "term_key_1"
SECRET = bytes(range(32))

Reply = tuple[int, dict[str, Any]]


def problem(status: int, code: str) -> Reply:
    return status, {"type": "about:blank", "title": code, "status": status, "code": code,
                    "detail": f"scripted {code}"}  # fmt: skip


@dataclass
class OfflineServer:
    url: str = ""
    scripted: list[Reply] = field(default_factory=list)
    """Answers to the next acceptance requests, before any check; then the real behaviour."""
    keys_reply: Reply | None = None
    requests: list[tuple[str, str, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    answers: dict[str, Reply] = field(default_factory=dict)
    results: dict[int, tuple[str, int]] = field(default_factory=dict)
    """seq -> (result, paid_minor) for acceptances that settle other than `paid`."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted_ids(self) -> list[str]:
        return [b["id"] for m, p, _, b in self.requests if p == "/v1/offline/acceptances"]

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        body = json.loads(raw) if raw else {}
        with self.lock:
            self.requests.append((method, path, headers, body))
            if not _signed(method, path, headers, raw):
                return problem(401, "unauthorized")
            if method == "GET" and path == "/v1/merchant":
                return 200, {"merchant_id": MERCHANT_ID, "name": "Noodle Bar",
                             "currency": "CNY", "terminal_id": TERMINAL_ID}  # fmt: skip
            if method == "GET" and path == "/v1/offline/keys":
                return self.keys_reply or (200, keys_answer() | {"server_time": NOW_S})
            if method == "POST" and path == "/v1/offline/acceptances":
                return self._accept(headers, body)
            return problem(404, "not_found")

    def _accept(self, headers: dict[str, str], body: dict[str, Any]) -> Reply:
        if self.scripted:
            return self.scripted.pop(0)
        if headers.get("idempotency-key") != body.get("id"):
            return problem(400, "invalid_request")
        if body["id"] in self.answers:
            return self.answers[body["id"]]
        if body["seq"] != self.last_seq + 1 or body["prev"] != self.last_hash:
            return 409, {"code": "offline_out_of_order", "detail": "seq",
                         "expected_seq": self.last_seq + 1}  # fmt: skip
        code = v4_offline.parse(body["code"])
        line = encode({
            "amount_minor": body["amount_minor"], "at_s": body["at_s"],
            "cert": code.certificate.fields.cert_id.hex(), "code": body["code"],
            "counter": code.payment.counter, "currency": body["currency"], "id": body["id"],
            "kind": "accept", "order": body["merchant_order_id"], "prev": body["prev"],
            "seq": body["seq"], "v": 1,
        })  # fmt: skip
        self.last_seq, self.last_hash = body["seq"], chain_hash(line)
        result, paid = self.results.get(body["seq"], ("paid", body["amount_minor"]))
        loss = 0 if result in ("duplicate", "duplicate_order") else body["amount_minor"] - paid
        answer = {"result": result, "paid_minor": paid, "loss_minor": loss,
                  "payment_id": f"pay_{body['seq']:04d}", "server_time": NOW_S}  # fmt: skip
        reply: Reply = (201, answer)
        self.answers[body["id"]] = reply
        return reply


def _signed(method: str, path: str, headers: dict[str, str], raw: bytes) -> bool:
    if headers.get("paycode-key-id") != KEY_ID:
        return False
    return terminal_auth.signature_valid(
        SECRET, method, path, raw,
        timestamp_s=int(headers.get("paycode-timestamp", "0")),
        nonce=headers.get("paycode-nonce", ""),
        signature_b64=headers.get("paycode-signature", ""),
    )  # fmt: skip


@contextmanager
def offline_server() -> Iterator[OfflineServer]:
    state = OfflineServer()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            status, body = state.handle(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw
            )
            data = json.dumps(body).encode()
            self.send_response(status)
            kind = "application/problem+json" if status >= 400 else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll: shutdown() waits for the loop to notice, 0.5 s a test by default.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
