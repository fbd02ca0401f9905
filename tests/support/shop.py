"""The one shop builder: customers with wallets, merchants with tills, on any server.

Library level (for tests of the server, the wallet library and the till library): `new_user`,
`new_phone` (a wallet enrolled over the server's API), `new_till` (a merchant and a terminal
client), `code_of`, `charge` and `refused`. Users and merchants are made in this process with
the same operator services `paycode-server users create` and `merchants create` run (tests of
the commands themselves run those). Servers are module-scoped, so every helper makes fresh
names.

Console level (CLI end-to-end tests): `open_shop` makes a customer 'carol' with a wallet home
and a POS home per merchant, and `Shop.wallet` / `Shop.pos` run `paycode-wallet` and
`paycode-pos` with --json, as a person would type them: in this process (the console script's
main(argv), run_in_process) when the server is an InProcessServer, which no other process could
reach, and as processes of their own when it is a LiveServer (tests of the process itself), or
with `open_shop(..., in_process=True)` in this process over real HTTP to it. A command wrapped
in another (`wrap=["xvfb-run", ...]`) is always a process, and needs a LiveServer.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
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
from tests.support.servers import InProcessServer, Server, run_command, run_in_process

PASSWORD = "shop test password"
"""Every customer's log-in password (users are made with fresh names)."""
PASSPHRASE = "phone test wallet"
FAST_SCRYPT_N = 2**10
"""Wallets made in-process use cheap scrypt: a test opens and saves keystores many times."""


@dataclass
class Shop:
    server: Server
    home: Path
    env: dict[str, str]
    tills: dict[str, Path] = field(default_factory=dict)
    """Merchant name -> its POS home."""
    commands_in_process: bool | None = None
    """Run the console scripts in this process; None: exactly when the server is in-process."""

    @property
    def wallet_home(self) -> Path:
        return self.home / "wallet"

    @property
    def in_process(self) -> bool:
        """Whether the console scripts run in this process: only they reach an in-process
        server (its URL is mounted here, not listened on)."""
        if isinstance(self.server, InProcessServer):
            assert self.commands_in_process is not False, "no process reaches an in-process server"
            return True
        return bool(self.commands_in_process)

    def run(
        self,
        module: str,
        args: list[str],
        env: dict[str, str],
        stdin: str | None = None,
        wrap: list[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`python -m MODULE ARGS`: its main(argv) in this process for an in-process server,
        else a process of its own (always one when `wrap`ped, which needs a live server)."""
        if wrap:
            assert not isinstance(self.server, InProcessServer), "a wrapped command is a process"
        elif self.in_process:
            return run_in_process(module, env, *args, stdin=stdin)
        return run_command([*(wrap or []), sys.executable, "-m", module, *args], env, stdin)

    def pos(
        self,
        *args: str,
        merchant: str = "",
        stdin: str | None = None,
        wrap: list[str] | None = None,
    ) -> Any:
        pos_home = self.tills[merchant or next(iter(self.tills))]
        env = self.env | {"PAYCODE_POS_HOME": str(pos_home)}
        return self.run("paycode.merchant_pos.cli", ["--json", *args], env, stdin, wrap)

    def wallet_raw(self, *args: str, stdin: str | None = None) -> Any:
        options = ["--json", "--home", str(self.wallet_home)]
        return self.run("paycode.client.cli", [*options, *args], self.env, stdin)

    def wallet(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        return ok_json(self.wallet_raw(*args, stdin=stdin))

    def code(self, version: str, *extra: str) -> str:
        return str(self.wallet("code", "--version", version, *extra)["code"])

    def balance(self) -> str:
        return str(self.wallet("balance")["accounts"][0]["balance"])

    def add_till(self, merchant: str) -> None:
        """Create the merchant and a terminal, and configure a POS home for it."""
        made = self.server.cli_in_process("merchants", "create", merchant, "--currency", "CNY")
        assert made.returncode == 0, made.stdout + made.stderr
        terminal = ok_json(self.server.cli_in_process("--json", "terminals", "create", merchant))
        self.tills[merchant] = self.home / f"till-{len(self.tills)}"
        configured = self.pos(
            "configure",
            "--server",
            self.server.url,
            "--key-id",
            terminal["key_id"],
            "--secret-stdin",
            merchant=merchant,
            stdin=terminal["secret"] + "\n",
        )
        ok_json(configured)


def open_shop(
    server: Server,
    home: Path,
    *,
    merchants: list[str],
    top_up: str,
    in_process: bool | None = None,
) -> Shop:
    """A customer 'carol' with `top_up` CNY and a wallet enrolled in every version.
    `in_process`: Shop.commands_in_process."""
    created = server.cli_in_process(
        "users", "create", "carol", "--password-stdin", "--currency", "CNY", stdin=PASSWORD + "\n"
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert server.cli_in_process("users", "top-up", "carol", top_up).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    env |= {"PAYCODE_WALLET_PASSPHRASE": "shop test wallet", "PYTHONUNBUFFERED": "1"}
    shop = Shop(server, home, env, commands_in_process=in_process)
    for merchant in merchants:
        shop.add_till(merchant)
    shop.wallet(
        "enroll",
        "--server",
        server.url,
        "--user",
        "carol",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    return shop


def waiting_payment(pending_items: Callable[[], list[dict[str, Any]]], till: Future[Any]) -> str:
    """The id of the first payment the wallet lists as waiting, while a POS charge runs in
    `till`; fails at once if the POS ends first, or after about 20 s."""
    for _ in range(100):
        if till.done():
            done = till.result()
            raise AssertionError(f"the POS ended first: {done.stdout} {done.stderr}")
        items = pending_items()
        if items:
            return str(items[0]["payment_id"])
        time.sleep(0.2)
    raise AssertionError("the charge never showed up as pending in the wallet")


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


def new_user(server: Server, prefix: str = "user", top_up: str = "100.00") -> str:
    """A user with `top_up` CNY, made in-process with what `paycode-server users create` and
    `users top-up` run (tests of the commands themselves spawn them; a subprocess per helper
    call would cost a second each)."""
    name = unique(prefix)
    with server.session() as session:
        admin.create_user(session, name, PASSWORD, "CNY", now_s=time.time())
        admin.top_up(session, name, top_up, time.time(), "CNY")
    return name


def new_phone(server: Server, home: Path, user: str, versions: list[str]) -> Wallet:
    """A wallet in `home` enrolled for `user` on `versions`, one device each."""
    wallet = Wallet.open_or_create(home)
    client = ServerClient(server.url)
    online.enroll(wallet, client, user=user, password=PASSWORD, versions=versions)
    return wallet


def new_till(server: Server) -> TerminalClient:
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
