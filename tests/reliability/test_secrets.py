"""8. Secrets: after a whole shop has run, no secret is anywhere it should not be.

tests/test_observability.py already looks for secrets in the server's log and the console
output of an end-to-end run. This test extends the search to where secrets are kept and sent:

- the database: every column of every table, on PostgreSQL and on SQLite (there also the raw
  database files: deleted rows and free pages included);
- every HTTP answer: the wallet, the POS and the dashboard talk to the server through a
  recording proxy, so every answer any of them received is kept; a secret the server issues
  (a device key, a session token) may be in the one answer that issued it and in none after;
- the server's log, the operator's and the till's console output, the notifications the
  merchant received, and every file the wallet, the till and the server wrote;
- the files that do hold a secret by design (the master key file a server makes at its first
  start with no key configured, the wallet keystore and its passphrase file, the till's
  configuration) are readable by their owner only, in folders only their owner can enter.

The shop: a user created with a password, topped up; a merchant with a notification URL (its
notification secret) and a dashboard password; a terminal (its secret) configured into a till;
a wallet enrolled on every code version (device keys, hiding keys, a v3 seed), a payment PIN;
a charge with a code of each version, refunds from the till and from the dashboard (a dashboard
session), a second log-in whose session token enrolls one more device, and the worker
delivering the signed notifications (each checked against the notification secret). FULL mode
does it three times per server, with key rotations (wallet devices, notification secret), and
runs every console script as its own process; SHORT runs them in this process (their `main`).

Secrets are searched raw and as hex, base64 and base64url. A PIN (six digits) is searched as a
whole word: digits inside a longer number or id are not a PIN. Every secret that has a place by
design (a file, an output, the answer that issued it, the request that sent it) must be found
there: a positive control, so a blind search cannot pass. Figures: operations are the
(secret, place) pairs searched, the positive controls and the permission checks.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import http.server
import json
import os
import random
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from paycode.appkit.http_client import ServerClient
from paycode.client import keystore
from paycode.client.wallet import Wallet
from paycode.server.dashboard import access
from tests.reliability.figures import Figures, Scale
from tests.support.servers import LiveServer, postgres_database, server_env
from tests.support.shop import person_env, run_console

SECTION = "8. Secrets"
HTTP_TIMEOUT_S = 15.0
OWNER_ONLY_FILE = 0o600
OWNER_ONLY_DIR = 0o700
FAST_SCRYPT_N = 2**10
"""SHORT mode: wallets made in this process use cheap scrypt (FULL runs the real cost)."""


# -- what is secret, and where it may be ----------------------------------------------------------


@dataclass
class Secret:
    """One secret. `files` and `outputs`: names of the files and console outputs that hold it
    by design; `routes`: (method, path prefix) of the answers that may carry it (the one that
    issued it); `once`: at most one answer may. Each secret must be found where it is by design
    (or where it is `sent`): a search that finds nothing there would be blind."""

    name: str
    value: bytes = field(repr=False)
    word: bool = False
    files: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    routes: tuple[tuple[str, str], ...] = ()
    once: bool = False
    sent: tuple[str, str] = ("", "")
    """(method, path prefix) of a request that carries it (a password, a PIN, a code): where the
    search must find it, to prove it can find it."""

    def forms(self) -> dict[str, bytes]:
        encoded = {
            "hex": self.value.hex().encode(),
            "HEX": self.value.hex().upper().encode(),
            "base64": base64.b64encode(self.value),
            "base64url": base64.urlsafe_b64encode(self.value).rstrip(b"="),
        }
        return {"raw": self.value} | encoded

    def found_in(self, data: bytes) -> list[str]:
        found = []
        for form, value in self.forms().items():
            if self.word and form == "raw":
                pattern = rb"(?<![0-9A-Za-z])" + re.escape(value) + rb"(?![0-9A-Za-z])"
                if re.search(pattern, data):
                    found.append(form)
            elif value in data:
                found.append(form)
        return found


def key_secret(name: str, value: bytes, **where: Any) -> Secret:
    assert len(value) >= 16, f"{name}: a key is at least 16 bytes"
    return Secret(name, value, **where)


def text_secret(name: str, value: str, **where: Any) -> Secret:
    return Secret(name, value.encode(), **where)


@dataclass
class Place:
    """Somewhere a secret may leak to: its kind, its name, its bytes."""

    kind: str
    name: str
    data: bytes = field(repr=False)
    route: tuple[str, str] = ("", "")
    """Answers: the request's method and path."""


