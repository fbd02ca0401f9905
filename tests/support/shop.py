"""The one shop builder: customers with wallets, merchants with tills, on any server.

Library level (for tests of the server, the wallet library and the till library): `new_user`,
`new_phone` (a wallet enrolled over the server's API), `new_till` (a merchant and a terminal
client), `code_of`, `charge` and `refused`. Users and merchants are made in this process with
the same operator services `paycode-server users create` and `merchants create` run (tests of
the commands themselves run those). Servers are module-scoped, so every helper makes fresh
names.

Merchants (`new_merchant`): a `Merchant` (its ids, one terminal key and its till), optionally
notified at a URL (with the signing secret `merchants create` issues), behind an address
allow-list, or with a dashboard password.

By id, many at once (the reliability suite): `new_terminal`, `set_limits`, `new_users` (one
shared password hash) and `user_id`; `run_console` runs any console script as a process or in
this process, with `person_env` for the wallet and the POS.

Banks (`open_bank`): a customer with a device of every live version and merchants with a till
each, written directly to the database as enrollment and `terminals create` store them, for
tests that make codes themselves (any counter, time step or merchant binding) and read the
ledger.

Console level (CLI end-to-end tests): `open_shop` makes a customer 'carol_…' with a wallet home
and a POS home per merchant, and `Shop.wallet` / `Shop.pos` run `paycode-wallet` and
`paycode-pos` with --json, as a person would type them: in this process (the console script's
main(argv), run_in_process) when the server is an InProcessServer, which no other process could
reach, and as processes of their own when it is a LiveServer (tests of the process itself), or
with `open_shop(..., in_process=True)` in this process over real HTTP to it. A command wrapped
in another (`wrap=["xvfb-run", ...]`) is always a process, and needs a LiveServer;
`spawn_pos` always spawns the POS. `Shop.ran` keeps every command's output.
"""

from __future__ import annotations

import base64
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
from sqlalchemy import select

from paycode.appkit.http_client import ServerClient
from paycode.client import keystore, online, pending
from paycode.client.wallet import Wallet
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.books import ledger
from paycode.server.config import ServerConfig
from paycode.server.dashboard import access
from paycode.server.database.models import Device, User, new_id
from paycode.server.notifications import events
from paycode.server.operations import admin
from paycode.server.safety import keyring
from paycode.server.safety.passwords import hash_password
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.errors import ServerRejected
from paycode.shared.timestep import step_at
from paycode.shared.versions.base import DeviceCredential
from paycode.shared.versions.registry import VERSIONS, by_name
from tests.support.servers import InProcessServer, Server, run_command, run_in_process

PASSWORD = "shop test password"
"""Every customer's log-in password (users are made with fresh names)."""
PASSPHRASE = "phone test wallet"
FAST_SCRYPT_N = 2**10
"""Wallets made in-process use cheap scrypt: a test opens and saves keystores many times."""
WALLET_MODULE = "paycode.client.cli"
POS_MODULE = "paycode.merchant_pos.cli"


@dataclass(frozen=True)
class Ran:
    """One console command a Shop ran (`script` is paycode-wallet, paycode-pos or
    paycode-server), its arguments and what it did."""

    script: str
    args: tuple[str, ...]
    done: subprocess.CompletedProcess[str]

    @property
    def output(self) -> str:
        return self.done.stdout + self.done.stderr


