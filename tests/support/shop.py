"""The one shop builder: customers with wallets, merchants with tills, on any server.

Library level (for tests of the server, the wallet library and the till library): `new_user`,
`new_phone` (a wallet enrolled over the server's API), `new_till` (a merchant and a terminal
client), `code_of`, `charge` and `refused`. Users and merchants are made in this process with
the same operator services `paycode-server users create` and `merchants create` run (tests of
the commands themselves run those). Servers are module-scoped, so every helper makes fresh
names.

Console level (CLI end-to-end tests): `open_shop` makes a customer 'carol' with a wallet home
and a POS home per merchant, and `Shop.wallet` / `Shop.pos` run `paycode-wallet` and
`paycode-pos` with --json, as a person would type them.

By id, many at once (the reliability suite): `new_merchant` (a `Merchant`: its ids, a terminal
key, its till; with a notify URL, an allow-list, a dashboard password), `new_terminal`,
`set_limits`, `new_users` (one shared password hash) and `user_id`; `run_console` runs any
console script as a process or in this process, with `person_env` for the wallet and the POS.
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
from paycode.server.books import ledger
from paycode.server.config import ServerConfig
from paycode.server.dashboard import access
from paycode.server.database.models import User, new_id
from paycode.server.notifications import events
from paycode.server.operations import admin
from paycode.server.safety.passwords import hash_password
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.errors import ServerRejected
from tests.support.servers import Server, run_command, run_in_process

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

    @property
    def wallet_home(self) -> Path:
        return self.home / "wallet"

    def pos(
        self,
        *args: str,
        merchant: str = "",
        stdin: str | None = None,
        wrap: list[str] | None = None,
    ) -> Any:
        pos_home = self.tills[merchant or next(iter(self.tills))]
        command = [*(wrap or []), sys.executable, "-m", "paycode.merchant_pos.cli", "--json", *args]
        return run_command(command, self.env | {"PAYCODE_POS_HOME": str(pos_home)}, stdin)

    def wallet_raw(self, *args: str, stdin: str | None = None) -> Any:
        command = [
            sys.executable,
            "-m",
            "paycode.client.cli",
            "--json",
            "--home",
            str(self.wallet_home),
        ]
        return run_command([*command, *args], self.env, stdin)

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


def open_shop(server: Server, home: Path, *, merchants: list[str], top_up: str) -> Shop:
    """A customer 'carol' with `top_up` CNY and a wallet enrolled in every version."""
    created = server.cli_in_process(
        "users", "create", "carol", "--password-stdin", "--currency", "CNY", stdin=PASSWORD + "\n"
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert server.cli_in_process("users", "top-up", "carol", top_up).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    env |= {"PAYCODE_WALLET_PASSPHRASE": "shop test wallet", "PYTHONUNBUFFERED": "1"}
    shop = Shop(server, home, env)
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


# -- merchants and customers by id, many at once (tests/reliability) ----------------------------


@dataclass(frozen=True)
class Merchant:
    """A merchant and one terminal key of it, with the ids a test reads the database by."""

    name: str
    merchant_id: str
    key_id: str
    secret: bytes = field(repr=False)

    def till(self, url: str, **options: Any) -> TerminalClient:
        """The real terminal client for this key at `url` (a server's address can change when
        it restarts); its back-off sleeps are skipped unless `sleep` is given."""
        no_sleep: dict[str, Any] = {"sleep": lambda _s: None}
        return TerminalClient(url, self.key_id, self.secret, **(no_sleep | options))


def new_merchant(
    server: Server,
    prefix: str = "Cafe",
    *,
    notify_url: str | None = None,
    allow_ips: list[str] | None = None,
    notify_secret: bool = False,
    dashboard_password: str | None = None,
) -> Merchant:
    """A fresh merchant with one terminal, made in-process with what `merchants create
    [--notify-url] [--allow-ip]`, `merchants notify-secret`, `merchants set-password` and
    `terminals create` run."""
    box = SecretBox.from_config(ServerConfig.from_env(server.env))
    now_s = time.time()
    with server.session() as session:
        merchant = admin.create_merchant(
            session, unique(prefix), "CNY", notify_url, allow_ips=allow_ips, now_s=now_s
        )
        if notify_secret:
            events.issue_secret(session, box, merchant)
        if dashboard_password is not None:
            access.set_password(session, merchant.id, dashboard_password)
        terminal, secret = admin.create_terminal(session, box, merchant.id, now_s)
        return Merchant(merchant.name, merchant.id, terminal.id, secret)


def new_terminal(server: Server, merchant: Merchant) -> Merchant:
    """Another terminal key of the same merchant (`terminals create`)."""
    box = SecretBox.from_config(ServerConfig.from_env(server.env))
    with server.session() as session:
        terminal, secret = admin.create_terminal(session, box, merchant.merchant_id, time.time())
    return Merchant(merchant.name, merchant.merchant_id, terminal.id, secret)


def set_limits(
    server: Server,
    user: str,
    *,
    payment_max: str | None = None,
    daily_max: str | None = None,
    daily_count_max: int = admin.DAILY_COUNT_MAX,
) -> None:
    """`users limits` for `user` in CNY: None keeps the server's default. By default only the
    daily count is lifted (to its maximum): tests that race money, not limits, pay often."""
    with server.session() as session:
        admin.set_limits(
            session,
            user,
            "CNY",
            payment_max=payment_max,
            daily_max=daily_max,
            daily_count_max=daily_count_max,
            reset=False,
        )


def new_users(server: Server, prefix: str, top_ups: list[str]) -> list[str]:
    """One user per amount in `top_ups`, as new_user makes them, but sharing one password
    hash: the server's scrypt costs ~0.1 s a user, and a load test that makes dozens of users
    is not about their log-ins. Each user's password is still PASSWORD."""
    password_hash = hash_password(PASSWORD)
    names = [unique(prefix) for _ in top_ups]
    now_s = time.time()
    with server.session() as session:
        for name, top_up in zip(names, top_ups, strict=True):
            # admin.create_user's rows, with the hash made once above
            user = User(
                id=new_id("usr"),
                name=admin.check_user_name(name),
                password_hash=password_hash,
                created_at_s=now_s,
            )
            session.add(user)
            session.flush()
            ledger.open_account(session, "user", user.id, "CNY")
            admin.top_up(session, name, top_up, now_s, "CNY")
    return names


def user_id(server: Server, name: str) -> str:
    with server.session() as session:
        return admin.find_user(session, name).id


# -- the console scripts, as processes or in this process ---------------------------------------

CONSOLE_SCRIPTS = {
    "server": "paycode.server.cli",
    "wallet": "paycode.client.cli",
    "pos": "paycode.merchant_pos.cli",
}
"""`paycode-<name>` -> its module."""


def person_env() -> dict[str, str]:
    """A person's shell for paycode-wallet and paycode-pos: the test runner's environment
    without any PAYCODE_* setting (so a wallet keeps its passphrase in its own file)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PAYCODE_")}
    return env | {"PYTHONUNBUFFERED": "1"}


def run_console(
    program: str,
    args: list[str],
    env: dict[str, str],
    stdin: str = "",
    *,
    own_process: bool,
) -> subprocess.CompletedProcess[str]:
    """`paycode-<program> ARGS` as its own process, or its `main` in this one (the same code
    without the interpreter's start-up; see paycode.server.testing.run_in_process)."""
    module = CONSOLE_SCRIPTS[program]
    if own_process:
        return run_command([sys.executable, "-m", module, *args], env, stdin)
    return run_in_process(module, env, *args, stdin=stdin)
