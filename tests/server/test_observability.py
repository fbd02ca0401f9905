"""Logs and metrics (docs/operations.md, "Metrics" and "Logs").

The end-to-end test runs a whole shop against `paycode-server serve` with 2 gunicorn workers,
through the console scripts a person types: enrollment (a password log-in), a charge with a
code of each version, a replayed code, a refund, a terminal (its secret), a payment above the
password-free limit confirmed with the PIN, and a second log-in whose session token enrolls a
device. Then every secret and every full payment code used is looked for in the server's whole
log and in every console output (but the two whose job is to show one: `terminals create`
prints the terminal secret, `paycode-wallet code` the code), and the metrics are checked
against what was done, summed over both workers. The console scripts run as their main(argv)
in this process (the one shop builder's in-process Shop), over real HTTP to gunicorn, but for
the POS that waits for the PIN: a process, while this thread plays the customer.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from paycode.appkit.http_client import ServerClient
from paycode.client import keystore
from paycode.client.wallet import Wallet
from paycode.server.app import create_app
from paycode.server.operations import metric_buffer, metrics, observability
from paycode.shared.errors import ConfigError
from tests.support.configs import sqlite_test_config
from tests.support.servers import BACKENDS, LiveServer, postgres_database, run_command
from tests.support.servers import start_server as _start_live_server
from tests.support.shop import PASSWORD as SHOP_PASSWORD
from tests.support.shop import (
    Ran,
    Shop,
    ok_json,
    open_shop,
    use_fast_keystore,
    waiting_payment,
)

PASSWORD = "obs test password 7Q"
PIN = "739152"
MERCHANT = "Observed Cafe"
REQUEST_ID = "obs-e2e-0001"
METRICS_TOKEN = "metrics-token-for-tests-0123456789"


# -- the pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "masked"),
    [
        ("874362462609809933982797", "87...2797"),
        ("PC2YSZTDA3BOATVBQMYJZBGHQEM2PLX5EAOO4XC5Z2C", "PC2...5Z2C"),
        ("hQVDUFYwMWGBk08J8FBBWUNPREUDabcdefghijklmnopqrstuvwxyz0123==", "hQVDUFYw...23=="),
        ("  874362462609809933982797\n", "87...2797"),
        ("something else entirely", "?...rely"),
        ("8712", "87..."),
    ],
)
def test_mask_code_keeps_prefix_and_last_four(code: str, masked: str) -> None:
    assert observability.mask_code(code) == masked


def test_redact_removes_every_known_secret_shape() -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    token = "Zq3" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    cases = {
        "code 874362462609809933982797 refused": "code 87...2797 refused",
        "typed 8743 6246 2609 8099 3398 2797.": "typed 87...2797.",
        "v2 PC2YSZTDA3BOATVBQMYJZBGHQEM2PLX5EAOO4XC5Z2C ok": "v2 PC2...5Z2C ok",
        f"secret={key}": "secret=[redacted]",
        f"terminal secret {key} shown": "terminal secret [redacted] shown",
        f"Authorization: Bearer {token}": "Authorization: [redacted]",
        f"sent bearer {token}": "sent bearer [redacted]",
        '{"password": "hunter2 and more", "pin": "123456"}': (
            '{"password": [redacted], "pin": [redacted]}'
        ),
        f"key {os.urandom(32).hex()}": "key [redacted]",
    }
    for given, expected in cases.items():
        assert observability.redact(given) == expected
        assert observability.redact(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "harmless",
    [
        "POST /v1/payments/pay_0123456789abcdef/refunds HTTP/1.1",
        "/v1/wallet/devices/<device_id>/revoke",
        "123e4567-e89b-12d3-a456-426614174000",
        "2026-11-24T10:00:00.123Z took 1700000000.123456 s",
        "error [pin_invalid]: wrong PIN",
        "unexpected OperationalError in request",
    ],
)
def test_redact_leaves_ordinary_text_alone(harmless: str) -> None:
    assert observability.redact(harmless) == harmless


def test_redact_filter_cleans_message_arguments_and_exceptions() -> None:
    code = "874362462609809933982797"
    try:
        raise ValueError(f"bad code {code}")
    except ValueError:
        record = logging.LogRecord(
            "paycode.test", logging.ERROR, __file__, 1, "saw %s", (code,), sys.exc_info()
        )
    record.paycode = {"note": f"password={PASSWORD}"}
    assert observability.RedactSecrets().filter(record)
    line = json.loads(observability.JsonFormatter().format(record))
    assert line["msg"] == "saw 87...2797"
    assert code not in line["exc"] and "87...2797" in line["exc"]
    assert line["note"].startswith("password=[redacted]")
    assert PASSWORD not in json.dumps(line)


def test_request_ids_are_kept_only_when_well_formed() -> None:
    assert observability.request_id_from("abc-123_x.y:z") == "abc-123_x.y:z"
    uuid_text = str(uuid.uuid4())
    assert observability.request_id_from(uuid_text) == uuid_text
    for bad in ["", "has space", "x" * 65, "874362462609809933982797", "é", None]:
        made = observability.request_id_from(bad)
        assert made != bad and len(made) == 16 and int(made, 16) >= 0


def test_version_label_is_bounded() -> None:
    assert metrics.version_label("874362462609809933982797") == "v1"
    assert metrics.version_label(" PC2ABCDEF ") == "v2"
    assert metrics.version_label("garbage") == "unknown"
    assert metrics.version_label(12) == "unknown"


def test_metrics_token_must_be_long_enough() -> None:
    assert observability.MetricsAccess.parse({}).token is None
    assert observability.MetricsAccess.parse({"PAYCODE_METRICS_TOKEN": METRICS_TOKEN}).token
    with pytest.raises(ConfigError):
        observability.MetricsAccess.parse({"PAYCODE_METRICS_TOKEN": "short"})


def test_multiprocess_dir_is_fresh_and_stale_ones_go(tmp_path: Path) -> None:
    parent = tmp_path / observability.MULTIPROC_PARENT
    dead = parent / "999999999"  # no such pid
    live = parent / str(os.getppid())
    for folder in (dead, live):
        folder.mkdir(parents=True)
        (folder / "counter_1.db").write_bytes(b"x")
    mine = observability.prepare_multiprocess_dir(tmp_path, pid=os.getpid())
    assert mine == parent / str(os.getpid()) and list(mine.iterdir()) == []
    assert not dead.exists() and live.exists()


def test_the_cli_does_not_import_prometheus_before_serve_sets_its_directory() -> None:
    """prometheus_client picks in-memory or multiprocess values when it is imported: if the
    gunicorn master imported it before `serve` set PROMETHEUS_MULTIPROC_DIR, every worker
    would count in its own memory and a scrape would see one worker's numbers."""
    probe = (
        "import sys, paycode.server.cli, paycode.server.operations.observability;"
        " sys.exit('prometheus_client' in sys.modules)"
    )
    done = run_command([sys.executable, "-c", probe], dict(os.environ))
    assert done.returncode == 0, done.stdout + done.stderr


