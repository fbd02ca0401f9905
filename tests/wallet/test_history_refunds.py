"""`paycode-wallet history` shows refunds (issue 19, item 20): money a shop gave back is part
of what the customer reads, not only of --json. A real payment, refunded in part by the till
and then in full, on both databases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.servers import Server, run_in_process
from tests.support.shop import (
    WALLET_MODULE,
    charge,
    code_of,
    new_merchant,
    new_phone,
    new_user,
    use_fast_keystore,
    wallet_env,
)


def _history(home: Path, *options: str) -> str:
    env = wallet_env()
    done = run_in_process(WALLET_MODULE, env, *options, "--home", str(home), "history")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_history_without_json_shows_what_was_refunded(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_keystore(monkeypatch)
    cafe = new_merchant(server, "Refund Cafe")
    home = tmp_path / "phone"
    wallet = new_phone(server, home, new_user(server), ["v2"])
    kept = charge(cafe.till, code_of(wallet, "v2"), "3.00")
    paid = charge(cafe.till, code_of(wallet, "v2"), "12.50")
    cafe.till.refund(paid["payment_id"], amount="5.00")
    lines = _history(home).splitlines()
    assert lines[0].endswith(f"12.50  CNY  succeeded, refunded 5.00 CNY  {cafe.name}"), lines
    assert lines[1].endswith(f"3.00  CNY  succeeded  {cafe.name}"), lines
    cafe.till.refund(paid["payment_id"])
    items = json.loads(_history(home, "--json"))["items"]
    assert [item["refunded"] for item in items] == ["12.50", "0.00"]
    assert "succeeded, refunded 12.50 CNY" in _history(home).splitlines()[0]
    assert kept["status"] == "succeeded"
