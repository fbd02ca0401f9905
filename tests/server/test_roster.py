"""paycode-server users list, merchants list, merchants update (issue: operator commands were
missing, and a merchant's allow-list, notify URL and name could not change after creation).
On both databases; the allow-list change reaches a running server through its cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paycode.server.database import directory
from tests.support.servers import Server
from tests.support.shop import (
    charge,
    code_of,
    new_merchant,
    new_phone,
    new_user,
    refused,
    unique,
    use_fast_keystore,
)


def _cli_json(server: Server, *args: str) -> dict[str, object]:
    done = server.cli_in_process("--json", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_users_list_and_merchants_list_show_who_is_in_the_bank(server: Server) -> None:
    user = new_user(server, "listed", top_up="12.34")
    cafe = new_merchant(server, "Listed Cafe")
    users = {row["name"]: row for row in _cli_json(server, "users", "list")["users"]}  # type: ignore[index, union-attr]
    assert users[user]["accounts"] == [{"currency": "CNY", "balance_minor": 1234}]
    assert users[user]["live_devices"] == 0 and users[user]["pin_set"] is False
    merchants = {row["name"]: row for row in _cli_json(server, "merchants", "list")["merchants"]}  # type: ignore[index, union-attr]
    assert merchants[cafe.name]["live_terminals"] == 1
    human = server.cli_in_process("users", "list").stdout
    assert f"{user}  " in human and "12.34 CNY" in human
    everything = json.dumps(_cli_json(server, "users", "list")) + human
    assert "scrypt$" not in everything and "password" not in everything


def test_an_allow_list_set_after_creation_reaches_the_running_server(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_keystore(monkeypatch)
    monkeypatch.setattr(directory, "MERCHANT_SETTINGS_TTL_S", 0.0)  # the test's own patience
    cafe = new_merchant(server, "Moving Cafe")
    wallet = new_phone(server, tmp_path / "phone", new_user(server), ["v2"])
    assert charge(cafe.till, code_of(wallet, "v2"), "1.00")["status"] == "succeeded"
    _cli_json(server, "merchants", "update", cafe.merchant_id, "--allow-ip", "10.9.0.0/16")
    refused("forbidden", charge, cafe.till, code_of(wallet, "v2"), "1.00")
    _cli_json(server, "merchants", "update", cafe.name, "--allow-anywhere")
    assert charge(cafe.till, code_of(wallet, "v2"), "1.00")["status"] == "succeeded"


def test_merchants_update_changes_the_notify_url_and_the_name(server: Server) -> None:
    cafe = new_merchant(server, "Renamed Cafe")
    other = new_merchant(server, "Taken Name")
    new_name = unique("Bistro")
    updated = _cli_json(
        server, "merchants", "update", cafe.merchant_id, "--name", new_name,
        "--notify-url", "https://shop.example/paycode",
    )["merchant"]  # fmt: skip
    assert updated["name"] == new_name and updated["notify_url"] == "https://shop.example/paycode"  # type: ignore[index]
    clash = server.cli_in_process("merchants", "update", new_name, "--name", other.name)
    assert clash.returncode == 1 and "error [merchant_exists]" in clash.stderr
    both = server.cli_in_process(
        "merchants", "update", new_name, "--notify-url", "x", "--no-notify-url"
    )
    assert both.returncode == 1 and "error [invalid_argument]" in both.stderr
    cleared = _cli_json(server, "merchants", "update", new_name, "--no-notify-url")["merchant"]
    assert cleared["notify_url"] is None  # type: ignore[index]
