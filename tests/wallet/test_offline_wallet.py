"""The CLI wallet holds and spends an offline allowance against the real server (docs/offline.md
§8, "phone wallet and CLI wallet hold and spend an allowance"), on SQLite and PostgreSQL.

`paycode-wallet` runs as a person types it, its main(argv) in this process (the only way to
reach the in-process server); the tills are the real terminal client and the till's own
offline decision, log and sync (merchant_pos). Every balance is read from the server's ledger
and asserted to the minor unit; the books reconcile at the end.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from paycode.client import keystore
from paycode.client.keystore import PASSPHRASE_ENV
from paycode.merchant_pos import offline_keys, offline_sync
from paycode.merchant_pos.offline_log import open_log
from paycode.merchant_pos.offline_records import Acceptance
from paycode.merchant_pos.offline_sale import OfflineRequest, decide
from paycode.server.database.offline_models import ESCROW
from paycode.server.testing import Server
from tests.support.books import assert_books_clean, balance_minor
from tests.support.servers import run_in_process
from tests.support.shop import FAST_SCRYPT_N, PASSWORD, new_merchant, new_user, user_id

PASSPHRASE = "offline wallet against the server"
PIN = "864209"
TOP_UP = "200.00"


def wallet_cli(home: Path, *args: str, stdin: str | None = None) -> dict[str, Any]:
    """`paycode-wallet --home HOME --json ARGS` in this process; its JSON answer (exit 0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    env[PASSPHRASE_ENV] = PASSPHRASE
    done = run_in_process(
        "paycode.client.cli", env, "--home", str(home), "--json", *args, stdin=stdin
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def sell_offline(pos_home: Path, code: str, amount_minor: int) -> Acceptance:
    """A sale while the line is down: the till's own decision with the keys it fetched from the
    server beforehand (docs/offline.md 4.1, 4.2); the acceptance is in its log."""
    keys = offline_keys.load(pos_home)
    local_now_s = time.time()
    assert keys is not None and keys.ready(local_now_s)
    request = OfflineRequest(
        code, amount_minor, "CNY", f"order-{os.urandom(4).hex()}",
        keys.server_time(local_now_s), local_now_s,
    )  # fmt: skip
    with open_log(pos_home) as log:
        decision = decide(request, keys, log)
    assert isinstance(decision, Acceptance), decision
    return decision


def test_cli_wallet_takes_spends_returns(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keystore, "SCRYPT_N", FAST_SCRYPT_N)  # many keystore opens, one process
    name = new_user(server, "offline_cli", TOP_UP)
    user = user_id(server, name)
    home = tmp_path / "wallet"
    wallet_cli(home, "enroll", "--server", server.url, "--user", name, "--password-stdin",
               stdin=PASSWORD + "\n")  # fmt: skip
    wallet_cli(home, "set-pin", "--stdin", stdin=f"{PASSWORD}\n{PIN}\n")

    taken = wallet_cli(home, "offline", "take", "--amount", "100.00", "--pin-stdin",
                       stdin=PIN + "\n")  # fmt: skip
    allowance = taken["allowance"]["allowance_id"]
    assert taken["balance"] == "100.00"
    assert (balance_minor(server, "user", user), balance_minor(server, ESCROW, allowance)) == (
        10_000,
        10_000,
    )
    shown = wallet_cli(home, "balance")
    assert [a["balance"] for a in shown["accounts"]] == ["100.00"]
    assert [(h["allowance_id"], h["left"]) for h in shown["offline"]] == [(allowance, "100.00")]

    # (a) Online at a till: the v4 code is charged by the server, paid from escrow.
    online_till = new_merchant(server, "Online Cafe")
    first = wallet_cli(home, "code", "--offline", "--amount", "12.50")
    assert (first["version"], first["offline"]["amount_limit"]) == ("v4", "12.50")
    paid = online_till.till.charge(code=first["code"], amount="12.50", currency="CNY")
    assert paid["status"] == "succeeded", paid
    assert balance_minor(server, ESCROW, allowance) == 10_000 - 1250
    assert balance_minor(server, "merchant", online_till.merchant_id) == 1250
    assert balance_minor(server, "user", user) == 10_000  # the user's own balance is untouched

    # (b) Offline at another till: keys fetched while online, the sale decided alone, then
    # forwarded by the till's sync once the line is back.
    offline_till = new_merchant(server, "Offline Noodles")
    pos_home = tmp_path / "pos"
    client = offline_till.till
    offline_keys.fetch(client, pos_home, local_now_s=time.time())
    second = wallet_cli(home, "code", "--offline", "--amount", "12.50")
    assert second["offline"]["certificate"] != first["offline"]["certificate"]
    accepted = sell_offline(pos_home, second["code"], 1000)
    assert balance_minor(server, "merchant", offline_till.merchant_id) == 0  # not yet synced
    with open_log(pos_home) as log:
        outcome = offline_sync.sync(client, log, pos_home, now_s=time.time())
        assert log.unsynced() == []
    assert [(s.record.id, s.synced.result, s.synced.paid_minor) for s in outcome.settled] == [
        (accepted.id, "paid", 1000)
    ]
    assert outcome.exit_status == offline_sync.EXIT_SYNCED
    assert balance_minor(server, "merchant", offline_till.merchant_id) == 1000
    assert balance_minor(server, ESCROW, allowance) == 10_000 - 1250 - 1000

    # A third code is made and never shown to a till: its 5.00 stays reserved.
    third = wallet_cli(home, "code", "--offline", "--amount", "5.00")
    assert third["offline"]["certificate"] not in (
        first["offline"]["certificate"],
        second["offline"]["certificate"],
    )

    status = wallet_cli(home, "offline", "status", "--online")
    (listed,) = status["server"]
    assert (listed["allowance_id"], listed["state"]) == (allowance, "live")
    assert (listed["settled_minor"], listed["returned_minor"], listed["held_minor"]) == (
        2250,
        0,
        7750,
    )
    (held,) = status["allowances"]
    assert held["left"] == "70.00"  # 100.00 less the three reservations (12.50 + 12.50 + 5.00)

    # Hand-back: back at once = amount - spent - reserved but not settled
    # = 100.00 - 22.50 - (2.50 left of the offline code's 12.50 + 5.00 of the unused one).
    returned = wallet_cli(home, "offline", "return")
    (back,) = returned["returned"]
    assert (back["allowance_id"], back["state"]) == (allowance, "returned")
    assert (back["returned_minor"], back["held_minor"], back["balance_minor"]) == (
        7000,
        750,
        17_000,
    )
    assert balance_minor(server, "user", user) == 17_000
    assert balance_minor(server, ESCROW, allowance) == 750
    assert wallet_cli(home, "offline", "status")["allowances"] == []
    shown = wallet_cli(home, "balance")
    assert [a["balance"] for a in shown["accounts"]] == ["170.00"] and "offline" not in shown
    after = wallet_cli(home, "offline", "status", "--online")["server"]
    assert [
        (a["state"], a["settled_minor"], a["returned_minor"], a["held_minor"]) for a in after
    ] == [("returned", 2250, 7000, 750)]
    assert_books_clean(server)
