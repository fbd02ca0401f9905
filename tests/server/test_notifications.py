"""Merchant notifications, on SQLite and PostgreSQL.

`paycode-server worker --once` passes deliver over real HTTP to a tiny receiver in a thread,
which checks every signature with the recipe printed in docs/operations.md (the snippet is
executed as it stands). Payments are made by the real wallet and terminal clients against the
app in this process (the `server` fixture); the outbox is read back with SQLAlchemy.

The commands (the worker pass, the shop's set-up) run the console script's `main(argv)` in this
process (tests.support.servers.run_cli_in_process): a process each would cost about a second.
The tests whose subject is the process spawn it: a worker killed mid-delivery, several workers
at once. The secret's test runs against a live server on each backend (the wire of this area),
whose own log is searched for the secret too.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, update

from paycode.client import online, pending
from paycode.client.wallet import Wallet
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.database.models import Merchant, Notification, Payment, new_id
from paycode.server.notifications import delivery
from paycode.shared.errors import ConfigError
from tests.support.servers import REPO_ROOT, LiveServer, Server, run_cli, run_cli_in_process
from tests.support.shop import (
    PASSWORD,
    code_of,
    new_merchant,
    new_order,
    new_phone,
    new_till,
    new_user,
    ok_json,
    refused,
    unique,
    use_fast_keystore,
)
from tests.support.shop import (
    Merchant as ShopMerchant,
)

PIN = "246810"
WAIT_S = 30.0
"""Upper bound on any wait for a delivery to arrive."""
WORKER_ENV = {
    "PAYCODE_NOTIFY_TIMEOUT_S": "3",
    "PAYCODE_NOTIFY_LEASE_S": "10",
    "PAYCODE_NOTIFY_ALLOW_PRIVATE": "1",  # the receivers listen on 127.0.0.1
}
RECEIVER_POLL_S = 0.02
"""How often a receiver's loop looks for shutdown (the default 0.5 s delays every teardown)."""