@dataclass
class Shop:
    server: Server
    home: Path
    env: dict[str, str]
    tills: dict[str, Path] = field(default_factory=dict)
    """Merchant name -> its POS home."""
    commands_in_process: bool | None = None
    """Run the console scripts in this process; None: exactly when the server is in-process."""
    customer: str = "carol"
    """The customer's user name: 'carol' and a random suffix, as the live servers are shared
    by every module of a run."""
    ran: list[Ran] = field(default_factory=list)
    """Every command the shop ran, in order, with its output (for scans of what was printed)."""

    def _kept(
        self, script: str, args: tuple[str, ...], done: subprocess.CompletedProcess[str]
    ) -> subprocess.CompletedProcess[str]:
        self.ran.append(Ran(script, args, done))
        return done

    def _pos_env(self, merchant: str) -> dict[str, str]:
        pos_home = self.tills[merchant or next(iter(self.tills))]
        return self.env | {"PAYCODE_POS_HOME": str(pos_home)}

    def spawn_pos(self, *args: str, merchant: str = "", stdin: str | None = None) -> Any:
        """`paycode-pos --json ARGS` as a process, whatever `in_process` says: a POS that waits
        while this thread plays the customer, or whose exit status is the point."""
        assert not isinstance(self.server, InProcessServer), "no process reaches it"
        command = [sys.executable, "-m", POS_MODULE, "--json", *args]
        return self._kept("paycode-pos", args, run_command(command, self._pos_env(merchant), stdin))

    def server_cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`paycode-server ARGS` against the shop's database, in this process, kept in `ran`."""
        return self._kept("paycode-server", args, self.server.cli_in_process(*args, stdin=stdin))

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
            return run_command([*wrap, sys.executable, "-m", module, *args], env, stdin)
        if self.in_process:
            return run_in_process(module, env, *args, stdin=stdin)
        return run_command([sys.executable, "-m", module, *args], env, stdin)

    def pos(
        self,
        *args: str,
        merchant: str = "",
        stdin: str | None = None,
        wrap: list[str] | None = None,
    ) -> Any:
        done = self.run(POS_MODULE, ["--json", *args], self._pos_env(merchant), stdin, wrap)
        return self._kept("paycode-pos", args, done)

    def wallet_raw(self, *args: str, stdin: str | None = None) -> Any:
        options = ["--json", "--home", str(self.wallet_home)]
        done = self.run(WALLET_MODULE, [*options, *args], self.env, stdin)
        return self._kept("paycode-wallet", args, done)

    def wallet(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        return ok_json(self.wallet_raw(*args, stdin=stdin))

    def code(self, version: str, *extra: str) -> str:
        return str(self.wallet("code", "--version", version, *extra)["code"])

    def balance(self) -> str:
        return str(self.wallet("balance")["accounts"][0]["balance"])

    def add_till(self, merchant: str) -> None:
        """Create the merchant and a terminal, and configure a POS home for it."""
        made = self.server_cli("merchants", "create", merchant, "--currency", "CNY")
        assert made.returncode == 0, made.stdout + made.stderr
        terminal = ok_json(self.server_cli("--json", "terminals", "create", merchant))
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
    """A customer (Shop.customer, 'carol_…') with `top_up` CNY and a wallet enrolled in every
    version. `in_process`: Shop.commands_in_process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    env |= {"PAYCODE_WALLET_PASSPHRASE": "shop test wallet", "PYTHONUNBUFFERED": "1"}
    shop = Shop(server, home, env, commands_in_process=in_process, customer=unique("carol"))
    created = shop.server_cli(
        "users", "create", shop.customer, "--password-stdin", "--currency", "CNY",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    assert shop.server_cli("users", "top-up", shop.customer, top_up).returncode == 0
    for merchant in merchants:
        shop.add_till(merchant)
    shop.wallet(
        "enroll",
        "--server",
        server.url,
        "--user",
        shop.customer,
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


def new_order(
    till: TerminalClient, amount: str, order_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    """POST /v1/orders: a dynamic order the customer pays by scanning (its signed payload in
    `qr_payload`)."""
    return till.create_order(amount, "CNY", merchant_order_id=order_id, **extra)


def refused(code: str, call: Any, *args: Any, **kwargs: Any) -> ServerRejected:
    """`call(*args, **kwargs)` fails with the stable `code`; returns the error."""
    with pytest.raises(ServerRejected) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, (caught.value.code, caught.value.message)
    return caught.value


# -- merchants ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Merchant:
    """A merchant (CNY) and one terminal key of it, with the ids a test reads the database by."""

    name: str
    merchant_id: str
    key_id: str
    secret: bytes = field(repr=False)
    url: str = ""
    """The server the merchant was made on: `till` calls it."""
    notify_secret_b64: str = field(default="", repr=False)
    """The notification signing secret issued with the merchant ("" when none was)."""

    @property
    def till(self) -> TerminalClient:
        """The real terminal client for this key on its server (back-off sleeps skipped)."""
        return self.till_at(self.url)

    def till_at(self, url: str, **options: Any) -> TerminalClient:
        """The terminal client at `url` (a server's address changes when it restarts); its
        back-off sleeps are skipped unless `sleep` is given."""
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
    """A fresh merchant with one terminal, made in this process with what `merchants create
    [--notify-url] [--allow-ip]` (which issues the notification secret), `merchants
    notify-secret`, `merchants set-password` and `terminals create` run. The secret is issued
    when there is a `notify_url` or `notify_secret` asks for it."""
    box = SecretBox.from_config(ServerConfig.from_env(server.env))
    now_s = time.time()
    secret_b64 = ""
    with server.session() as session:
        merchant = admin.create_merchant(
            session, unique(prefix), "CNY", notify_url, allow_ips=allow_ips, now_s=now_s,
            allow_private_notify=True,  # the tests' receivers listen on 127.0.0.1
        )  # fmt: skip
        if notify_url is not None or notify_secret:
            secret_b64 = base64.b64encode(events.issue_secret(session, box, merchant)).decode()
        if dashboard_password is not None:
            access.set_password(session, merchant.id, dashboard_password)
        terminal, secret = admin.create_terminal(session, box, merchant.id, now_s)
        return Merchant(merchant.name, merchant.id, terminal.id, secret, server.url, secret_b64)


def new_terminal(server: Server, merchant: Merchant) -> Merchant:
    """Another terminal key of the same merchant (`terminals create`)."""
    box = SecretBox.from_config(ServerConfig.from_env(server.env))
    with server.session() as session:
        terminal, secret = admin.create_terminal(session, box, merchant.merchant_id, time.time())
    return Merchant(merchant.name, merchant.merchant_id, terminal.id, secret, server.url)


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


def charge_waiting_for_pin(
    server: Server, home: Path, prefix: str, pin: str
) -> tuple[str, Wallet, str]:
    """A user (100.00, password-free up to 5.00) with `pin` set, a phone in `home`, and a 9.00
    charge waiting for that PIN: (user name, wallet, payment id)."""
    name = new_user(server, prefix, top_up="100.00")
    with server.session() as session:
        admin.set_limits(
            session, name, "CNY", payment_max="5.00", daily_max=None, daily_count_max=None,
            reset=False,
        )  # fmt: skip
    wallet = new_phone(server, home / name, name, ["v2"])
    pending.set_pin(wallet, password=PASSWORD, pin=pin)
    waiting = new_till(server).charge(code=code_of(wallet, "v2"), amount="9.00", currency="CNY")
    return name, wallet, str(waiting["payment_id"])


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


def wallet_env() -> dict[str, str]:
    """person_env() for paycode-wallet, with the phones' passphrase (PASSPHRASE) set."""
    return person_env() | {"PAYCODE_WALLET_PASSPHRASE": PASSPHRASE}


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


# -- banks: devices and terminals written to the database ---------------------------------------


@dataclass
class Bank:
    """A customer with one device per live version and merchants with a till each, on a
    (possibly shared) server: see open_bank."""

    server: Server
    user_id: str
    credentials: dict[str, DeviceCredential]
    """Device id -> its credential, as the customer's phone holds it."""
    terminals: dict[str, tuple[str, bytes]]
    """Merchant id -> (terminal key id, secret), in the order the merchants were made."""

    @property
    def url(self) -> str:
        return self.server.url

    def device(self, version: str) -> tuple[str, DeviceCredential]:
        """The customer's device of `version`: (device id, credential)."""
        for device_id, credential in self.credentials.items():
            if credential.version == version:
                return device_id, credential
        raise KeyError(version)

    def code(self, version: str, *, counter: int = 0, at_s: float | None = None) -> str:
        """A code of the customer's `version` device, for the time step of `at_s` (now)."""
        _, credential = self.device(version)
        step = step_at(time.time() if at_s is None else at_s)
        return by_name(version).generate(credential, step=step, counter=counter)

    def merchant_id(self, index: int = 0) -> str:
        return list(self.terminals)[index]

    def till(self, index: int = 0) -> TerminalClient:
        """A terminal client of the `index`-th merchant's till (no waits between retries)."""
        key_id, secret = list(self.terminals.values())[index]
        return TerminalClient(self.server.url, key_id, secret, sleep=lambda _s: None)

    def balance_minor(self, owner_kind: str, owner_id: str, currency: str = "CNY") -> int:
        with self.server.session() as session:
            found = ledger.account(session, owner_kind, owner_id, currency)
            assert found is not None
            return found.balance_minor

    def ledger_sum_minor(self) -> int:
        """The sum of every ledger entry on the server (zero while the books balance)."""
        with self.server.session() as session:
            return ledger.ledger_sum_minor(session)

    def revoke(self, device_id: str) -> None:
        with self.server.session() as session:
            device = session.scalars(select(Device).where(Device.id == device_id)).one()
            device.revoked_at_s = time.time()


def open_bank(
    server: Server,
    start_minor: int,
    *,
    merchants: int = 2,
    pinless_count_max: int | None = None,
) -> Bank:
    """A fresh customer with `start_minor` CNY and one device per live version, and
    `merchants` fresh merchants with a till each. The rows are written directly, keyed and
    sealed the way enrollment and `terminals create` store them: a phone and an enrollment
    per test would cost a password hash and several requests. `pinless_count_max` raises the
    customer's daily password-free count."""
    user_id = bank_user(server, start_minor, pinless_count_max=pinless_count_max)
    credentials = bank_devices(server, user_id)
    terminals = dict(bank_merchant(server) for _ in range(merchants))
    return Bank(server, user_id, credentials, terminals)


def bank_user(server: Server, balance_minor: int, *, pinless_count_max: int | None = None) -> str:
    """A fresh user (no usable password) with one CNY account holding `balance_minor`; its id."""
    now_s = time.time()
    with server.session() as session:
        user = User(
            id=new_id("usr"), name=unique("bank"), password_hash="scrypt$unused", created_at_s=now_s
        )
        session.add(user)
        session.flush()
        account = ledger.open_account(session, "user", user.id, "CNY")
        account.pinless_daily_count_max = pinless_count_max
        if balance_minor:
            ledger.transfer(
                session,
                kind="top_up",
                debit=ledger.system_account(session, "CNY"),
                credit=account,
                amount_minor=balance_minor,
                now_s=now_s,
            )
        return user.id


def bank_devices(server: Server, user_id: str) -> dict[str, DeviceCredential]:
    """One device per live version for `user_id`, keyed and sealed as enrollment stores them."""
    box = SecretBox.from_config(ServerConfig.from_env(server.env))
    now_s = time.time()
    credentials: dict[str, DeviceCredential] = {}
    with server.session() as session:
        _, current = keyring.load_keys(session, box)
        for codec in VERSIONS:
            device_id, handle = new_id("dev"), codec.new_handle()
            row = Device(
                id=device_id,
                user_id=user_id,
                version=codec.version,
                handle=handle,
                drift_steps=0,
                label="test",
                created_at_s=now_s,
            )
            if codec.version == "v3":
                seed, public = new_ed25519_seed()
                row.public_key = public
                credentials[device_id] = DeviceCredential(
                    "v3", handle, seed, seal_public_key=current["seal_public"]
                )
            else:
                device_key = os.urandom(32)
                row.key_id, row.key_sealed = box.seal(device_key, row_id=device_id)
                credentials[device_id] = DeviceCredential(
                    codec.version, handle, device_key, hiding_key=current[codec.version]
                )
            session.add(row)
    return credentials


def bank_merchant(server: Server) -> tuple[str, tuple[str, bytes]]:
    """A fresh CNY merchant with one terminal: (merchant id, (terminal key id, secret))."""
    box = SecretBox.from_config(ServerConfig.from_env(server.env))
    name = unique("Bank Shop")
    with server.session() as session:
        merchant = admin.create_merchant(session, name, "CNY", now_s=time.time())
        terminal, secret = admin.create_terminal(session, box, name, time.time())
        return merchant.id, (terminal.id, secret)
