"""Phones and a till against a live server (tests/live_server.py), for the device lifecycle
and clock tests.

Users and merchants are made with the real `paycode-server` CLI, wallets are enrolled with the
real wallet library over HTTP, and codes are charged by the real terminal client. Servers are
module-scoped, so every helper makes fresh names.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from paycode.appkit.http_client import ServerClient
from paycode.client import keystore, online
from paycode.client.wallet import Wallet
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.config import ServerConfig
from paycode.server.operations import admin
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.errors import ServerRejected
from tests.support.servers import LiveServer

PASSWORD = "phone test password"
PASSPHRASE = "phone test wallet"
FAST_SCRYPT_N = 2**10
"""Wallets made in-process use cheap scrypt: a test opens and saves keystores many times."""


def use_fast_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keystore.PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.setattr(keystore, "SCRYPT_N", FAST_SCRYPT_N)


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def ok_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stdout + done.stderr
    reply: dict[str, Any] = json.loads(done.stdout)
    assert reply["ok"] is True
    return reply


def new_user(server: LiveServer, prefix: str = "user", top_up: str = "100.00") -> str:
    """A user with `top_up` CNY, made in-process with what `paycode-server users create` and
    `users top-up` run (tests of the commands themselves spawn them; a subprocess per helper
    call would cost a second each)."""
    name = unique(prefix)
    with server.session() as session:
        admin.create_user(session, name, PASSWORD, "CNY", now_s=time.time())
        admin.top_up(session, name, top_up, time.time(), "CNY")
    return name


def new_phone(server: LiveServer, home: Path, user: str, versions: list[str]) -> Wallet:
    """A wallet in `home` enrolled for `user` on `versions`, one device each."""
    wallet = Wallet.open_or_create(home)
    client = ServerClient(server.url)
    online.enroll(wallet, client, user=user, password=PASSWORD, versions=versions)
    return wallet


def new_till(server: LiveServer) -> TerminalClient:
    """A fresh merchant and terminal, made in-process as `merchants create` and `terminals
    create` make them."""
    merchant = unique("Cafe")
    box = SecretBox.from_config(ServerConfig.from_env(server.env))
    with server.session() as session:
        admin.create_merchant(session, merchant, "CNY", now_s=time.time())
        terminal, secret = admin.create_terminal(session, box, merchant, time.time())
        key_id = terminal.id
    return TerminalClient(server.url, key_id, secret, sleep=lambda _s: None)


def code_of(wallet: Wallet, version: str, *, local_now_s: float | None = None) -> str:
    now_s = time.time() if local_now_s is None else local_now_s
    return wallet.next_code(version, local_now_s=now_s).text


def charge(till: TerminalClient, code: str, amount: str = "1.00") -> dict[str, Any]:
    return till.charge(code=code, amount=amount, currency="CNY")


def refused(code: str, call: Any, *args: Any, **kwargs: Any) -> ServerRejected:
    """`call(*args, **kwargs)` fails with the stable `code`; returns the error."""
    with pytest.raises(ServerRejected) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, (caught.value.code, caught.value.message)
    return caught.value