# -- the recording proxy and the merchant's notification endpoint -------------------------------


HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "content-length"})


class RecordingProxy:
    """Forwards every request to the server and keeps every answer (status, headers, body)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.answers: list[Place] = []
        self.requests: list[Place] = []
        """What the clients sent: passwords, PINs and codes belong there (not searched for
        leaks; only to show that the search finds what is there)."""
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                status, reply_headers, data = proxy.send(self.command, self.path, body, headers)
                self.send_response(status)
                for name, value in reply_headers:
                    if name.lower() not in HOP_HEADERS:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *_args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(
            self.upstream.hostname or "", self.upstream.port, timeout=HTTP_TIMEOUT_S
        )
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            reply_headers = response.getheaders()
        finally:
            connection.close()
        head = f"HTTP {response.status}\n" + "".join(f"{k}: {v}\n" for k, v in reply_headers)
        route = (method, urllib.parse.urlsplit(path).path)
        sent = "".join(f"{k}: {v}\n" for k, v in headers.items()).encode() + b"\n" + (body or b"")
        with self._lock:
            name = f"answer {len(self.answers)}: {method} {route[1]} -> {response.status}"
            self.answers.append(Place("answer", name, head.encode() + b"\n" + data, route))
            self.requests.append(Place("request", f"request {len(self.requests)}", sent, route))
        return response.status, reply_headers, data

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class NotifyEndpoint:
    """The merchant's endpoint: answers 200 and keeps each notification (headers and body)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint.received.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/paycode-hook"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# -- one server's recording ----------------------------------------------------------------------


@dataclass
class Recording:
    """One backend's server, behind its recording proxy, and everything the run collected
    (not a shop builder: its shop is made through the console scripts, whose outputs are
    places to search; tests/support/shop.py runs them, `run_console`)."""

    server: LiveServer
    proxy: RecordingProxy
    endpoint: NotifyEndpoint
    home: Path
    own_process: bool
    rng: random.Random
    secrets: list[Secret] = field(default_factory=list)
    outputs: list[Place] = field(default_factory=list)
    notify_secrets: dict[str, bytes] = field(default_factory=dict)
    """Merchant id -> its current notification secret."""
    wallet_homes: list[Path] = field(default_factory=list)
    pos_homes: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def run(self, program: str, *args: str, stdin: str = "", output: str = "") -> Any:
        """Run a console script with --json; keep its output (named `output`) for the search."""
        # The notification endpoint listens on 127.0.0.1: PAYCODE_NOTIFY_ALLOW_PRIVATE allows it
        server_env = self.server.env | {"PAYCODE_NOTIFY_ALLOW_PRIVATE": "1"}
        env = server_env if program == "server" else person_env()
        done = run_console(program, ["--json", *args], env, stdin, own_process=self.own_process)
        name = output or f"paycode-{program} {' '.join(a for a in args if not a.startswith('/'))}"
        self.outputs.append(Place("output", name[:120], (done.stdout + done.stderr).encode()))
        self.counts["console commands"] = self.counts.get("console commands", 0) + 1
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
        return json.loads(done.stdout)

    def secret(self, secret: Secret) -> None:
        self.secrets.append(secret)