# -- the scrape-time gauges -------------------------------------------------------------------


def test_outbox_backlog_before_and_after_the_outbox_exists(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'gauges.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE claims (claim_key TEXT PRIMARY KEY)"))
        connection.execute(text("INSERT INTO claims VALUES ('a'), ('b'), ('c')"))
        assert metrics.outbox_backlog(connection) is None  # migration 0007 not applied yet
        assert metrics.claims_rows(connection) == 3
        connection.execute(
            text(
                "CREATE TABLE notification_outbox (event_id TEXT PRIMARY KEY, "
                "next_attempt_at_s FLOAT, delivered_at_s FLOAT)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO notification_outbox VALUES "
                "('e1', 10.0, NULL), ('e2', NULL, 5.0), ('e3', 20.0, NULL), ('e4', NULL, NULL)"
            )
        )
        assert metrics.outbox_backlog(connection) == 2  # due or leased; not delivered or dead
    gauges = metrics.DatabaseGauges(engine, ttl_s=60)
    first = {family.name: family.samples[0].value for family in gauges.collect()}
    assert first == {"paycode_webhook_backlog": 2, "paycode_claims_rows": 3}
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO claims VALUES ('d')"))
    cached = {family.name: family.samples[0].value for family in gauges.collect()}
    assert cached == first  # read once per TTL, not per scrape
    engine.dispose()


def test_database_gauges_survive_a_missing_schema(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    assert list(metrics.DatabaseGauges(engine).collect()) == []  # no claims table: left out
    engine.dispose()


# -- /metrics access, in process ----------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.delenv(observability.MULTIPROC_ENV, raising=False)
    monkeypatch.delenv(observability.METRICS_TOKEN_ENV, raising=False)
    config = sqlite_test_config(tmp_path)
    application = create_app(config)
    yield application
    application.extensions["paycode_engine"].dispose()


def test_metrics_default_to_loopback_without_a_proxy(app: Flask) -> None:
    client = app.test_client()
    local = client.get("/metrics", headers={"X-Request-Id": REQUEST_ID})
    assert local.status_code == 200 and local.headers["X-Request-Id"] == REQUEST_ID
    assert b"paycode_http_request_duration_seconds" in local.data
    remote = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert remote.status_code == 403 and remote.get_json()["code"] == "forbidden"
    proxied = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 403


def test_metrics_token_opens_them_from_anywhere(app: Flask) -> None:
    config = app.config["PAYCODE"]
    metrics = observability.MetricsAccess(METRICS_TOKEN)
    app.config["PAYCODE"] = dataclasses.replace(config, metrics=metrics)
    client = app.test_client()
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    ok = client.get(
        "/metrics", environ_base=remote, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert ok.status_code == 200
    for header in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}):
        refused = client.get("/metrics", environ_base=remote, headers=header)
        assert refused.status_code == 401 and refused.get_json()["code"] == "unauthorized"
    assert client.get("/metrics").status_code == 401  # loopback too, once a token is set


def test_unmatched_paths_are_one_label(app: Flask) -> None:
    client = app.test_client()
    for path in ("/v1/nothing/pay_0123456789abcdef", "/874362462609809933982797"):
        assert client.get(path).status_code == 404
    scraped = client.get("/metrics").data.decode()
    assert 'route="unmatched"' in scraped
    assert "pay_0123456789abcdef" not in scraped and "874362462609809933982797" not in scraped


# -- end to end: gunicorn, 2 workers ------------------------------------------------------------


@dataclass
class Secrets:
    """Everything that must never be logged, as text and (for keys) as raw bytes."""

    texts: dict[str, str] = field(default_factory=dict)
    raw: dict[str, bytes] = field(default_factory=dict)

    def key(self, name: str, value: bytes) -> None:
        self.raw[name] = value
        self.texts[f"{name} (base64)"] = base64.b64encode(value).decode()
        self.texts[f"{name} (base64url)"] = base64.urlsafe_b64encode(value).decode().rstrip("=")
        self.texts[f"{name} (hex)"] = value.hex()

    def found_in(self, data: bytes) -> list[str]:
        lowered = data.decode(errors="replace")
        hits = [name for name, value in self.texts.items() if value in lowered]
        return hits + [name for name, value in self.raw.items() if value in data]


def _pos_charge(shop: Shop, code: str, amount: str, *, wait_s: str = "5") -> Any:
    return shop.pos(
        "charge", "--amount", amount, "--source", "stdin", "--confirm-wait-s", wait_s,
        stdin=code + "\n",
    )  # fmt: skip


def _waiting_pos_charge(shop: Shop, code: str, amount: str) -> Any:
    """`paycode-pos charge` as a process, waiting while this thread is the customer."""
    return shop.spawn_pos(
        "charge", "--amount", amount, "--source", "stdin", "--confirm-wait-s", "60",
        stdin=code + "\n",
    )  # fmt: skip


def _shows_a_secret(ran: Ran) -> bool:
    """The two commands whose job is to show one: `terminals create` prints the terminal
    secret, `paycode-wallet code` the code."""
    if ran.script == "paycode-wallet":
        return ran.args[:1] == ("code",)
    return ran.script == "paycode-server" and "terminals" in ran.args and "create" in ran.args


def _shop_flow(shop: Shop, secrets: Secrets) -> dict[tuple[str, str], int]:
    """The whole flow after open_shop (users create, top-up, merchants create, terminals create,
    pos configure, wallet enroll); returns the charges made, (outcome, code_version) -> count."""
    made: Counter[tuple[str, str]] = Counter()
    [created] = [ran for ran in shop.ran if _shows_a_secret(ran)]  # the terminal, shown once
    terminal = json.loads(created.done.stdout)
    secrets.key("terminal secret", base64.b64decode(terminal["secret"]))
    shop.wallet("set-pin", "--stdin", stdin=f"{SHOP_PASSWORD}\n{PIN}\n")

    codes = {version: shop.code(version) for version in ("v1", "v2", "v3")}
    payment_ids = []
    for version, code in codes.items():
        secrets.texts[f"{version} code"] = code
        paid = _pos_charge(shop, code, "1.00")
        assert paid.returncode == 0, paid.stdout + paid.stderr
        payment_ids.append(json.loads(paid.stdout)["payment"]["payment_id"])
        made["succeeded", version] += 1
    replayed = _pos_charge(shop, codes["v1"], "1.00")  # the failed charge: a code is single-use
    assert replayed.returncode == 3 and json.loads(replayed.stdout)["code"] == "code_replayed"
    made["code_replayed", "v1"] += 1
    refunded = shop.pos("refund", payment_ids[0], "--amount", "0.50")
    assert refunded.returncode == 0, refunded.stdout + refunded.stderr
    assert shop.pos("query", payment_ids[0]).returncode == 0

    ok_json(shop.server_cli("--json", "users", "limits", shop.customer, "--payment-max", "5.00"))
    big = shop.code("v2")
    secrets.texts["step-up code"] = big
    with ThreadPoolExecutor(max_workers=1) as pool:
        till = pool.submit(_waiting_pos_charge, shop, big, "20.00")
        waiting = waiting_payment(lambda: shop.wallet("pending")["items"], till)
        confirmed = shop.wallet("confirm", waiting, "--stdin", stdin=PIN + "\n")
        done = till.result()
    assert confirmed["payment"]["status"] == "succeeded"
    assert done.returncode == 0, done.stdout + done.stderr
    made["pending", "v2"] += 1
    return dict(made)


def _token_login(shop: Shop, secrets: Secrets) -> None:
    """A second password log-in, in process, so the test knows the session token, which then
    enrolls a device through `Authorization: Bearer`."""
    client = ServerClient(shop.server.url)
    login = {"user": shop.customer, "password": SHOP_PASSWORD}
    session = client.call("POST", "/v1/wallet/sessions", login)
    token = str(session.body["token"])
    secrets.texts["session token"] = token
    grant = client.call(
        "POST", "/v1/wallet/devices", {"version": "v2", "label": "observability test"},
        bearer=token, idempotency_key=str(uuid.uuid4()),
    ).body  # fmt: skip
    wallet = Wallet.open_or_create(shop.home / "in-process")
    wallet.set_server(shop.server.url, shop.customer)
    wallet.add_grant(grant)
    _device_keys(wallet, "in-process", secrets)


def _device_keys(wallet: Wallet, name: str, secrets: Secrets) -> None:
    for version, enrollment in wallet.enrollments().items():
        credential = enrollment.credential
        if credential.secret:
            secrets.key(f"{name} {version} device key", credential.secret)
        if credential.hiding_key:
            secrets.key(f"{name} {version} hiding key", credential.hiding_key)


Samples = dict[str, list[tuple[dict[str, str], float]]]
METRICS_LAG_S_MAX = 5 * metric_buffer.FLUSH_INTERVAL_S
"""Each worker adds its samples to the shared files once per flush interval: a scrape answered
by one worker may see another's last second late."""


def _scrape_settled(url: str, settled: Callable[[Samples], bool]) -> Samples:
    """Scrape until `settled` holds (every worker has flushed), at most METRICS_LAG_S_MAX."""
    deadline = time.monotonic() + METRICS_LAG_S_MAX
    samples = _scrape(url)
    while not settled(samples) and time.monotonic() < deadline:
        time.sleep(metric_buffer.FLUSH_INTERVAL_S / 4)
        samples = _scrape(url)
    return samples


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        assert response.status == 200
        exposition = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _log_lines(server: LiveServer) -> list[dict[str, Any]]:
    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"a log line that is not JSON: {line[:200]!r}") from None
        assert isinstance(record, dict) and {"ts", "level", "logger", "msg"} <= record.keys()
        parsed.append(record)
    return parsed


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ],
)
def served(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    backend = request.param
    assert backend in BACKENDS
    if backend == "sqlite":
        with _start_live_server("sqlite", mode="serve", workers=2) as server:
            yield server
        return
    with (
        postgres_database(migrated=True) as url,
        _start_live_server("postgres", database_url=url, mode="serve", workers=2) as server,
    ):
        yield server


@pytest.mark.slow
def test_end_to_end_no_secret_in_logs_and_metrics_add_up(
    served: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_keystore(monkeypatch)
    shop = open_shop(served, tmp_path, merchants=[MERCHANT], top_up="500.00", in_process=True)
    monkeypatch.setenv(keystore.PASSPHRASE_ENV, shop.env[keystore.PASSPHRASE_ENV])
    secrets = Secrets()
    secrets.texts |= {"password": SHOP_PASSWORD, "PIN": PIN}
    secrets.key("master key", base64.b64decode(served.env["PAYCODE_MASTER_KEY"]))
    made = _shop_flow(shop, secrets)
    _device_keys(Wallet.open(shop.wallet_home), "cli wallet", secrets)
    _token_login(shop, secrets)

    # Requests spread over both workers; one of them carries its own request id.
    request = urllib.request.Request(f"{served.url}/healthz", headers={"X-Request-Id": REQUEST_ID})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["X-Request-Id"] == REQUEST_ID

    def health(_: int) -> str:
        with urllib.request.urlopen(f"{served.url}/healthz", timeout=10) as answer:
            return str(answer.headers["X-Request-Id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        generated = list(pool.map(health, range(48)))
    assert len(set(generated)) == len(generated)

    # 1. No secret anywhere: the server's whole log, and every console output.
    log_bytes = served.log_path.read_bytes()
    assert secrets.found_in(log_bytes) == []
    scanned = [ran for ran in shop.ran if not _shows_a_secret(ran)]
    assert len(scanned) == len(shop.ran) - 1 - 4  # terminals create; code x 4
    for ran in scanned:
        assert secrets.found_in(ran.output.encode()) == [], (ran.script, ran.args, ran.output[:500])

    # 2. The log is JSON lines; each request has one line with its request id.
    records = _log_lines(served)
    requests = [r for r in records if r["logger"] == "paycode.request"]
    assert requests and all(r["request_id"] for r in requests)
    assert all({"method", "route", "status", "duration_ms"} <= r.keys() for r in requests)
    assert any(r["request_id"] == REQUEST_ID for r in requests)
    assert {r["request_id"] for r in requests} >= set(generated)
    charges = [r for r in requests if r["route"] == "/v1/charges"]
    assert charges and all(r.get("terminal_id") for r in charges)
    masked = {r["payment_code"] for r in charges}
    assert {m.split("...")[0] for m in masked} == {"87", "PC2", "hQVDUFYw"}
    assert any(r.get("device_id") for r in requests if r["route"].startswith("/v1/wallet/"))
    served_by = {r["pid"] for r in requests if r["route"] == "/healthz"}
    assert len(served_by) == 2, "both workers served requests"

    # 3. Metrics: summed over both workers, the charges are the ones made.
    per_route = Counter(
        (r["method"], r["route"], str(r["status"])) for r in requests if r["route"] != "/metrics"
    )

    def _counted(samples: Samples) -> dict[tuple[str, str], int]:
        return {
            (labels["outcome"], labels["code_version"]): int(value)
            for labels, value in samples.get("paycode_charges_total", [])
        }

    def _histogram(samples: Samples) -> dict[tuple[str, str, str], int]:
        return {
            (labels["method"], labels["route"], labels["status"]): int(value)
            for labels, value in samples.get("paycode_http_request_duration_seconds_count", [])
            if labels["route"] != "/metrics"
        }

    samples = _scrape_settled(
        served.url, lambda s: _counted(s) == made and _histogram(s) == dict(per_route)
    )
    assert _counted(samples) == made
    failures = {
        (labels["reason"], labels["code_version"]): int(value)
        for labels, value in samples["paycode_verification_failures_total"]
    }
    assert failures == {("code_replayed", "v1"): 1}
    histogram = _histogram(samples)
    assert histogram == dict(per_route)
    buckets = [
        labels
        for labels, _ in samples["paycode_http_request_duration_seconds_bucket"]
        if labels["route"] == "/v1/charges"
    ]
    assert {labels["le"] for labels in buckets} >= {"0.025", "+Inf"}
    assert all("pay_" not in route for _, route, _ in histogram)  # rules, never paths
    claims = samples["paycode_claims_rows"][0][1]
    assert claims >= 0
    assert samples["paycode_webhook_backlog"][0][1] >= 0


def test_single_process_run_serves_metrics_too() -> None:
    with _start_live_server("sqlite", mode="run") as server:
        for _ in range(3):
            urllib.request.urlopen(f"{server.url}/healthz", timeout=10).close()
        samples = _scrape(server.url)
        counts = [
            value
            for labels, value in samples["paycode_http_request_duration_seconds_count"]
            if labels["route"] == "/healthz"
        ]
        assert counts and counts[0] >= 3
        try:
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{server.url}/metrics", headers={"X-Forwarded-For": "203.0.113.9"}
                ),
                timeout=10,
            )
        except urllib.error.HTTPError as error:
            assert error.code == 403
        else:
            raise AssertionError("a proxied scrape was served")