def _documented_verifier() -> Callable[..., bool]:
    """verify_notification() exactly as docs/operations.md prints it for merchants."""
    text = (REPO_ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    after = text[text.index("<!-- notification-verify") :]
    found = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert found is not None, "docs/operations.md lost its verification snippet"
    namespace: dict[str, Any] = {}
    exec(compile(found.group(1), "docs/operations.md", "exec"), namespace)
    verify: Callable[..., bool] = namespace["verify_notification"]
    return verify


VERIFY = _documented_verifier()


@pytest.fixture(autouse=True)
def _fast_wallets(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


# -- the merchant's endpoint -------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes
    valid: bool
    """The documented recipe accepted it with the secret the receiver held then."""
    received_at_s: float

    @property
    def event(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


class Receiver:
    """A merchant's notify URL: records every POST, verifies it, answers `status` (or hangs
    while `hang` is set, until `release`)."""

    def __init__(self) -> None:
        self.secret_b64 = ""
        self.status = 200
        self.hang = threading.Event()
        self.release = threading.Event()
        self.arrived = threading.Event()
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/paycode/notify"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": RECEIVER_POLL_S},
            daemon=True,
        )
        self._thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.record(dict(self.headers.items()), body, self.headers)
                if receiver.hang.is_set():
                    receiver.release.wait(WAIT_S)
                with contextlib.suppress(OSError):
                    self.send_response(receiver.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler

    def record(self, headers: dict[str, str], body: bytes, raw_headers: Any) -> None:
        valid = VERIFY(self.secret_b64, raw_headers, body)
        with self._lock:
            self.deliveries.append(Delivery(headers, body, valid, time.time()))
        self.arrived.set()

    def for_payment(self, payment_id: str) -> list[Delivery]:
        with self._lock:
            found = list(self.deliveries)
        return [d for d in found if d.event.get("payment", {}).get("payment_id") == payment_id]

    def for_merchant(self, merchant_id: str) -> list[Delivery]:
        with self._lock:
            found = list(self.deliveries)
        return [d for d in found if d.event.get("merchant_id") == merchant_id]

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    try:
        yield found
    finally:
        found.close()


# -- shops, customers, the worker --------------------------------------------------------------


def notified_merchant(server: Server, receiver: Receiver) -> ShopMerchant:
    """A merchant notified at the receiver's URL (as `merchants create --notify-url` makes it),
    with a terminal; the receiver checks signatures with the secret it issued."""
    shop = new_merchant(server, "Notified", notify_url=receiver.url)
    receiver.secret_b64 = shop.notify_secret_b64
    return shop


def customer(server: Server, home: Path, *limits: str, top_up: str = "500.00") -> Wallet:
    name = new_user(server, "payer", top_up=top_up)
    if limits:
        ok_json(server.cli_in_process("--json", "users", "limits", name, *limits))
    return new_phone(server, home / name, name, ["v2"])


def charge(shop: ShopMerchant, wallet: Wallet, amount: str, **extra: Any) -> dict[str, Any]:
    return shop.till.charge(code=code_of(wallet, "v2"), amount=amount, currency="CNY", **extra)


def worker(server: Server, **env: str) -> dict[str, Any]:
    """One `paycode-server worker --once` pass, run in this process; its JSON report."""
    done = run_cli_in_process(server.env | WORKER_ENV | env, "--json", "worker", "--once")
    return ok_json(done)


def worker_process(server: Server, **env: str) -> dict[str, Any]:
    """The same pass as a real process of its own, as an operator runs it."""
    done = run_cli(server.env | WORKER_ENV | env, "--json", "worker", "--once")
    return ok_json(done)


def outbox(server: Server, *, payment_id: str = "", merchant_id: str = "") -> list[Any]:
    statement = select(Notification).order_by(Notification.created_at_s)
    if payment_id:
        statement = statement.where(Notification.payment_id == payment_id)
    if merchant_id:
        statement = statement.where(Notification.merchant_id == merchant_id)
    with server.session() as session:
        return list(session.scalars(statement))


def payment_of(reply: dict[str, Any]) -> dict[str, Any]:
    """The payment in a reply, as a notification carries it."""
    return {key: value for key, value in reply.items() if key != "server_time"}


def delivered_types(receiver: Receiver, payment_id: str) -> list[str]:
    return [delivery.event["type"] for delivery in receiver.for_payment(payment_id)]


# -- what is told -------------------------------------------------------------------------------


def test_a_charge_is_told_once_signed(server: Server, receiver: Receiver, tmp_path: Path) -> None:
    shop = notified_merchant(server, receiver)
    paid = charge(shop, customer(server, tmp_path), "12.50", merchant_order_id="A-1")
    [row] = outbox(server, payment_id=paid["payment_id"])
    assert (row.event_type, row.attempts, row.delivered_at_s) == ("payment.succeeded", 0, None)
    assert row.event_id.startswith("evt_") and row.merchant_id == shop.merchant_id
    report = worker(server)["notifications"]
    assert report["delivered"] >= 1
    [got] = receiver.for_payment(paid["payment_id"])
    assert got.valid
    event = got.event
    assert got.headers["Paycode-Event-Id"] == event["event_id"] == row.event_id
    assert got.headers["Paycode-Event-Type"] == event["type"] == "payment.succeeded"
    assert got.headers["Content-Type"] == "application/json"
    assert event["merchant_id"] == shop.merchant_id and event["created_at"].endswith("Z")
    assert event["payment"] == payment_of(paid)
    assert got.body == row.payload.encode()
    [done] = outbox(server, payment_id=paid["payment_id"])
    assert done.delivered_at_s is not None and done.next_attempt_at_s is None
    assert (done.attempts, done.last_error, done.dead_at_s) == (1, None, None)
    worker(server)
    assert len(receiver.for_payment(paid["payment_id"])) == 1  # delivered: never again
    assert not VERIFY(shop.notify_secret_b64, got.headers, got.body + b" ")  # the recipe checks
    assert not VERIFY(base64.b64encode(b"k" * 32).decode(), got.headers, got.body)


def test_a_refund_is_told(server: Server, receiver: Receiver, tmp_path: Path) -> None:
    shop = notified_merchant(server, receiver)
    paid = charge(shop, customer(server, tmp_path), "10.00")
    refunded = shop.till.refund(paid["payment_id"], amount="2.50")
    worker(server)
    assert delivered_types(receiver, paid["payment_id"]) == [
        "payment.succeeded",
        "payment.refunded",
    ]
    told = receiver.for_payment(paid["payment_id"])[1]
    assert told.valid
    assert told.event["payment"] == refunded["payment"]
    assert told.event["payment"]["refunded_minor"] == 250
    assert told.event["refund"] == {
        "refund_id": refunded["refund_id"],
        "amount": "2.50",
        "amount_minor": 250,
        "currency": "CNY",
    }


def test_step_up_pending_then_cancelled(server: Server, receiver: Receiver, tmp_path: Path) -> None:
    shop = notified_merchant(server, receiver)
    waiting = charge(shop, customer(server, tmp_path, "--payment-max", "5.00"), "8.00")
    assert waiting["status"] == "pending_confirmation"
    worker(server)
    [first] = receiver.for_payment(waiting["payment_id"])
    assert first.valid and first.event["type"] == "payment.pending_confirmation"
    assert first.event["payment"]["status"] == "pending_confirmation"
    assert first.event["payment"]["confirm_by"] == waiting["confirm_by"]
    assert "code" not in first.event["payment"]  # the till's advice is not the payment
    gave_up = shop.till.cancel(waiting["payment_id"])
    shop.till.cancel(waiting["payment_id"])  # a second cancel changes nothing: no event
    worker(server)
    assert delivered_types(receiver, waiting["payment_id"]) == [
        "payment.pending_confirmation",
        "payment.cancelled",
    ]
    second = receiver.for_payment(waiting["payment_id"])[1]
    assert second.valid and second.event["payment"] == payment_of(gave_up)
    assert second.event["payment"]["failure_code"] == "cancelled_by_merchant"
    assert second.event["event_id"] != first.event["event_id"]


def test_the_customers_answers_are_told(server: Server, receiver: Receiver, tmp_path: Path) -> None:
    shop = notified_merchant(server, receiver)
    wallet = customer(server, tmp_path, "--payment-max", "5.00")
    pending.set_pin(wallet, password=PASSWORD, pin=PIN)
    confirmed, declined = charge(shop, wallet, "20.00"), charge(shop, wallet, "30.00")
    pending.confirm(wallet, confirmed["payment_id"], PIN)
    pending.decline(wallet, declined["payment_id"])
    worker(server)
    assert delivered_types(receiver, confirmed["payment_id"]) == [
        "payment.pending_confirmation",
        "payment.succeeded",
    ]
    assert delivered_types(receiver, declined["payment_id"]) == [
        "payment.pending_confirmation",
        "payment.declined",
    ]
    paid = receiver.for_payment(confirmed["payment_id"])[1].event["payment"]
    assert paid["status"] == "succeeded" and "confirm_by" not in paid
    said_no = receiver.for_payment(declined["payment_id"])[1].event["payment"]
    assert said_no["failure_code"] == "declined_by_customer"


def test_an_expired_confirmation_is_told(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    shop = notified_merchant(server, receiver)
    waiting = charge(shop, customer(server, tmp_path, "--payment-max", "5.00"), "9.00")
    with server.session() as session:
        session.execute(
            update(Notification)
            .where(Notification.payment_id == waiting["payment_id"])
            .values(next_attempt_at_s=None)  # only the worker's sweep is looked at here
        )
        session.execute(
            update(Payment)
            .where(Payment.id == waiting["payment_id"])
            .values(confirm_by_s=time.time() - 1)
        )
    worker(server)  # the sweep cancels it and writes the event; this pass delivers it
    [told] = receiver.for_payment(waiting["payment_id"])
    assert told.valid and told.event["type"] == "payment.cancelled"
    assert told.event["payment"]["failure_code"] == "confirmation_expired"


def test_a_failure_after_the_claim_is_told(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    shop = notified_merchant(server, receiver)
    wallet = customer(server, tmp_path, top_up="1.00")
    order = unique("order")
    refused("insufficient_funds", charge, shop, wallet, "5.00", merchant_order_id=order)
    [failed] = shop.till.payments_by_order(order)
    worker(server)
    [told] = receiver.for_payment(failed["payment_id"])
    assert told.valid and told.event["type"] == "payment.failed"
    assert told.event["payment"] == failed
    assert told.event["payment"]["failure_code"] == "insufficient_funds"


def test_a_collection_qr_payment_is_told(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    shop = notified_merchant(server, receiver)
    wallet = customer(server, tmp_path)
    order = new_order(shop.till, "3.00", "QR-told")
    paid = online.pay(wallet, qr_payload=order["qr_payload"], amount=None)
    worker(server)
    [told] = receiver.for_payment(paid["payment_id"])
    assert told.valid and told.event["type"] == "payment.succeeded"
    assert told.event["payment"]["code_version"] == "mpm"
    assert told.event["payment"]["amount"] == "3.00"


def test_nothing_is_told_for_a_charge_refused_before_the_claim(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    shop = notified_merchant(server, receiver)
    wallet = customer(server, tmp_path)
    code = code_of(wallet, "v2")
    shop.till.charge(code=code, amount="1.00", currency="CNY")
    assert len(outbox(server, merchant_id=shop.merchant_id)) == 1
    pay = shop.till.charge
    refused("code_replayed", lambda: pay(code=code, amount="1.00", currency="CNY"))
    refused("code_malformed", lambda: pay(code="12345", amount="1.00", currency="CNY"))
    fresh = code_of(wallet, "v2")
    refused("currency_mismatch", lambda: pay(code=fresh, amount="1.00", currency="USD"))
    assert len(outbox(server, merchant_id=shop.merchant_id)) == 1
    quiet = new_till(server)  # a merchant without a notify URL
    paid = quiet.charge(code=code_of(wallet, "v2"), amount="1.00", currency="CNY")
    assert outbox(server, payment_id=paid["payment_id"]) == []


# -- delivery: retries, dead rows, crashes, several workers ------------------------------------


def test_a_failing_endpoint_is_retried_with_back_off_then_dead(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    env = {"PAYCODE_NOTIFY_BACKOFF_S": "5", "PAYCODE_NOTIFY_ATTEMPTS_MAX": "3"}
    shop = notified_merchant(server, receiver)
    receiver.status = 500
    paid = charge(shop, customer(server, tmp_path), "4.00")
    pid = paid["payment_id"]

    def attempt(number: int) -> Any:
        assert worker(server, **env)["notifications"]["dead"] >= (number == 3)
        [row] = outbox(server, payment_id=pid)
        assert (row.attempts, row.last_error) == (number, "http 500")
        return row

    row = attempt(1)
    sent_s = receiver.for_payment(pid)[-1].received_at_s
    assert row.next_attempt_at_s == pytest.approx(sent_s + 5, abs=1.5)  # 5 s x 2^0
    worker(server, **env)  # not due yet: nothing is sent
    assert len(receiver.for_payment(pid)) == 1
    _make_due(server, pid)  # as if the 5 s had passed
    row = attempt(2)
    sent_s = receiver.for_payment(pid)[-1].received_at_s
    assert row.next_attempt_at_s == pytest.approx(sent_s + 10, abs=1.5)  # 5 s x 2^1
    _make_due(server, pid)
    row = attempt(3)
    assert row.dead_at_s is not None and row.next_attempt_at_s is None
    got = receiver.for_payment(pid)
    assert len(got) == 3 and all(delivery.valid for delivery in got)
    assert {delivery.headers["Paycode-Event-Id"] for delivery in got} == {row.event_id}
    worker(server, **env)  # dead: left alone
    assert len(receiver.for_payment(pid)) == 3
    dead = ok_json(
        server.cli_in_process("--json", "notifications", "list", "--dead", "--merchant", shop.name)
    )["notifications"]
    assert [(d["event_id"], d["state"], d["attempts"]) for d in dead] == [(row.event_id, "dead", 3)]
    assert dead[0]["last_error"] == "http 500" and "payload" not in dead[0]
    receiver.status = 204
    retried = ok_json(server.cli_in_process("--json", "notifications", "retry", row.event_id))
    assert (retried["state"], retried["attempts"]) == ("pending", 0)
    worker(server, **env)
    assert [d.headers["Paycode-Event-Id"] for d in receiver.for_payment(pid)] == [row.event_id] * 4
    assert outbox(server, payment_id=pid)[0].delivered_at_s is not None
    listed = ok_json(
        server.cli_in_process("--json", "notifications", "list", "--merchant", shop.merchant_id)
    )
    assert listed["notifications"] == []
    unknown = server.cli_in_process("--json", "notifications", "retry", "evt_nope")
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["error"]["code"] == "not_found"


def _make_due(server: Server, payment_id: str) -> None:
    with server.session() as session:
        session.execute(
            update(Notification)
            .where(Notification.payment_id == payment_id)
            .values(next_attempt_at_s=time.time())
        )


def test_a_worker_killed_mid_delivery_loses_nothing(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    # A short lease (it must outlast the POST's timeout): the test waits it out below.
    env = WORKER_ENV | {"PAYCODE_NOTIFY_TIMEOUT_S": "1", "PAYCODE_NOTIFY_LEASE_S": "1.5"}
    shop = notified_merchant(server, receiver)
    paid = charge(shop, customer(server, tmp_path), "6.00")
    pid = paid["payment_id"]
    receiver.hang.set()  # the endpoint takes the POST and does not answer
    process = subprocess.Popen(
        [sys.executable, "-m", "paycode.server.cli", "--json", "worker", "--once"],
        env=server.env | env,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while not receiver.for_payment(pid) and time.monotonic() < deadline:
            receiver.arrived.wait(0.05)
            receiver.arrived.clear()
        assert receiver.for_payment(pid), "the worker never sent the notification"
    finally:
        process.send_signal(signal.SIGKILL)  # claimed, sent, no answer recorded
        process.wait(timeout=WAIT_S)
    receiver.hang.clear()
    receiver.release.set()
    [row] = outbox(server, payment_id=pid)
    assert (row.attempts, row.delivered_at_s, row.last_error) == (1, None, None)
    assert row.next_attempt_at_s is not None and row.next_attempt_at_s > time.time()  # leased
    worker(server, **env)  # still leased by the dead worker: not sent
    assert len(receiver.for_payment(pid)) == 1
    time.sleep(max(0.0, row.next_attempt_at_s - time.time()) + 0.2)
    worker(server, **env)  # the lease ended: the row was due again
    got = receiver.for_payment(pid)
    assert len(got) == 2 and all(delivery.valid for delivery in got)
    assert got[0].headers["Paycode-Event-Id"] == got[1].headers["Paycode-Event-Id"] == row.event_id
    assert got[0].body == got[1].body  # a duplicate is the same event, byte for byte
    [done] = outbox(server, payment_id=pid)
    assert done.delivered_at_s is not None and done.attempts == 2


def test_several_workers_deliver_each_row_once(server: Server, receiver: Receiver) -> None:
    shop = notified_merchant(server, receiver)
    now_s = time.time()
    events = [new_id("evt") for _ in range(24)]
    with server.session() as session:
        for index, event_id in enumerate(events):
            payment = {"payment_id": f"pay_many{index:04d}", "merchant_id": shop.merchant_id}
            body = {"event_id": event_id, "merchant_id": shop.merchant_id, "payment": payment}
            session.add(
                Notification(
                    event_id=event_id,
                    merchant_id=shop.merchant_id,
                    payment_id=payment["payment_id"],
                    event_type="payment.succeeded",
                    payload=json.dumps(body),
                    created_at_s=now_s,
                    attempts=0,
                    next_attempt_at_s=now_s,
                )
            )
    env = {"PAYCODE_NOTIFY_BATCH_ROWS": "2"}
    with ThreadPoolExecutor(max_workers=3) as pool:
        reports = list(pool.map(lambda _i: worker_process(server, **env), range(3)))
    got = [d.headers["Paycode-Event-Id"] for d in receiver.for_merchant(shop.merchant_id)]
    assert sorted(got) == sorted(events)  # every row, each exactly once
    assert sum(r["notifications"]["delivered"] for r in reports) >= len(events)
    rows = outbox(server, merchant_id=shop.merchant_id)
    assert all(row.delivered_at_s is not None and row.attempts == 1 for row in rows)


# -- the merchant's requery, the secret -------------------------------------------------------


def _undelivered(till: TerminalClient, query: str = "") -> dict[str, Any]:
    reply: dict[str, Any] = till._call("GET", f"/v1/notifications/undelivered{query}")
    return reply


def test_requery_lists_what_is_still_undelivered(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    shop = notified_merchant(server, receiver)
    paid = charge(shop, customer(server, tmp_path), "7.00")
    listed = _undelivered(shop.till, "?older_than_s=0")
    [item] = [i for i in listed["items"] if i["payment"]["payment_id"] == paid["payment_id"]]
    assert (item["event_type"], item["state"], item["attempts"]) == (
        "payment.succeeded",
        "pending",
        0,
    )
    assert item["payment"] == payment_of(paid) and listed["older_than_s"] == 0
    assert item["event_id"] == outbox(server, payment_id=paid["payment_id"])[0].event_id
    assert _undelivered(shop.till)["items"] == []  # younger than the default 300 s
    other = new_till(server)
    assert _undelivered(other, "?older_than_s=0")["items"] == []  # another merchant's: not seen
    for bad in ("?older_than_s=abc", "?older_than_s=-1", "?older_than_s=99999999"):
        refused("invalid_request", _undelivered, shop.till, bad)
    worker(server)
    assert _undelivered(shop.till, "?older_than_s=0")["items"] == []


def test_the_secret_is_shown_only_when_issued(
    live_server: LiveServer, receiver: Receiver, tmp_path: Path
) -> None:
    shop = notified_merchant(live_server, receiver)
    raw = base64.b64decode(shop.notify_secret_b64)
    forms = {shop.notify_secret_b64, raw.hex(), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    paid = charge(shop, customer(live_server, tmp_path), "5.00")
    shop.till.refund(paid["payment_id"])
    commands = [
        run_cli_in_process(live_server.env | WORKER_ENV, "--json", "worker", "--once"),
        run_cli_in_process(live_server.env | WORKER_ENV, "worker", "--once"),
        live_server.cli_in_process("--json", "notifications", "list", "--all"),
        live_server.cli_in_process("notifications", "list", "--all"),
        live_server.cli_in_process("--json", "merchants", "notify-secret", shop.name),
    ]
    seen = [done.stdout for done in commands] + [done.stderr for done in commands]
    seen += [
        json.dumps(_undelivered(shop.till, "?older_than_s=0")),
        json.dumps(shop.till.payment(paid["payment_id"])),
    ]
    seen += [
        json.dumps(d.headers) + d.body.decode() for d in receiver.for_merchant(shop.merchant_id)
    ]
    status = json.loads(seen[4])
    assert status["notify_secret_set"] is True and "notify_secret" not in status
    assert len(receiver.for_payment(paid["payment_id"])) == 2
    with live_server.session() as session:
        rows = session.scalars(select(Notification.payload)).all()
        sealed = session.scalar(
            select(Merchant.notify_secret_sealed).where(Merchant.id == shop.merchant_id)
        )
    assert sealed is not None and raw not in sealed  # kept only sealed
    seen += list(rows)
    seen.append(live_server.log())
    for text in seen:
        for form in forms:
            assert form not in text
    rotated = ok_json(
        live_server.cli_in_process("--json", "merchants", "notify-secret", shop.name, "--rotate")
    )
    assert rotated["notify_secret"] != shop.notify_secret_b64
    assert len(base64.b64decode(rotated["notify_secret"])) == 32
    receiver.secret_b64 = rotated["notify_secret"]
    again = charge(shop, customer(live_server, tmp_path), "1.00")
    worker(live_server)
    [told] = receiver.for_payment(again["payment_id"])
    assert told.valid  # signed with the new secret
    assert not VERIFY(shop.notify_secret_b64, told.headers, told.body)  # not with the old one


def test_the_outbox_schema_matches_the_model(server: Server) -> None:
    """init-db (the migrations) made what server.models describes."""
    inspector = inspect(server.engine)
    columns = {c["name"] for c in inspector.get_columns("notification_outbox")}
    assert columns == set(Notification.__table__.columns.keys())
    indexed = {tuple(i["column_names"]) for i in inspector.get_indexes("notification_outbox")}
    assert {("next_attempt_at_s",), ("payment_id",), ("merchant_id", "created_at_s")} <= indexed
    merchant_columns = {c["name"] for c in inspector.get_columns("merchants")}
    assert {"key_id", "notify_secret_sealed", "notify_url"} <= merchant_columns


# -- pieces without a server -------------------------------------------------------------------


def test_back_off_doubles_up_to_its_cap() -> None:
    settings = delivery.DeliverySettings()
    waits = [settings.backoff_for_s(attempts) for attempts in range(1, 8)]
    assert waits == [30, 60, 120, 240, 480, 960, 1920]
    assert settings.backoff_for_s(100) == settings.backoff_max_s == 3600
    custom = delivery.DeliverySettings.parse({"PAYCODE_NOTIFY_BACKOFF_S": "0.5"})
    assert custom.backoff_for_s(3) == 2.0
    for env in (
        {"PAYCODE_NOTIFY_LEASE_S": "2", "PAYCODE_NOTIFY_TIMEOUT_S": "5"},
        {"PAYCODE_NOTIFY_ATTEMPTS_MAX": "0"},
        {"PAYCODE_NOTIFY_BACKOFF_S": "soon"},
        {"PAYCODE_NOTIFY_TIMEOUT_S": "nan"},
    ):
        with pytest.raises(ConfigError):
            delivery.DeliverySettings.parse(env)


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    elsewhere = Receiver()
    try:

        class Redirecting(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.send_response(307)
                self.send_header("Location", elsewhere.url)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": RECEIVER_POLL_S}, daemon=True
        )
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_port}/hook"
            error = delivery.post(url, b"{}", {}, timeout_s=5, allow_private=True)
        finally:
            server.shutdown()
            server.server_close()
        assert error == "http 307 (redirects are not followed)"
        assert elsewhere.deliveries == []
        receiver.status = 500
        answer = delivery.post(receiver.url, b"{}", {}, timeout_s=5, allow_private=True)
        assert answer == "http 500"
        receiver.status = 200
        assert delivery.post(receiver.url, b"{}", {}, timeout_s=5, allow_private=True) is None
        refused_error = delivery.post(
            "http://127.0.0.1:9/x", b"{}", {}, timeout_s=5, allow_private=True
        )
        assert refused_error is not None and refused_error.startswith("connection failed")
    finally:
        elsewhere.close()