def run_round(recording: Recording, round_no: int) -> None:
    """One round of the whole flow; every secret it makes is added to recording.secrets."""
    tag = f"{round_no}{recording.rng.randrange(16**6):06x}"
    user, merchant = f"carol_{tag}", f"Secret Cafe {tag}"
    password = f"pw-{recording.rng.randrange(16**16):016x}"
    dashboard_password = f"dash-{recording.rng.randrange(16**16):016x}"
    pin = f"{recording.rng.randrange(10**6):06d}"
    recording.secret(text_secret(f"{tag} user password", password, sent=SESSIONS))
    recording.secret(text_secret(f"{tag} dashboard password", dashboard_password, sent=LOGIN))
    recording.secret(
        Secret(f"{tag} payment PIN", pin.encode(), word=True, sent=("POST", "/v1/wallet/pin"))
    )
    wallet_home, pos_home = recording.home / f"wallet-{tag}", recording.home / f"pos-{tag}"
    recording.wallet_homes.append(wallet_home)
    recording.pos_homes.append(pos_home)

    recording.run("server", "users", "create", user, "--password-stdin", stdin=password + "\n")
    recording.run("server", "users", "top-up", user, "500.00")
    made = recording.run(
        "server", "merchants", "create", merchant, "--notify-url", recording.endpoint.url,
        output=f"merchants create {tag}",
    )  # fmt: skip
    merchant_id = made["merchant"]["id"]
    notify_secret = base64.b64decode(made["notify_secret"])
    recording.notify_secrets[merchant_id] = notify_secret
    recording.secret(
        key_secret(
            f"{tag} notification secret", notify_secret, outputs=(f"merchants create {tag}",)
        )
    )
    recording.run(
        "server", "merchants", "set-password", merchant, "--password-stdin",
        stdin=dashboard_password + "\n",
    )  # fmt: skip
    terminal = recording.run(
        "server", "terminals", "create", merchant, output=f"terminals create {tag}"
    )
    recording.secret(
        key_secret(
            f"{tag} terminal secret",
            base64.b64decode(terminal["secret"]),
            outputs=(f"terminals create {tag}",),
            files=(f"{pos_home.name}/pos.json",),
        )
    )
    recording.run(
        "pos", "--home", str(pos_home), "configure", "--server", recording.proxy.url,
        "--key-id", terminal["key_id"], "--secret-stdin", stdin=terminal["secret"] + "\n",
    )  # fmt: skip
    wallet = ("wallet", "--home", str(wallet_home))
    recording.run(
        *wallet, "enroll", "--server", recording.proxy.url, "--user", user, "--password-stdin",
        stdin=password + "\n",
    )  # fmt: skip
    recording.run(*wallet, "set-pin", "--stdin", stdin=f"{password}\n{pin}\n{pin}\n")
    _wallet_keys(recording, wallet_home, tag)
    paid = _charges(recording, wallet, pos_home, tag)
    recording.run("pos", "--home", str(pos_home), "refund", paid[0], "--amount", "0.50")
    _second_login(recording, user, password, tag)
    _dashboard(recording, merchant, dashboard_password, paid[1])
    if recording.own_process:  # FULL: rotations make new keys; the old ones must vanish as well
        recording.run(*wallet, "rotate")
        _wallet_keys(recording, wallet_home, f"{tag} rotated")
        rotated = recording.run(
            "server", "merchants", "notify-secret", merchant, "--rotate",
            output=f"notify-secret rotate {tag}",
        )  # fmt: skip
        recording.notify_secrets[merchant_id] = base64.b64decode(rotated["notify_secret"])
        recording.secret(
            key_secret(
                f"{tag} rotated notification secret",
                recording.notify_secrets[merchant_id],
                outputs=(f"notify-secret rotate {tag}",),
            )
        )


GRANTS = (("POST", "/v1/wallet/devices"),)
"""Enrollment and rotation answers: the only ones that carry device and hiding keys."""
SESSIONS = ("POST", "/v1/wallet/sessions")
LOGIN = ("POST", "/dashboard/login")
CHARGES = ("POST", "/v1/charges")


def _wallet_keys(recording: Recording, home: Path, tag: str) -> None:
    """The keys the wallet received (or made), read back from its keystore."""
    wallet = Wallet.open(home)
    passphrase = (home / "device-secret").read_bytes().strip()
    recording.secret(
        text_secret(
            f"{tag} wallet passphrase",
            passphrase.decode(),
            files=(f"{home.name}/device-secret",),
        )
    )
    for version, enrollment in wallet.enrollments().items():
        credential = enrollment.credential
        if version == "v3":
            recording.secret(key_secret(f"{tag} v3 device seed", credential.secret))
            continue
        recording.secret(
            key_secret(f"{tag} {version} device key", credential.secret, routes=GRANTS, once=True)
        )
        recording.secret(
            key_secret(f"{tag} {version} hiding key", credential.hiding_key, routes=GRANTS)
        )


