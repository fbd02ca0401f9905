"""7. Authorization matrix: who may do what to whose data, one live request per cell.

One table of (actor, action, target, expected status and stable code), run by one loop against
a live server: `paycode-server serve` (gunicorn, 2 workers) on its own PostgreSQL database, and
in FULL mode the same table again on `paycode-server run` over SQLite. Every cell is a real
signed HTTP request; nothing is mocked.

    terminals of merchant A against merchant B's payments (read, order lookup, refund, cancel,
        settlement, undelivered notifications) and against A's own
    wallets of user A against user B (balance, history, devices, pending, confirm, decline,
        revoke a device) and A's own
    revoked devices, a retired code version, expired and forged session tokens, replayed
        signatures, stale timestamps, unknown key ids, wrong secrets, tampered body, path,
        query and method, a revoked terminal, a merchant's IP allow-list
    the merchant dashboard (another merchant's refund, no session, no or foreign CSRF token,
        an expired session) and who may read /metrics

Each cell is judged on its status; a refusal under /v1 or /metrics must be
`application/problem+json` carrying the stable code; an answer that is allowed must show only
the caller's own data. Around every cell the bank is read (every balance, the ledger's sum and
size, every payment's status and refunds, every device's revocation): a refused cell must leave
all of it exactly as it was, an allowed one moves money only where the table says so, and the
ledger always sums to zero.

Time is moved for one thing only: the wallet session token's expiry, which no setting shortens
(ServerConfig.session_ttl_s is not read from the environment), is set in the past in its row.
The users, merchants and terminals come from the one shop builder (tests/support/shop.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import json
import re
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from paycode.client import online
from paycode.client.wallet import Wallet
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.books import settlement
from paycode.server.dashboard import access
from paycode.server.http.problems import PROBLEM_BASE
from paycode.server.safety.limits import LimitSettings
from paycode.shared import terminal_auth, wallet_auth
from paycode.shared.emv.collection import build_collection_payload, read_collection
from paycode.shared.enrollment import b64, new_ed25519_seed
from paycode.shared.key_proof import make_proof, session_scope
from paycode.shared.prf import mac
from paycode.shared.versions.base import DeviceCredential
from tests.reliability.figures import Figures, Scale, current_scale
from tests.support.servers import Server, postgres_database, start_server
from tests.support.shop import (
    PASSWORD,
    Merchant,
    code_of,
    new_merchant,
    new_phone,
    new_terminal,
    new_user,
    open_bank,
    set_limits,
    use_fast_keystore,
    user_id,
)

SECTION = "7. Authorization matrix"
HTTP_TIMEOUT_S = 15.0
STATUSES_TTL_S = 0.2
"""PAYCODE_VERSION_STATUSES_TTL_S of the servers here: a retirement shows within it."""
DEAD_HOOK = "http://127.0.0.1:9/hook"
"""A notify URL nobody listens on: the merchants' events stay undelivered (no worker runs)."""
DASHBOARD_PASSWORD = "authz dashboard password"
METRICS_TOKEN = "authz-metrics-token-0123456789abcdef"
PIN = {"A": "402913", "B": "736251"}
SMALL, BIG = "10.00", "80.00"
"""Charges at or below the users' password-free limit (50.00) pay at once; BIG ones wait."""
PROXY_HEADERS = {
    "X-Forwarded-For": "203.0.113.7",
    "Forwarded": "for=203.0.113.7",
    "X-Real-IP": "203.0.113.7",
}
ALLOWED_EFFECTS = ("none", "state", "money")


def _backends() -> list[Any]:
    """PostgreSQL always; SQLite too in FULL mode (no skipped test in SHORT)."""
    chosen = [pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]
    if current_scale().full:
        chosen.append(pytest.param("sqlite", id="sqlite"))
    return chosen


# -- raw HTTP and signing ------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str:
        return (self.headers.get(name.lower()) or [""])[0]

    def json(self) -> dict[str, Any]:
        try:
            found = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return {}
        return found if isinstance(found, dict) else {}

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def exchange(base_url: str, req: Req) -> Reply:
    """One request on its own connection; redirects are answers, never followed."""
    parts = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(
        parts.hostname or "", parts.port, timeout=HTTP_TIMEOUT_S
    )
    try:
        body = req.body if req.method != "GET" else None
        connection.request(req.method, req.path, body=body, headers=req.headers)
        response = connection.getresponse()
        data = response.read()
        headers: dict[str, list[str]] = {}
        for name, value in response.getheaders():
            headers.setdefault(name.lower(), []).append(value)
    finally:
        connection.close()
    content_type = (headers.get("content-type") or [""])[0].split(";")[0].strip()
    return Reply(response.status, content_type, headers, data)


def json_bytes(payload: dict[str, Any] | None) -> bytes:
    return b"" if payload is None else json.dumps(payload).encode()


