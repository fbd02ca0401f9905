"""A live shop for CLI end-to-end tests: server, customer, merchants with tills, a wallet.

Everything goes through the console scripts a person would type (`paycode-server`,
`paycode-wallet`, `paycode-pos`, each with --json), against a live server process. The
operator's set-up commands (users, merchants, terminals) run `paycode-server`'s main(argv) in
this process (tests.support.servers.run_cli_in_process), which saves a second each; the wallet and
the POS, the subjects of these tests, run as processes of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.servers import LiveServer, run_command

PASSWORD = "shop test password"


def ok_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stdout + done.stderr
    reply: dict[str, Any] = json.loads(done.stdout)
    return reply


@dataclass
class Shop:
    server: LiveServer
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


def open_shop(server: LiveServer, home: Path, *, merchants: list[str], top_up: str) -> Shop:
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