def _charges(recording: Recording, wallet: tuple[str, ...], pos_home: Path, tag: str) -> list[str]:
    """A charge with a code of each version, made and charged by the console scripts."""
    paid = []
    for version in ("v1", "v2", "v3"):
        name = f"code {version} {tag}"
        code = recording.run(*wallet, "code", "--version", version, output=name)["code"]
        recording.secret(
            text_secret(f"{tag} {version} payment code", code, outputs=(name,), sent=CHARGES)
        )
        charged = recording.run(
            "pos", "--home", str(pos_home), "charge", "--amount", "1.00", "--source", "stdin",
            stdin=code + "\n",
        )  # fmt: skip
        assert charged["payment"]["status"] == "succeeded", charged
        paid.append(str(charged["payment"]["payment_id"]))
    return paid


def _second_login(recording: Recording, user: str, password: str, tag: str) -> None:
    """A password log-in over HTTP, so the session token is known; it enrolls one more device."""
    client = ServerClient(recording.proxy.url)
    session = client.call("POST", "/v1/wallet/sessions", {"user": user, "password": password})
    token = str(session.body["token"])
    recording.secret(text_secret(f"{tag} wallet session token", token,
                            routes=(SESSIONS,), once=True))  # fmt: skip
    grant = client.call(
        "POST", "/v1/wallet/devices", {"version": "v2", "label": "second phone"},
        bearer=token, idempotency_key=str(uuid.uuid4()),
    ).body  # fmt: skip
    home = recording.home / f"wallet-{tag}-second"
    second = Wallet.open_or_create(home)
    second.set_server(recording.proxy.url, user)
    second.add_grant(grant)
    recording.wallet_homes.append(home)
    _wallet_keys(recording, home, f"{tag} second")


def _dashboard(recording: Recording, merchant: str, password: str, payment_id: str) -> None:
    """Log in to the dashboard, read the page, refund from it."""
    form = urllib.parse.urlencode({"name": merchant, "password": password}).encode()
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, _ = recording.proxy.send("POST", "/dashboard/login", form, form_type)
    assert status == 302, status
    cookie = dict(headers).get("Set-Cookie", "")
    found = re.match(rf"{access.COOKIE_NAME}=([^;]+)", cookie)
    assert found is not None, cookie
    token = found.group(1)
    recording.secret(text_secret(f"{merchant} dashboard session token", token,
                            routes=(LOGIN,), once=True))  # fmt: skip
    jar = {"Cookie": f"{access.COOKIE_NAME}={token}"}
    status, _, page = recording.proxy.send("GET", "/dashboard/", None, jar)
    csrf = re.search(rb'name="csrf" value="([0-9a-f]{64})"', page)
    assert status == 200 and csrf is not None, status
    refund = urllib.parse.urlencode(
        {"csrf": csrf.group(1).decode(), "amount": "0.30", "refunded_seen_minor": "0"}
    ).encode()
    status, _, _ = recording.proxy.send(
        "POST", f"/dashboard/payments/{payment_id}/refund", refund, jar | form_type
    )
    assert status == 303, status


def deliver_notifications(recording: Recording) -> list[str]:
    """`paycode-server worker --once`; every notification the endpoint got must verify with
    its merchant's notification secret. Returns what did not."""
    recording.run("server", "worker", "--once")
    problems = []
    for headers, body in recording.endpoint.received:
        merchant_id = json.loads(body)["merchant_id"]
        key = recording.notify_secrets.get(merchant_id, b"")
        signed = headers.get("Paycode-Timestamp", "").encode() + b"." + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, headers.get("Paycode-Signature", "")):
            problems.append(f"notification {headers.get('Paycode-Event-Id')} does not verify")
        recording.outputs.append(
            Place("notification", f"notification {headers.get('Paycode-Event-Id')}",
                  json.dumps(headers).encode() + b"\n" + body)
        )  # fmt: skip
    return problems


