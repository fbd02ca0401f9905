"""Notify URLs that point into the operator's own network are refused (issue 19, item 10):
when set (`merchants create/update --notify-url`) and when delivered (the name is resolved,
every address checked, and the connection made to a checked one), unless the operator sets
PAYCODE_NOTIFY_ALLOW_PRIVATE=1. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from paycode.server.notifications import delivery, destinations
from tests.server.test_notifications import WORKER_ENV, Receiver, charge, customer, outbox
from tests.support.servers import Server, run_cli_in_process
from tests.support.shop import new_merchant, unique, use_fast_keystore

PRIVATE_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:9/",
    "http://[::1]:8080/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://10.0.0.5/hook",
    "http://192.168.1.1/hook",
    "https://0.0.0.0/hook",
    "http://localhost:8000/hook",
    "http://224.0.0.1/hook",
]
REBOUND_NAME = "receiver.rebinding.test"
"""A name this test resolves to 127.0.0.1 (as an attacker's DNS would, after the URL was set)."""


@pytest.fixture(autouse=True)
def _fast_wallets(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def _cli(server: Server, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
    done = run_cli_in_process(server.env | env, "--json", *args)
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_a_merchant_notified_at_a_private_address_is_refused(server: Server, url: str) -> None:
    """Before the fix: 169.254.169.254 (a cloud's metadata service) and 127.0.0.1 were stored,
    and the worker POSTed there."""
    status, body = _cli(server, "merchants", "create", unique("Hook"), "--notify-url", url)
    assert status != 0 and body["error"]["code"] == "notify_url_invalid", body
    assert destinations.ALLOW_PRIVATE_ENV in body["error"]["message"]


def test_a_notify_url_changed_to_a_private_address_is_refused(server: Server) -> None:
    name = unique("Hook")
    made = _cli(server, "merchants", "create", name, "--notify-url", "https://shop.example/")
    assert made[0] == 0, made
    status, body = _cli(
        server, "merchants", "update", name, "--notify-url", "http://169.254.169.254/"
    )
    assert status != 0 and body["error"]["code"] == "notify_url_invalid", body


def test_the_operator_override_allows_a_private_receiver(server: Server) -> None:
    allow = {destinations.ALLOW_PRIVATE_ENV: "1"}
    name = unique("Hook")
    made = _cli(server, "merchants", "create", name, "--notify-url", "http://10.0.0.5/h", **allow)
    assert made[0] == 0 and made[1]["merchant"]["notify_url"] == "http://10.0.0.5/h"
    moved = _cli(server, "merchants", "update", name, "--notify-url", "http://127.0.0.1/", **allow)
    assert moved[0] == 0, moved


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """REBOUND_NAME resolves to 127.0.0.1; every other name as the system says."""
    real = socket.getaddrinfo

    def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == REBOUND_NAME else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    yield


def test_delivery_to_a_name_resolving_to_a_private_address_is_refused(
    server: Server, rebinding: None, tmp_path: Any
) -> None:
    """The URL passed when it was set (a name); at delivery it resolves to 127.0.0.1: refused,
    no connection made, recorded as the row's error. With the override it is delivered."""
    receiver = Receiver()
    try:
        url = receiver.url.replace("127.0.0.1", REBOUND_NAME)
        shop = new_merchant(server, "Rebound", notify_url=url)
        receiver.secret_b64 = shop.notify_secret_b64
        paid = charge(shop, customer(server, tmp_path), "3.00")
        env = server.env | {
            key: value for key, value in WORKER_ENV.items() if key != destinations.ALLOW_PRIVATE_ENV
        }
        run_cli_in_process(env, "--json", "worker", "--once")
        [row] = outbox(server, payment_id=paid["payment_id"])
        assert row.delivered_at_s is None and "non-public" in (row.last_error or ""), row
        assert receiver.deliveries == []
        with server.session() as session:  # due again now, not after the back-off
            session.get(type(row), row.event_id).next_attempt_at_s = 0.0  # type: ignore[union-attr]
        allowed = env | {destinations.ALLOW_PRIVATE_ENV: "1"}
        run_cli_in_process(allowed, "--json", "worker", "--once")
        [row] = outbox(server, payment_id=paid["payment_id"])
        assert row.delivered_at_s is not None, row.last_error
        assert [d.valid for d in receiver.for_payment(paid["payment_id"])] == [True]
    finally:
        receiver.close()


def test_post_refuses_every_non_public_address_before_connecting(rebinding: None) -> None:
    # 2130706433 is 127.0.0.1 as one number: no literal at set time, refused when resolved
    for url in (*PRIVATE_URLS, f"http://{REBOUND_NAME}:9/x", "http://2130706433:9/x"):
        error = delivery.post(url, b"{}", {}, timeout_s=2)
        assert error is not None and "non-public" in error, (url, error)