def by_terminal(
    key: Merchant,
    method: str,
    path: str,
    payload: dict[str, Any] | None = None,
    *,
    skew_s: int = 0,
    key_id: str | None = None,
    secret: bytes | None = None,
    sign_method: str | None = None,
    sign_path: str | None = None,
    signed_payload: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Req:
    """A request signed as shared.terminal_auth signs it; the keyword arguments forge or
    tamper with one part of it (the signature is over `sign_*` and `signed_payload`)."""
    body = json_bytes(payload)
    signed_body = body if signed_payload is None else json_bytes(signed_payload)
    timestamp_s = int(time.time()) + skew_s
    nonce = secrets.token_hex(16)
    message = wallet_auth.signing_message(
        sign_method or method,
        sign_path or path,
        timestamp_s,
        nonce,
        signed_body,
        scheme=terminal_auth.SCHEME,
    )
    sent = {
        "Paycode-Key-Id": key_id or key.key_id,
        "Paycode-Timestamp": str(timestamp_s),
        "Paycode-Nonce": nonce,
        "Paycode-Signature": base64.b64encode(mac(secret or key.secret, message)).decode(),
    }
    if method == "POST":
        sent |= {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
    return Req(method, path, body, sent | (headers or {}))


@dataclass(frozen=True)
class Phone:
    device_id: str
    credential: DeviceCredential = field(repr=False)
    user: str


def by_device(
    phone: Phone,
    method: str,
    path: str,
    payload: dict[str, Any] | None = None,
    *,
    skew_s: int = 0,
    device_id: str | None = None,
    sign_path: str | None = None,
    signed_payload: dict[str, Any] | None = None,
) -> Req:
    """A request signed by a device as shared.wallet_auth signs it (see by_terminal)."""
    body = json_bytes(payload)
    signed_body = body if signed_payload is None else json_bytes(signed_payload)
    timestamp_s = int(time.time()) + skew_s
    nonce = secrets.token_hex(16)
    message = wallet_auth.signing_message(
        method, sign_path or path, timestamp_s, nonce, signed_body
    )
    sent = wallet_auth.SignedHeaders(
        device_id or phone.device_id,
        timestamp_s,
        nonce,
        wallet_auth.sign(phone.credential, message),
    ).as_dict()
    if method == "POST":
        sent |= {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
    return Req(method, path, body, sent)


# -- the bank as it stands ----------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    balances: dict[int, int]
    ledger_sum_minor: int
    transactions: int
    refunds: int
    payments: dict[str, tuple[str, int]]
    devices: dict[str, bool]

    def money(self) -> tuple[Any, ...]:
        return (self.balances, self.ledger_sum_minor, self.transactions, self.refunds)


def snapshot(server: Server) -> Snapshot:
    with server.engine.connect() as connection:

        def rows(query: str) -> list[Any]:
            return list(connection.execute(text(query)).all())

        return Snapshot(
            balances={row[0]: row[1] for row in rows("SELECT id, balance_minor FROM accounts")},
            ledger_sum_minor=int(
                rows("SELECT COALESCE(SUM(amount_minor), 0) FROM ledger_entries")[0][0]
            ),
            transactions=int(rows("SELECT COUNT(*) FROM ledger_transactions")[0][0]),
            refunds=int(rows("SELECT COUNT(*) FROM refunds")[0][0]),
            payments={
                row[0]: (row[1], row[2])
                for row in rows("SELECT id, status, refunded_minor FROM payments")
            },
            devices={
                row[0]: row[1] is not None for row in rows("SELECT id, revoked_at_s FROM devices")
            },
        )


# -- the world the matrix runs in ---------------------------------------------------------------


@dataclass
class Principals:
    """Two users, four merchants and every credential the matrix acts with (terminals,
    wallets, dashboard cookies, wallet and metrics tokens), made fresh for each round."""

    server: Server
    today: str
    tag: str
    users: dict[str, str] = field(default_factory=dict)
    """"A", "B" -> user id."""
    user_names: dict[str, str] = field(default_factory=dict)
    merchants: dict[str, str] = field(default_factory=dict)
    """"A", "B", "C" (allow-list excludes loopback), "D" (allow-list is loopback) -> id."""
    terminals: dict[str, Merchant] = field(default_factory=dict)
    """Merchant letter -> its terminal; "R": A's second terminal, revoked."""
    wallets: dict[str, Wallet] = field(default_factory=dict)
    """"A1" (v1, v2, v3), "A2" (v2; revoked in the matrix), "B" (v3)."""
    payments: dict[str, str] = field(default_factory=dict)
    orders: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    """Dashboard session tokens: "A", "B", "A_expired"."""
    csrf: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    """Wallet session tokens: "expired"."""
    metrics_token: str | None = None

    def send(self, req: Req) -> Reply:
        return exchange(self.server.url, req)

    def phone(self, wallet: str, version: str) -> Phone:
        enrollment = self.wallets[wallet].enrollments()[version]
        return Phone(enrollment.device_id, enrollment.credential, wallet[0])

    def code(self, wallet: str, version: str) -> str:
        return code_of(self.wallets[wallet], version)

    def devices_of_user(self, letter: str) -> set[str]:
        with self.server.engine.connect() as connection:
            found = connection.execute(
                text("SELECT id FROM devices WHERE user_id = :u"), {"u": self.users[letter]}
            )
            return {row[0] for row in found}

    def refunded_minor(self, payment: str) -> int:
        with self.server.engine.connect() as connection:
            value = connection.execute(
                text("SELECT refunded_minor FROM payments WHERE id = :p"),
                {"p": self.payments[payment]},
            ).scalar_one()
            return int(value)


def _set_version(server: Server, action: str, version: str) -> None:
    done = server.cli_in_process("versions", action, version)
    assert done.returncode == 0, done.stdout + done.stderr
    time.sleep(STATUSES_TTL_S + 0.2)  # every worker's cache of the statuses has expired


def build_principals(server: Server, home: Path, round_no: int) -> Principals:
    """Users A and B with wallets, merchants A, B, C, D with terminals, payments of each, two
    dashboard log-ins, a revoked terminal, and code version v1 retired at the end."""
    tag = f"{round_no}{secrets.token_hex(3)}"
    world = Principals(server, "", tag)
    if round_no > 0:
        _set_version(server, "activate", "v1")  # the previous round retired it
    allow_list = _merchant_behind_allow_list(server, f"Authz C {tag}")
    _accounts(world)
    world.terminals["C"] = allow_list
    world.merchants["C"] = allow_list.merchant_id
    world.wallets = {
        "A1": new_phone(server, home / "A1", world.user_names["A"], ["v1", "v2", "v3"]),
        "A2": new_phone(server, home / "A2", world.user_names["A"], ["v2"]),
        "B": new_phone(server, home / "B", world.user_names["B"], ["v3"]),
    }
    for letter, wallet in (("A", world.wallets["A1"]), ("B", world.wallets["B"])):
        online.signed_call(
            wallet,
            "POST",
            "/v1/wallet/pin",
            {"password": PASSWORD, "pin": PIN[letter]},
            enrollment=wallet.enrollment("v3"),
            idempotency_key=str(uuid.uuid4()),
        )
    _payments(world)
    world.today = _day_of(world, world.payments["A"])
    _revoke_terminal(world)
    _dashboard_sessions(world)
    _wallet_tokens(world)
    _set_version(server, "retire", "v1")
    return world


def _merchant_behind_allow_list(server: Server, name: str) -> Merchant:
    """Merchant C, made by the console script's main (in this process: a subprocess costs a
    second of start-up) with `--allow-ip 10.0.0.0/8`: its terminals may not call from 127.0.0.1."""
    made = server.cli_in_process("--json", "merchants", "create", name, "--allow-ip", "10.0.0.0/8")
    assert made.returncode == 0, made.stdout + made.stderr
    merchant = json.loads(made.stdout)["merchant"]
    assert merchant["allowed_networks"] == ["10.0.0.0/8"]
    created = server.cli_in_process("--json", "terminals", "create", name)
    assert created.returncode == 0, created.stdout + created.stderr
    terminal = json.loads(created.stdout)
    secret = base64.b64decode(terminal["secret"])
    return Merchant(merchant["name"], merchant["id"], terminal["key_id"], secret)


def _accounts(world: Principals) -> None:
    """Users A and B (password-free up to 50.00 a payment) and merchants A, B (a notify URL
    nobody listens on, a dashboard password) and D (allow-list 127.0.0.0/8), each with a
    terminal, and A's second terminal R, from the one shop builder (tests/support/shop.py)."""
    server = world.server
    for letter in ("A", "B"):
        name = new_user(server, f"authz_{letter.lower()}", top_up="1000.00")
        set_limits(server, name, payment_max="50.00", daily_max="100000.00", daily_count_max=1000)
        world.users[letter], world.user_names[letter] = user_id(server, name), name
    for letter in ("A", "B", "D"):
        made = new_merchant(
            server,
            f"Authz_{letter}",
            notify_url=DEAD_HOOK if letter != "D" else None,
            allow_ips=["127.0.0.0/8"] if letter == "D" else None,
            notify_secret=True,
            dashboard_password=DASHBOARD_PASSWORD if letter != "D" else None,
        )
        world.merchants[letter], world.terminals[letter] = made.merchant_id, made
    world.terminals["R"] = new_terminal(server, world.terminals["A"])


def _till(world: Principals, letter: str) -> TerminalClient:
    return world.terminals[letter].till_at(world.server.url)


def _payments(world: Principals) -> None:
    """A and B: one paid payment each (with an order id) and payments waiting for the PIN."""
    for letter, wallet in (("A", "A1"), ("B", "B")):
        order = f"ORD-{letter}-{secrets.token_hex(4)}"
        paid = _till(world, letter).charge(
            code=world.code(wallet, "v3"), amount=SMALL, currency="CNY", merchant_order_id=order
        )
        assert paid["status"] == "succeeded", paid
        world.payments[letter], world.orders[letter] = paid["payment_id"], order
    waiting = [("A", "A1", "A_wait1"), ("A", "A1", "A_wait2"), ("A", "A1", "A_wait3")]
    for letter, wallet, name in [*waiting, ("B", "B", "B_wait")]:
        pending = _till(world, letter).charge(
            code=world.code(wallet, "v3"), amount=BIG, currency="CNY"
        )
        assert pending["status"] == "pending_confirmation", pending
        world.payments[name] = pending["payment_id"]


def _day_of(world: Principals, payment_id: str) -> str:
    """The settlement day a payment belongs to (PAYCODE_LIMIT_DAY_OFFSET_MINUTES)."""
    with world.server.engine.connect() as connection:
        created_at_s = connection.execute(
            text("SELECT created_at_s FROM payments WHERE id = :p"), {"p": payment_id}
        ).scalar_one()
    day = LimitSettings.parse(world.server.env).day(float(created_at_s))
    return (settlement.EPOCH + dt.timedelta(days=day)).isoformat()


def _revoke_terminal(world: Principals) -> None:
    """Terminal R answers once (so a worker caches its secret), then is revoked by
    `paycode-server terminals revoke` (its main, in this process)."""
    assert _till(world, "R").merchant()["merchant_id"] == world.merchants["A"]
    done = world.server.cli_in_process("terminals", "revoke", world.terminals["R"].key_id)
    assert done.returncode == 0, done.stdout + done.stderr


def _dashboard_login(world: Principals, letter: str) -> str:
    name = world.terminals[letter].name
    form = urllib.parse.urlencode({"name": name, "password": DASHBOARD_PASSWORD}).encode()
    reply = world.send(
        Req(
            "POST",
            "/dashboard/login",
            form,
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
    )
    assert reply.status == 302, (reply.status, reply.text[:300])
    cookie = reply.header("Set-Cookie")
    found = re.match(rf"{access.COOKIE_NAME}=([^;]+)", cookie)
    assert found is not None, cookie
    return found.group(1)


def _dashboard_sessions(world: Principals) -> None:
    for letter in ("A", "B"):
        token = _dashboard_login(world, letter)
        page = world.send(dashboard_get("/dashboard/", token))
        found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
        assert page.status == 200 and found is not None, page.status
        world.cookies[letter], world.csrf[letter] = token, found.group(1)
    expired = _dashboard_login(world, "A")
    with world.server.session() as session:
        session.execute(
            text("UPDATE merchant_sessions SET expires_at_s = :past WHERE token_hash = :hash"),
            {"past": time.time() - 1, "hash": hashlib.sha256(expired.encode()).hexdigest()},
        )
    world.cookies["A_expired"] = expired


def _wallet_tokens(world: Principals) -> None:
    """A session token whose expiry is moved into the past (no setting shortens the TTL)."""
    token = _wallet_login(world, "A")
    with world.server.session() as session:
        session.execute(
            text("UPDATE wallet_sessions SET expires_at_s = :past WHERE token_hash = :hash"),
            {"past": time.time() - 1, "hash": hashlib.sha256(token.encode()).hexdigest()},
        )
    world.tokens["expired"] = token


def _wallet_login(world: Principals, letter: str) -> str:
    payload = {"user": world.user_names[letter], "password": PASSWORD}
    reply = world.send(
        Req(
            "POST", "/v1/wallet/sessions", json_bytes(payload), {"Content-Type": "application/json"}
        )
    )
    assert reply.status == 201, reply.text[:300]
    return str(reply.json()["token"])


def dashboard_get(path: str, cookie: str | None) -> Req:
    headers = {} if cookie is None else {"Cookie": f"{access.COOKIE_NAME}={cookie}"}
    return Req("GET", path, b"", headers)


def dashboard_post(path: str, cookie: str | None, form: dict[str, str]) -> Req:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie is not None:
        headers["Cookie"] = f"{access.COOKIE_NAME}={cookie}"
    return Req("POST", path, urllib.parse.urlencode(form).encode(), headers)


# -- the table ----------------------------------------------------------------------------------


Check = Callable[[Reply], list[str]]


@dataclass
class Cell:
    group: str
    actor: str
    action: str
    target: str
    status: int
    code: str | None
    """The stable code of a refusal (None for an allowed cell); the dashboard's refusals are
    HTML pages and redirects, so theirs is only a label ("login", "csrf", "not_found")."""
    send: Callable[[], Reply] = field(repr=False)
    effect: str = "none"
    """Allowed cells: "none" (nothing changes), "state" (no money moves), "money"."""
    check: Check | None = field(default=None, repr=False)

    @property
    def refused(self) -> bool:
        return self.code is not None

    def name(self) -> str:
        return f"{self.group}: {self.actor} {self.action} {self.target}"


class Replay:
    """A request built and sent once, then sent again byte for byte (same nonce)."""

    def __init__(self, world: Principals, make: Callable[[], Req]) -> None:
        self._world, self._make = world, make
        self._req: Req | None = None

    def first(self) -> Reply:
        self._req = self._make()
        return self._world.send(self._req)

    def again(self) -> Reply:
        assert self._req is not None, "the replay cell runs after the first one"
        return self._world.send(self._req)


def _ids(items: object, key: str) -> set[str]:
    if not isinstance(items, list):
        return set()
    return {str(item.get(key)) for item in items if isinstance(item, dict)}


def _listed_payments(reply: Reply) -> set[str]:
    """The payment ids of a listing: its items, or (undelivered events) their `payment`."""
    items = reply.json().get("items")
    listed = set()
    for item in items if isinstance(items, list) else []:
        payment = item.get("payment", item) if isinstance(item, dict) else None
        if isinstance(payment, dict):
            listed.add(str(payment.get("payment_id")))
    return listed


def only_payments(own: set[str], foreign: set[str]) -> Check:
    """A listing that shows `own` payments (all of them) and none of `foreign`."""

    def check(reply: Reply) -> list[str]:
        listed = _listed_payments(reply)
        problems = []
        if listed & foreign:
            problems.append(f"lists another's payments {sorted(listed & foreign)}")
        if not own <= listed:
            problems.append(f"misses its own payments {sorted(own - listed)}")
        return problems

    return check


def only_text(present: list[str], absent: list[str]) -> Check:
    """A page or file that holds every `present` string and none of `absent`."""

    def check(reply: Reply) -> list[str]:
        body = reply.text
        problems = [f"shows another's {value}" for value in absent if value in body]
        return problems + [f"lacks its own {value}" for value in present if value not in body]

    return check


def redirect_to_login(reply: Reply) -> list[str]:
    location = reply.header("Location")
    return [] if location.endswith("/dashboard/login") else [f"redirects to {location!r}"]


def terminal_cells(world: Principals) -> list[Cell]:
    """Terminal of merchant A against merchant B's payments, and against its own."""
    a, b = world.terminals["A"], world.terminals["B"]
    pay, order, send = world.payments, world.orders, world.send
    foreign = [world.merchants["B"], pay["B"], pay["B_wait"]]
    own_events = {pay["A"], pay["A_wait1"]}
    undelivered = f"/v1/notifications/undelivered?older_than_s=0&merchant_id={world.merchants['B']}"
    g = "terminal x merchant"
    return [
        Cell(g, "terminal A", "read", "payment of B", 404, "not_found",
             lambda: send(by_terminal(a, "GET", f"/v1/payments/{pay['B']}"))),
        Cell(g, "terminal B", "read", "payment of A", 404, "not_found",
             lambda: send(by_terminal(b, "GET", f"/v1/payments/{pay['A']}"))),
        Cell(g, "terminal A", "look up order", "order id of B", 200, None,
             lambda: send(by_terminal(a, "GET", f"/v1/payments?merchant_order_id={order['B']}")),
             check=only_payments(set(), {pay["B"]})),
        Cell(g, "terminal A", "refund", "payment of B", 404, "not_found",
             lambda: send(by_terminal(a, "POST", f"/v1/payments/{pay['B']}/refunds", {}))),
        Cell(g, "terminal A", "cancel", "waiting payment of B", 404, "not_found",
             lambda: send(by_terminal(a, "POST", f"/v1/payments/{pay['B_wait']}/cancel", {}))),
        Cell(g, "terminal A", "settlement", "its day (only A's lines)", 200, None,
             lambda: send(by_terminal(a, "GET", f"/v1/settlement?date={world.today}")),
             check=only_text([world.merchants["A"], pay["A"]], foreign)),
        Cell(g, "terminal A", "settlement", "?merchant_id= of B", 200, None,
             lambda: send(by_terminal(
                 a, "GET", f"/v1/settlement?date={world.today}&merchant_id={world.merchants['B']}"
             )),
             check=only_text([world.merchants["A"]], foreign)),
        Cell(g, "terminal A", "undelivered notifications", "?merchant_id= of B", 200, None,
             lambda: send(by_terminal(a, "GET", undelivered)),
             check=only_payments(own_events, set(foreign[1:]))),
        Cell(g, "terminal A", "read", "its own payment", 200, None,
             lambda: send(by_terminal(a, "GET", f"/v1/payments/{pay['A']}"))),
        Cell(g, "terminal A", "look up order", "its own order id", 200, None,
             lambda: send(by_terminal(a, "GET", f"/v1/payments?merchant_order_id={order['A']}")),
             check=only_payments({pay["A"]}, {pay["B"]})),
        Cell(g, "terminal A", "refund 1.00", "its own payment", 201, None,
             lambda: send(by_terminal(a, "POST", f"/v1/payments/{pay['A']}/refunds",
                                      {"amount": "1.00"})),
             effect="money"),
    ]  # fmt: skip


def wallet_cells(world: Principals) -> list[Cell]:
    """The wallets of user B against user A's payments and devices, and A's own calls."""
    ua, ub = world.phone("A1", "v3"), world.phone("B", "v3")
    pay, send = world.payments, world.send
    a_payments = {pay["A"], pay["A_wait1"], pay["A_wait2"], pay["A_wait3"]}
    b_payments = {pay["B"], pay["B_wait"]}
    a_device = ua.device_id
    revoked = world.phone("A2", "v2").device_id
    g = "wallet x user"

    def devices_only(own: str, foreign: str) -> Check:
        def check(reply: Reply) -> list[str]:
            listed = _ids(reply.json().get("items"), "device_id")
            mine, theirs = world.devices_of_user(own), world.devices_of_user(foreign)
            problems = (
                [f"lists another's devices {sorted(listed & theirs)}"] if listed & theirs else []
            )
            return problems + ([] if listed == mine else [f"lists {listed} not {mine}"])

        return check

    def balance_of(letter: str) -> Check:
        def check(reply: Reply) -> list[str]:
            accounts = reply.json().get("accounts")
            with world.server.engine.connect() as connection:
                held = connection.execute(
                    text("SELECT balance_minor FROM accounts WHERE owner_id = :u"),
                    {"u": world.users[letter]},
                ).scalar_one()
            shown = [acc.get("balance_minor") for acc in accounts or [] if isinstance(acc, dict)]
            return [] if shown == [held] else [f"balance {shown} is not user {letter}'s {held}"]

        return check

    def pay_qr(terminal: str) -> Reply:
        """A's signed poster for A's own till; for B's till, the best a forger can do: the
        same fields naming B's till, unsigned."""
        signed = world.terminals["A"].till.collection_code(amount=None, this_terminal=True)
        code = replace(read_collection(signed), terminal_id=world.terminals[terminal].key_id)
        text = (
            signed if terminal == "A" else build_collection_payload(replace(code, signature=None))
        )
        payload = {"qr_payload": text, "amount": "1.00"}
        return send(by_device(ub, "POST", "/v1/wallet/payments", payload))

    user_a = world.users["A"]
    return [
        Cell(g, "wallet B", "balance", "?user_id= of A", 200, None,
             lambda: send(by_device(ub, "GET", f"/v1/wallet/balance?user_id={user_a}")),
             check=balance_of("B")),
        Cell(g, "wallet B", "history", "?user_id= of A", 200, None,
             lambda: send(by_device(ub, "GET", f"/v1/wallet/history?limit=100&user_id={user_a}")),
             check=only_payments({pay["B"]}, a_payments)),
        Cell(g, "wallet B", "devices", "?user_id= of A", 200, None,
             lambda: send(by_device(ub, "GET", f"/v1/wallet/devices?user_id={user_a}")),
             check=devices_only("B", "A")),
        Cell(g, "wallet B", "pending", "?user_id= of A", 200, None,
             lambda: send(by_device(ub, "GET", f"/v1/wallet/pending?user_id={user_a}")),
             check=only_payments({pay["B_wait"]}, a_payments)),
        Cell(g, "wallet B", "confirm (its PIN)", "waiting payment of A", 404, "not_found",
             lambda: send(by_device(ub, "POST", f"/v1/wallet/payments/{pay['A_wait1']}/confirm",
                                    {"pin": PIN["B"]}))),
        Cell(g, "wallet B", "decline", "waiting payment of A", 404, "not_found",
             lambda: send(by_device(ub, "POST", f"/v1/wallet/payments/{pay['A_wait1']}/decline",
                                    {}))),
        Cell(g, "wallet B", "revoke", "device of A", 404, "not_found",
             lambda: send(by_device(ub, "POST", f"/v1/wallet/devices/{a_device}/revoke", {}))),
        Cell(g, "wallet B", "sign as", "device of A (B's key)", 401, "unauthorized",
             lambda: send(by_device(ub, "GET", "/v1/wallet/balance", device_id=a_device))),
        Cell(g, "wallet B", "pay a QR", "merchant A, a terminal of B", 400, "qr_invalid",
             lambda: pay_qr("B")),
        Cell(g, "wallet B", "pay a QR", "merchant A, a terminal of A", 201, None,
             lambda: pay_qr("A"), effect="money"),
        Cell(g, "wallet A", "balance", "its own", 200, None,
             lambda: send(by_device(ua, "GET", "/v1/wallet/balance")), check=balance_of("A")),
        Cell(g, "wallet A", "history", "its own", 200, None,
             lambda: send(by_device(ua, "GET", "/v1/wallet/history?limit=100")),
             check=only_payments({pay["A"]}, b_payments)),
        Cell(g, "wallet A", "devices", "its own", 200, None,
             lambda: send(by_device(ua, "GET", "/v1/wallet/devices")),
             check=devices_only("A", "B")),
        Cell(g, "wallet A", "pending", "its own", 200, None,
             lambda: send(by_device(ua, "GET", "/v1/wallet/pending")),
             check=only_payments(a_payments - {pay["A"]}, b_payments)),
        Cell(g, "wallet A", "decline", "its own waiting payment", 200, None,
             lambda: send(by_device(ua, "POST", f"/v1/wallet/payments/{pay['A_wait2']}/decline",
                                    {})),
             effect="state"),
        Cell(g, "wallet A", "confirm (its PIN)", "its own waiting payment", 200, None,
             lambda: send(by_device(ua, "POST", f"/v1/wallet/payments/{pay['A_wait3']}/confirm",
                                    {"pin": PIN["A"]})),
             effect="money"),
        Cell(g, "wallet A", "revoke", "its other phone's device", 200, None,
             lambda: send(by_device(ua, "POST", f"/v1/wallet/devices/{revoked}/revoke", {})),
             effect="state"),
    ]  # fmt: skip


def lifecycle_cells(world: Principals) -> list[Cell]:
    """Revoked devices, the retired version, wallet session tokens."""
    a, send = world.terminals["A"], world.send
    gone, retired, live = world.phone("A2", "v2"), world.phone("A1", "v1"), world.phone("A1", "v3")
    seed, public = new_ed25519_seed()
    seed_public = b64(public)

    def charge(wallet: str, version: str) -> Reply:
        payload = {"code": world.code(wallet, version), "amount": "1.00", "currency": "CNY"}
        return send(by_terminal(a, "POST", "/v1/charges", payload))

    def enroll(token: str | None, version: str) -> Reply:
        payload: dict[str, Any] = {"version": version, "label": "authz"}
        key = str(uuid.uuid4())
        if version == "v3":
            payload["public_key"] = seed_public
            payload["proof"] = make_proof(seed, version, session_scope(token or "", key))
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return send(Req("POST", "/v1/wallet/devices", json_bytes(payload), headers))

    def advised(reply: Reply) -> list[str]:
        advice = reply.json().get("reenroll")
        return [] if isinstance(advice, dict) else ["no re-enrollment advice for a retired device"]

    def enrolled_for_a(reply: Reply) -> list[str]:
        device = str(reply.json().get("device_id"))
        return [] if device in world.devices_of_user("A") else [f"{device} is not user A's"]

    rotate = {"version": "v3", "public_key": seed_public}
    g_dev, g_ver, g_tok = "revoked device", "retired version", "wallet token"
    return [
        Cell(g_dev, "terminal A", "charge", "code of a revoked device", 422, "device_revoked",
             lambda: charge("A2", "v2")),
        Cell(g_dev, "revoked device", "balance", "its own", 401, "unauthorized",
             lambda: send(by_device(gone, "GET", "/v1/wallet/balance"))),
        Cell(g_dev, "revoked device", "rotate", "itself", 401, "unauthorized",
             lambda: send(by_device(gone, "POST", "/v1/wallet/devices/rotate", rotate))),
        Cell(g_dev, "revoked device", "revoke", "a live device of its user", 401, "unauthorized",
             lambda: send(by_device(gone, "POST", f"/v1/wallet/devices/{live.device_id}/revoke",
                                    {}))),
        Cell(g_ver, "terminal A", "charge", "code of retired v1", 422, "version_retired",
             lambda: charge("A1", "v1")),
        Cell(g_ver, "user A (fresh token)", "enroll", "retired v1", 422, "version_retired",
             lambda: enroll(_wallet_login(world, "A"), "v1")),
        Cell(g_ver, "device on retired v1", "balance", "its own (told to re-enroll)", 200, None,
             lambda: send(by_device(retired, "GET", "/v1/wallet/balance")), check=advised),
        Cell(g_tok, "expired token", "enroll", "v3", 401, "unauthorized",
             lambda: enroll(world.tokens["expired"], "v3")),
        Cell(g_tok, "forged token", "enroll", "v3", 401, "unauthorized",
             lambda: enroll(secrets.token_urlsafe(32), "v3")),
        Cell(g_tok, "no token", "enroll", "v3", 401, "unauthorized", lambda: enroll(None, "v3")),
        Cell(g_tok, "user A (fresh token)", "enroll", "v3", 201, None,
             lambda: enroll(_wallet_login(world, "A"), "v3"), effect="state",
             check=enrolled_for_a),
    ]  # fmt: skip


def signature_cells(world: Principals) -> list[Cell]:
    """Replays, clocks, key ids, secrets, and every part of a request changed after signing."""
    a, b, pay, send = world.terminals["A"], world.terminals["B"], world.payments, world.send
    ua = world.phone("A1", "v3")
    own, refund = f"/v1/payments/{pay['A']}", f"/v1/payments/{pay['A']}/refunds"
    by_order = "/v1/payments?merchant_order_id="
    read = Replay(world, lambda: by_terminal(a, "GET", own))
    refund_once = Replay(world, lambda: by_terminal(a, "POST", refund, {"amount": "0.10"}))
    balance = Replay(world, lambda: by_device(ua, "GET", "/v1/wallet/balance"))
    unknown = f"term_{secrets.token_hex(8)}"
    g = "signature"
    no_signature = Req("GET", own, b"", {
        k: v for k, v in by_terminal(a, "GET", own).headers.items() if k != "Paycode-Signature"
    })  # fmt: skip
    return [
        Cell(g, "terminal A", "read", "first sending", 200, None, read.first),
        Cell(g, "terminal A", "read", "the same request again (nonce)", 401, "unauthorized",
             read.again),
        Cell(g, "terminal A", "refund 0.10", "first sending", 201, None, refund_once.first,
             effect="money"),
        Cell(g, "terminal A", "refund 0.10", "the same request again (nonce)", 401,
             "unauthorized", refund_once.again),
        Cell(g, "terminal A", "read", "timestamp 400 s old", 401, "unauthorized",
             lambda: send(by_terminal(a, "GET", own, skew_s=-400))),
        Cell(g, "terminal A", "read", "timestamp 400 s ahead", 401, "unauthorized",
             lambda: send(by_terminal(a, "GET", own, skew_s=400))),
        Cell(g, "unknown key id", "read", "payment of A", 401, "unauthorized",
             lambda: send(by_terminal(a, "GET", own, key_id=unknown))),
        Cell(g, "key id of B, secret of A", "read", "payment of A", 401, "unauthorized",
             lambda: send(by_terminal(a, "GET", own, key_id=b.key_id))),
        Cell(g, "key id of A, wrong secret", "read", "payment of A", 401, "unauthorized",
             lambda: send(by_terminal(a, "GET", own, secret=secrets.token_bytes(32)))),
        Cell(g, "terminal A", "read", "no signature header", 401, "unauthorized",
             lambda: send(no_signature)),
        Cell(g, "terminal A", "refund", "body changed after signing", 401, "unauthorized",
             lambda: send(by_terminal(a, "POST", refund, {"amount": "5.00"},
                                      signed_payload={"amount": "0.10"}))),
        Cell(g, "terminal A", "refund", "signed as GET, sent as POST", 401, "unauthorized",
             lambda: send(by_terminal(a, "POST", refund, {"amount": "0.10"}, sign_method="GET"))),
        Cell(g, "terminal A", "read", "path changed after signing", 401, "unauthorized",
             lambda: send(by_terminal(a, "GET", own, sign_path=f"/v1/payments/{pay['B']}"))),
        Cell(g, "terminal A", "look up order", "query changed after signing", 401, "unauthorized",
             lambda: send(by_terminal(a, "GET", by_order + world.orders["A"],
                                      sign_path=by_order + world.orders["B"]))),
        Cell(g, "terminal A", "look up order", "'?' appended to the query after signing", 401,
             "unauthorized",
             lambda: send(by_terminal(a, "GET", by_order + world.orders["A"] + "?",
                                      sign_path=by_order + world.orders["A"]))),
        Cell(g, "terminal A", "read", "'?' appended to the path after signing", 401,
             "unauthorized", lambda: send(by_terminal(a, "GET", own + "??", sign_path=own))),
        Cell(g, "wallet A", "history", "'?' appended to the query after signing", 401,
             "unauthorized",
             lambda: send(by_device(ua, "GET", "/v1/wallet/history?limit=5?",
                                    sign_path="/v1/wallet/history?limit=5"))),
        Cell(g, "wallet A", "balance", "first sending", 200, None, balance.first),
        Cell(g, "wallet A", "balance", "the same request again (nonce)", 401, "unauthorized",
             balance.again),
        Cell(g, "wallet A", "balance", "timestamp 400 s old", 401, "unauthorized",
             lambda: send(by_device(ua, "GET", "/v1/wallet/balance", skew_s=-400))),
        Cell(g, "wallet A", "history", "signed for /balance", 401, "unauthorized",
             lambda: send(by_device(ua, "GET", "/v1/wallet/history",
                                    sign_path="/v1/wallet/balance"))),
        Cell(g, "wallet A", "decline", "body changed after signing", 401, "unauthorized",
             lambda: send(by_device(ua, "POST", f"/v1/wallet/payments/{pay['A_wait1']}/decline",
                                    {"x": 1}, signed_payload={}))),
    ]  # fmt: skip


def terminal_state_cells(world: Principals) -> list[Cell]:
    """The revoked terminal and the allow-lists; a code refused there stays unused."""
    a, r, c, d = (world.terminals[k] for k in "ARCD")
    send = world.send
    own = f"/v1/payments/{world.payments['A']}"
    codes: dict[str, str] = {}

    def charge(key: Merchant, name: str, headers: dict[str, str] | None = None) -> Reply:
        code = codes.setdefault(name, world.code("A1", "v2"))
        payload = {"code": code, "amount": "1.00", "currency": "CNY"}
        return send(by_terminal(key, "POST", "/v1/charges", payload, headers=headers))

    def is_merchant(letter: str) -> Check:
        def check(reply: Reply) -> list[str]:
            found = reply.json().get("merchant_id")
            return [] if found == world.merchants[letter] else [f"answers for {found}"]

        return check

    g_rev, g_ip = "revoked terminal", "allow-list"
    spoof = {"X-Forwarded-For": "10.1.2.3"}
    return [
        Cell(g_rev, "revoked terminal of A", "read", "payment of A", 401, "unauthorized",
             lambda: send(by_terminal(r, "GET", own))),
        Cell(g_rev, "revoked terminal of A", "charge", "a fresh code", 401, "unauthorized",
             lambda: charge(r, "revoked")),
        Cell(g_rev, "terminal A", "charge", "the code the revoked one was shown", 201, None,
             lambda: charge(a, "revoked"), effect="money"),
        Cell(g_ip, "terminal C (10.0.0.0/8) from 127.0.0.1", "merchant", "its own", 403,
             "forbidden", lambda: send(by_terminal(c, "GET", "/v1/merchant"))),
        Cell(g_ip, "terminal C, X-Forwarded-For 10.1.2.3", "merchant", "its own", 403,
             "forbidden", lambda: send(by_terminal(c, "GET", "/v1/merchant", headers=spoof))),
        Cell(g_ip, "terminal C from 127.0.0.1", "charge", "a fresh code", 403, "forbidden",
             lambda: charge(c, "outside")),
        Cell(g_ip, "terminal A", "charge", "the code terminal C was shown", 201, None,
             lambda: charge(a, "outside"), effect="money"),
        Cell(g_ip, "terminal D (127.0.0.0/8)", "merchant", "its own", 200, None,
             lambda: send(by_terminal(d, "GET", "/v1/merchant")), check=is_merchant("D")),
    ]  # fmt: skip


def dashboard_cells(world: Principals) -> list[Cell]:
    pay, send, cookie, csrf = world.payments, world.send, world.cookies, world.csrf
    refund = f"/dashboard/payments/{pay['A']}/refund"

    def form(token: str | None, amount: str = "0.20") -> dict[str, str]:
        found = {"amount": amount, "refunded_seen_minor": str(world.refunded_minor("A"))}
        return found if token is None else found | {"csrf": token}

    g = "dashboard"
    return [
        Cell(g, "no session", "overview", "-", 302, "login", lambda: send(dashboard_get(
            "/dashboard/", None)), check=redirect_to_login),
        Cell(g, "no session", "refund", "payment of A", 302, "login",
             lambda: send(dashboard_post(refund, None, form(csrf["A"]))), check=redirect_to_login),
        Cell(g, "expired session of A", "overview", "-", 302, "login",
             lambda: send(dashboard_get("/dashboard/", cookie["A_expired"])),
             check=redirect_to_login),
        Cell(g, "merchant B (its CSRF)", "refund", "payment of A", 404, "not_found",
             lambda: send(dashboard_post(refund, cookie["B"], form(csrf["B"])))),
        Cell(g, "merchant A", "refund", "no CSRF token", 403, "csrf",
             lambda: send(dashboard_post(refund, cookie["A"], form(None)))),
        Cell(g, "merchant A", "refund", "B's CSRF token", 403, "csrf",
             lambda: send(dashboard_post(refund, cookie["A"], form(csrf["B"])))),
        Cell(g, "merchant B", "overview", "its own page", 200, None,
             lambda: send(dashboard_get("/dashboard/", cookie["B"])),
             check=only_text([pay["B"]], [pay["A"], pay["A_wait1"]])),
        Cell(g, "merchant B", "settlement file", "?merchant_id= of A", 200, None,
             lambda: send(dashboard_get(
                 f"/dashboard/settlement.csv?date={world.today}&merchant_id={world.merchants['A']}",
                 cookie["B"])),
             check=only_text([world.merchants["B"], pay["B"]], [world.merchants["A"], pay["A"]])),
        Cell(g, "merchant A", "refund 0.20", "its own payment", 303, None,
             lambda: send(dashboard_post(refund, cookie["A"], form(csrf["A"]))), effect="money"),
    ]  # fmt: skip


def metrics_cells(world: Principals) -> list[Cell]:
    send, token = world.send, world.metrics_token
    g = "metrics"

    def scrape(headers: dict[str, str]) -> Reply:
        return send(Req("GET", "/metrics", b"", headers))

    if token is None:  # the loopback rule
        return [
            *(
                Cell(g, f"through a proxy ({name})", "scrape", "/metrics", 403, "forbidden",
                     lambda header={name: value}: scrape(header))
                for name, value in PROXY_HEADERS.items()
            ),
            Cell(g, "proxy with a bearer token", "scrape", "/metrics", 403, "forbidden",
                 lambda: scrape({"X-Forwarded-For": "203.0.113.7", "Authorization": "Bearer x"})),
            Cell(g, "loopback, no proxy", "scrape", "/metrics", 200, None, lambda: scrape({})),
        ]  # fmt: skip
    right = {"Authorization": f"Bearer {token}"}
    return [
        Cell(g, "loopback, no token", "scrape", "/metrics", 401, "unauthorized",
             lambda: scrape({})),
        Cell(g, "wrong token", "scrape", "/metrics", 401, "unauthorized",
             lambda: scrape({"Authorization": "Bearer " + "x" * len(token)})),
        Cell(g, "through a proxy, no token", "scrape", "/metrics", 401, "unauthorized",
             lambda: scrape({"X-Forwarded-For": "203.0.113.7"})),
        Cell(g, "through a proxy, the token", "scrape", "/metrics", 200, None,
             lambda: scrape(right | {"X-Forwarded-For": "203.0.113.7"})),
    ]  # fmt: skip


def the_table(world: Principals) -> list[Cell]:
    """In order: some cells use what earlier ones left (a revoked device, a replayed request)."""
    cells = [
        *terminal_cells(world),
        *wallet_cells(world),
        *lifecycle_cells(world),
        *signature_cells(world),
        *terminal_state_cells(world),
        *dashboard_cells(world),
        *metrics_cells(world),
    ]
    world_terminal = world.terminals["A"]
    cells.append(  # A cancels its own waiting payment last: B's tries above must not have
        Cell("terminal x merchant", "terminal A", "cancel", "its own waiting payment", 200, None,
             lambda: world.send(by_terminal(
                 world_terminal, "POST", f"/v1/payments/{world.payments['A_wait1']}/cancel", {}
             )),
             effect="state", check=lambda reply: [] if reply.json().get("status") == "cancelled"
             else [f"ends {reply.json().get('status')}"])
    )  # fmt: skip
    return cells


# -- judging one cell ---------------------------------------------------------------------------


def judge(cell: Cell, reply: Reply, before: Snapshot, after: Snapshot) -> list[str]:
    problems: list[str] = []
    if reply.status != cell.status:
        problems.append(f"status {reply.status}, expected {cell.status}: {reply.text[:160]!r}")
    problems += _shape(cell, reply)
    if after.ledger_sum_minor != 0:
        problems.append(f"the ledger sums to {after.ledger_sum_minor}")
    if cell.refused or cell.effect == "none":
        if after != before:
            problems.append("the bank changed: " + _difference(before, after))
    elif cell.effect == "state":
        if after.money() != before.money():
            problems.append("money moved: " + _difference(before, after))
    elif after.transactions <= before.transactions or after.balances == before.balances:
        problems.append("no money moved")
    if cell.check is not None and reply.status == cell.status:
        problems += cell.check(reply)
    return problems


def _shape(cell: Cell, reply: Reply) -> list[str]:
    """Refusals of the API are problem+json with the stable code; its answers are JSON."""
    if cell.group == "dashboard":  # HTML pages and redirects, judged by status and content
        return []
    if reply.status >= 400:
        body = reply.json()
        problems = []
        if reply.content_type != "application/problem+json":
            problems.append(f"refusal sent as {reply.content_type!r}")
        if body.get("code") != cell.code or body.get("status") != reply.status:
            problems.append(f"problem code {body.get('code')!r} status {body.get('status')!r}")
        if body.get("type") != PROBLEM_BASE + str(cell.code):
            problems.append(f"problem type {body.get('type')!r}")
        return problems
    expected = {"/metrics": "text/plain", "/v1/settlement": "text/csv"}
    return (
        []
        if reply.content_type in {"application/json", *expected.values()}
        else [f"answer sent as {reply.content_type!r}"]
    )


def _difference(before: Snapshot, after: Snapshot) -> str:
    changed = []
    for name in ("balances", "payments", "devices"):
        old, new = getattr(before, name), getattr(after, name)
        keys = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
        changed += [f"{name}[{k}] {old.get(k)} -> {new.get(k)}" for k in sorted(keys, key=str)]
    for name in ("ledger_sum_minor", "transactions", "refunds"):
        if getattr(before, name) != getattr(after, name):
            changed.append(f"{name} {getattr(before, name)} -> {getattr(after, name)}")
    return "; ".join(changed)[:240]


# -- the servers and the test -------------------------------------------------------------------


@pytest.fixture(scope="module", params=_backends())
def authz_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    backend: str = request.param
    knob = {"PAYCODE_VERSION_STATUSES_TTL_S": str(STATUSES_TTL_S)}
    with pytest.MonkeyPatch.context() as patch:
        use_fast_keystore(patch)
        if backend == "sqlite":  # this one also checks the metrics token rule
            extra = knob | {"PAYCODE_METRICS_TOKEN": METRICS_TOKEN}
            with start_server("sqlite", extra_env=extra) as server:
                yield server
            return
        with (
            postgres_database(migrated=True) as url,
            start_server("postgres", database_url=url, extra_env=knob) as server,
        ):
            yield server


def test_authorization_matrix(
    authz_server: Server, figures: Figures, scale: Scale, tmp_path: Path
) -> None:
    figures.section = SECTION
    server = authz_server
    rounds = scale.pick(short=1, full=5)
    figures.details |= {"backend": server.backend, "rounds": rounds}
    groups: dict[str, int] = {}
    for round_no in range(rounds):
        world = build_principals(server, tmp_path / f"round-{round_no}", round_no)
        world.metrics_token = server.env.get("PAYCODE_METRICS_TOKEN")
        cells = the_table(world)
        assert len({cell.name() for cell in cells}) == len(cells), "every cell is named once"
        before = snapshot(server)
        for cell in cells:
            assert cell.effect in ALLOWED_EFFECTS, cell.name()
            reply = cell.send()
            after = snapshot(server)
            figures.operations += 1
            figures.faults += int(cell.refused)
            groups[cell.group] = groups.get(cell.group, 0) + 1
            for problem in judge(cell, reply, before, after):
                figures.anomaly(f"{server.backend} {cell.name()}: {problem}")
            # The bank after one cell is the bank before the next: nothing but reads runs
            # between them, and a change that landed late would be charged to the next cell,
            # never missed.
            before = after
        figures.runs += 1
        final = snapshot(server)
        if final.ledger_sum_minor != 0 or sum(final.balances.values()) != 0:
            figures.anomaly(f"{server.backend}: the bank does not add up after round {round_no}")
    figures.details |= {
        "cells per round": figures.operations // rounds,
        "refused cells": figures.faults,
        "allowed cells": figures.operations - figures.faults,
        **{f"cells: {name}": count for name, count in groups.items()},
    }
    assert figures.anomalies == 0, figures.anomaly_notes


def test_regression_signature_covers_a_trailing_question_mark(
    figures: Figures, live_sqlite: Server
) -> None:
    """The server checked signatures against `full_path.rstrip("?")` (terminals) and
    `full_path.removesuffix("?")` (wallets): a '?' added to the end of a signed query, after
    signing, still verified, and the server then ran the changed query
    (`merchant_order_id=A-1?` instead of `A-1`). Now the signed path is the path and query
    exactly as sent (paycode.server.http.signed_requests.signed_path). Over real HTTP: the
    query string is what the client sent, byte for byte."""
    figures.section = SECTION
    bank = open_bank(live_sqlite, 10_000, merchants=1)
    merchant_id, (key_id, secret) = next(iter(bank.terminals.items()))
    terminal = Merchant("Corner Cafe", merchant_id, key_id, secret)
    device_id, credential = next(iter(bank.credentials.items()))
    phone = Phone(device_id, credential, "alice")
    lookup = "/v1/payments?merchant_order_id=A-1"
    cases = [  # (request, expected status)
        (by_terminal(terminal, "GET", lookup + "?", sign_path=lookup), 401),
        (by_terminal(terminal, "GET", lookup + "??", sign_path=lookup), 401),
        (by_terminal(terminal, "GET", lookup + "?"), 200),  # signed as sent: fine
        (by_terminal(terminal, "GET", lookup), 200),
        (by_device(phone, "GET", "/v1/wallet/history?limit=5?",
                   sign_path="/v1/wallet/history?limit=5"), 401),
        (by_device(phone, "GET", "/v1/wallet/balance?x=?", sign_path="/v1/wallet/balance?x="),
         401),
        (by_device(phone, "GET", "/v1/wallet/history?limit=5"), 200),
    ]  # fmt: skip
    for req, status in cases:
        reply = exchange(bank.url, req)
        figures.operations += 1
        if reply.status != status:
            figures.anomaly(f"{req.method} {req.path}: {reply.status}, expected {status}")
    figures.runs = 1
    assert figures.anomalies == 0, figures.anomaly_notes