# -- where to look --------------------------------------------------------------------------------


def database_places(url: str) -> list[Place]:
    """Every column of every table, each a place: its values, as the database gives them
    (bytes as they are, everything else as text)."""
    engine = create_engine(url)
    places = []
    try:
        with engine.connect() as connection:
            for table in inspect(connection).get_table_names():
                result = connection.execute(text(f'SELECT * FROM "{table}"'))
                columns = list(result.keys())
                values: dict[str, list[bytes]] = {column: [] for column in columns}
                for row in result:
                    for column, value in zip(columns, row, strict=True):
                        values[column].append(_as_bytes(value))
                for column in columns:
                    data = b"\x00".join(values[column])
                    places.append(Place("database", f"{table}.{column}", data))
    finally:
        engine.dispose()
    return places


def _as_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def file_places(root: Path, label: str) -> list[Place]:
    """Every file under `root`, named `<label>/<path relative to root>`."""
    return [
        Place("file", f"{label}/{path.relative_to(root)}", path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]


@dataclass
class Finding:
    secret: str
    place: str
    forms: list[str]


def search(secrets: list[Secret], places: list[Place]) -> tuple[int, list[Finding]]:
    """Every (secret, place) pair: (pairs searched, the findings that break a rule)."""
    findings: list[Finding] = []
    searched = 0
    for secret in secrets:
        carriers: list[Place] = []
        for place in places:
            searched += 1
            forms = secret.found_in(place.data)
            if not forms:
                continue
            if place.kind == "answer":
                carriers.append(place)
                allowed = any(place.route[0] == m and place.route[1].startswith(p)
                              for m, p in secret.routes)  # fmt: skip
            elif place.kind == "file":
                allowed = place.name in secret.files
            elif place.kind == "output":
                allowed = place.name in secret.outputs
            else:
                allowed = False
            if not allowed:
                findings.append(Finding(secret.name, place.name, forms))
        if secret.once and len(carriers) > 1:
            later = ", ".join(place.name for place in carriers[1:])
            findings.append(Finding(secret.name, f"answers after the one that issued it: {later}",
                                    ["raw"]))  # fmt: skip
    return searched, findings


def blind_spots(secrets: list[Secret], places: list[Place], requests: list[Place]) -> list[str]:
    """The secrets the search did not find where they are by design (the positive controls).
    Secrets with no such place (a v3 seed never leaves the phone) are not controlled."""
    missed = []
    for secret in secrets:
        if secret.sent != ("", ""):
            method, prefix = secret.sent
            wanted = [r for r in requests if r.route[0] == method and r.route[1].startswith(prefix)]
        else:
            wanted = [
                place
                for place in places
                if (place.kind == "file" and place.name in secret.files)
                or (place.kind == "output" and place.name in secret.outputs)
                or (place.kind == "answer" and any(
                    place.route[0] == m and place.route[1].startswith(p) for m, p in secret.routes
                ))
            ]  # fmt: skip
            if not (secret.files or secret.outputs or secret.routes):
                continue
        if not any(secret.found_in(place.data) for place in wanted):
            missed.append(secret.name)
    return missed


def controlled(secrets: list[Secret]) -> int:
    return sum(bool(s.sent != ("", "") or s.files or s.outputs or s.routes) for s in secrets)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@dataclass
class Permissions:
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def expect(self, path: Path, mode: int, what: str) -> None:
        self.checked.append(what)
        if not path.exists():
            self.problems.append(f"{what}: {path} is missing")
            return
        found = mode_of(path)
        if found & 0o077 or found & mode != mode:
            self.problems.append(f"{what}: {path} is {found:o}, expected {mode:o}")


def check_client_files(recording: Recording, permissions: Permissions) -> None:
    for home in recording.wallet_homes:
        permissions.expect(home, OWNER_ONLY_DIR, f"wallet home {home.name}")
        for name in ("wallet.json", "device-secret", "wallet.lock"):
            permissions.expect(home / name, OWNER_ONLY_FILE, f"wallet {name} ({home.name})")
    for home in recording.pos_homes:
        permissions.expect(home, OWNER_ONLY_DIR, f"till home {home.name}")
        permissions.expect(home / "pos.json", OWNER_ONLY_FILE, f"till pos.json ({home.name})")


# -- the test ------------------------------------------------------------------------------------


@contextlib.contextmanager
def recorded_servers(
    tmp_path: Path, *, own_process: bool, rng: random.Random
) -> Iterator[Iterator[Recording]]:
    """Two servers, each behind its own recording proxy, with its own notification endpoint;
    the recordings come one at a time, each as soon as its server answers (the PostgreSQL one
    starts while the SQLite recording runs). SQLite: `run`, with no master key configured, so the
    server makes instance/master.key at its first start, in an instance folder it creates.
    PostgreSQL: `serve` (2 workers), the key from the environment."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database())
        homes = [tmp_path / "sqlite", tmp_path / "postgres"]
        for home in homes:
            home.mkdir(mode=OWNER_ONLY_DIR)
        instance = homes[0] / "instance"
        servers = [
            _live("sqlite", f"sqlite:///{instance / 'paycode.db'}", {
                "PAYCODE_INSTANCE": str(instance), "PAYCODE_MASTER_KEY": "",
            }),
            _live("postgres", url, {}),
        ]  # fmt: skip
        starts = stack.enter_context(_running(servers, own_process=own_process))

        def recordings() -> Iterator[Recording]:
            for server, home, started in zip(servers, homes, starts, strict=True):
                started.result()
                endpoint = NotifyEndpoint()
                stack.callback(endpoint.close)
                proxy = RecordingProxy(server.url)
                stack.callback(proxy.close)
                yield Recording(server, proxy, endpoint, home, own_process, rng)

        yield recordings()


def _live(backend: str, database_url: str, extra_env: dict[str, str]) -> LiveServer:
    instance = Path(tempfile.mkdtemp(prefix=f"paycode-secrets-{backend}-"))
    return LiveServer(
        backend, database_url, instance, server_env(instance, database_url) | extra_env
    )


@contextlib.contextmanager
def _running(servers: list[LiveServer], *, own_process: bool) -> Iterator[list[Future[None]]]:
    """tests/live_server.py's start, but each server starts in the background once init-db
    (the first start, which makes the master key file) has run for all; yields the starts.
    Stopped and their folders removed after."""
    pool = ThreadPoolExecutor(max_workers=len(servers))
    try:
        for server in servers:
            init = run_console("server", ["init-db"], server.env, "", own_process=own_process)
            assert init.returncode == 0, init.stdout + init.stderr
        yield [
            pool.submit(s.start, mode="run" if s.backend == "sqlite" else "serve", workers=2)
            for s in servers
        ]
    except BaseException:
        for server in servers:
            print(f"--- {server.backend} server log ---\n{server.log()}", file=sys.stderr)
        raise
    finally:
        pool.shutdown(wait=True)  # a start still under way finishes, so that it can be stopped
        with ThreadPoolExecutor(max_workers=len(servers)) as stopping:
            list(stopping.map(LiveServer.stop, servers))
        for server in servers:
            shutil.rmtree(server.instance, ignore_errors=True)


def server_secrets(recording: Recording) -> None:
    """The master key: from the environment, or the file the server made at first start."""
    configured = recording.server.env.get("PAYCODE_MASTER_KEY")
    if configured:
        recording.secret(key_secret("master key", base64.b64decode(configured)))
        return
    key_file = Path(recording.server.env["PAYCODE_INSTANCE"]) / "master.key"
    key = base64.b64decode(key_file.read_bytes().strip())
    recording.secret(
        key_secret("master key (made at first start)", key, files=("instance/master.key",))
    )


def places_of(recording: Recording) -> list[Place]:
    server = recording.server
    places = [
        *database_places(server.database_url),
        Place("log", "server log", server.log_path.read_bytes()),
        *recording.proxy.answers,
        *recording.outputs,
    ]
    for folder in sorted({Path(server.env["PAYCODE_INSTANCE"]), server.instance}):
        # the database files too (SQLite: free pages and the journal included); the log is
        # searched above
        found = file_places(folder, folder.name)
        places += [place for place in found if not place.name.endswith("/server.log")]
    for home in [*recording.wallet_homes, *recording.pos_homes]:
        places += file_places(home, home.name)
    return places


def server_permissions(recording: Recording, permissions: Permissions) -> None:
    server = recording.server
    if server.backend == "sqlite":
        instance = Path(server.env["PAYCODE_INSTANCE"])
        permissions.expect(instance, OWNER_ONLY_DIR, "instance folder made at first start")
        permissions.expect(instance / "master.key", OWNER_ONLY_FILE, "master.key")
        for name in ("paycode.db", "paycode.db-wal", "paycode.db-shm"):
            if name == "paycode.db" or (instance / name).exists():
                permissions.expect(instance / name, OWNER_ONLY_FILE, f"SQLite file {name}")
        return
    metrics = server.instance / "prometheus"
    permissions.expect(metrics, OWNER_ONLY_DIR, "metrics folder of serve")
    for child in sorted(metrics.iterdir()):
        permissions.expect(child, OWNER_ONLY_DIR, f"metrics folder {child.name}")


def test_no_secret_at_rest_in_answers_or_logs(
    figures: Figures, seed: int, scale: Scale, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures.section = SECTION
    figures.seed = seed
    monkeypatch.delenv("PAYCODE_WALLET_PASSPHRASE", raising=False)  # the keystore's own file
    rng = random.Random(seed)
    rounds = scale.pick(short=1, full=3)
    own_process = scale.full
    permissions = Permissions()
    started = time.monotonic()
    if not own_process:  # the keystore's KDF cost is not what this test is about
        monkeypatch.setattr(keystore, "SCRYPT_N", FAST_SCRYPT_N)
    with recorded_servers(tmp_path, own_process=own_process, rng=rng) as recordings:
        for recording in recordings:
            backend = recording.server.backend
            server_secrets(recording)
            for round_no in range(rounds):
                run_round(recording, round_no)
                figures.runs += 1
            for problem in deliver_notifications(recording):
                figures.anomaly(f"{backend}: {problem}")
            delivered = len(recording.endpoint.received)
            if delivered == 0:
                figures.anomaly(f"{backend}: no notification was delivered")
            places = places_of(recording)
            searched, findings = search(recording.secrets, places)
            for name in blind_spots(recording.secrets, places, recording.proxy.requests):
                figures.anomaly(f"{backend}: the search did not find {name} where it must be")
            figures.operations += controlled(recording.secrets)
            server_permissions(recording, permissions)
            check_client_files(recording, permissions)
            figures.operations += searched
            for finding in findings:
                figures.anomaly(f"{backend}: {finding.secret} in {finding.place} ({finding.forms})")
            kinds: dict[str, int] = {}
            for place in places:
                kinds[place.kind] = kinds.get(place.kind, 0) + 1
            figures.details |= {
                f"{backend} secrets": len(recording.secrets),
                f"{backend} positive controls": controlled(recording.secrets),
                f"{backend} places": len(places),
                **{f"{backend} places: {kind}": count for kind, count in sorted(kinds.items())},
                f"{backend} notifications": delivered,
                f"{backend} console commands": recording.counts.get("console commands", 0),
            }
    figures.operations += len(permissions.checked)
    for problem in permissions.problems:
        figures.anomaly(problem)
    umask = os.umask(0o022)
    os.umask(umask)
    figures.details |= {
        "umask": f"{umask:03o}",
        "rounds per server": rounds,
        "console scripts": "own processes" if own_process else "their main, in this process",
        "permission checks": len(permissions.checked),
        **permissions.notes,
        "flow seconds": round(time.monotonic() - started, 1),
    }
    assert figures.anomalies == 0, figures.anomaly_notes
