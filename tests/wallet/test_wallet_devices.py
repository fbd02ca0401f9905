"""Device lifecycle from the wallet and the admin CLI (docs/api.md, "Manage devices").

A user's devices are listed, revoked one by one (from any of the user's wallets, itself
included), rotated to new keys and moved off deprecated versions, with no password. Everything
runs against the real app in this process, on SQLite and on PostgreSQL: wallets are the real
wallet library and CLI (its main(argv), run in this process), charges go through the real
terminal client, and lifecycle changes are made with the real `paycode-server` CLI. What the
API answers is the subject here; the wallet's requests over real HTTP, and the console script
as a process, are tests/wallet/test_wallet_cli.py's.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from paycode.client import devices, online
from paycode.client.wallet import PendingRotation, Wallet
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.database.models import Device
from paycode.server.operations import lifecycle
from paycode.shared.enrollment import read_grant
from paycode.shared.errors import WalletError
from tests.support.servers import Server, postgres_database, run_in_process, start_server
from tests.support.shop import (
    PASSPHRASE,
    PASSWORD,
    charge,
    code_of,
    new_phone,
    new_till,
    new_user,
    ok_json,
    refused,
    use_fast_keystore,
)

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
STATUSES_TTL_S = 0.0
"""This module's servers do not cache the code-version statuses (the production
lifecycle.STATUSES_TTL_S is 5 s): PAYCODE_VERSION_STATUSES_TTL_S, read by server.config. The
app is the one in this process, so a lifecycle change applies to the next request."""
SERVER_ENV = {"PAYCODE_VERSION_STATUSES_TTL_S": str(STATUSES_TTL_S)}
assert STATUSES_TTL_S < lifecycle.STATUSES_TTL_S


@pytest.fixture(scope="module")
def app_sqlite() -> Iterator[Server]:
    """tests.support.servers's app_sqlite (and so server), with no statuses cache."""
    with start_server("sqlite", where="in_process", extra_env=SERVER_ENV) as server:
        yield server


@pytest.fixture(scope="module")
def app_postgres() -> Iterator[Server]:
    """tests.support.servers's app_postgres (and so server), with no statuses cache."""
    with (
        postgres_database(migrated=True) as url,
        start_server(
            "postgres", where="in_process", database_url=url, extra_env=SERVER_ENV
        ) as server,
    ):
        yield server


@pytest.fixture(autouse=True)
def _fast_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


@pytest.fixture(scope="module")
def till(server: Server) -> TerminalClient:
    return new_till(server)


def listed(wallet: Wallet) -> dict[str, dict[str, Any]]:
    """device id -> the device as the server lists it to this wallet."""
    return {str(item["device_id"]): item for item in devices.list_devices(wallet).items}


def device_ids(wallet: Wallet) -> dict[str, str]:
    return {version: item.device_id for version, item in wallet.enrollments().items()}


def row(server: Server, device_id: str) -> Device:
    with server.session() as session:
        found = session.get(Device, device_id)
        assert found is not None
        return found


# --- list -------------------------------------------------------------------------------------


def test_list_shows_every_phone_and_marks_this_wallet(server: Server, tmp_path: Path) -> None:
    user = new_user(server)
    phone = new_phone(server, tmp_path / "a", user, ["v1", "v2", "v3"])
    other = new_phone(server, tmp_path / "b", user, ["v1"])
    stranger = new_phone(server, tmp_path / "c", new_user(server), ["v1"])
    listing = devices.list_devices(phone)
    items = {str(item["device_id"]): item for item in listing.items}
    mine, theirs = device_ids(phone), device_ids(other)
    assert set(items) == {*mine.values(), *theirs.values()}
    assert device_ids(stranger)["v1"] not in items
    for version, device_id in mine.items():
        item = items[device_id]
        assert (item["version"], item["this_wallet"]) == (version, version)
        assert item["current"] is (version == "v1")  # the default device signs
        assert ISO_UTC.fullmatch(item["created_at"]) and item["revoked"] is False
        assert item["revoked_at"] is None
        assert (item["version_status"], item["reenroll"]) == ("active", None)
        assert item["label"].startswith("paycode-wallet on ")
    assert items[theirs["v1"]]["this_wallet"] is None
    assert items[theirs["v1"]]["current"] is False
    assert listing.reenroll is None
    for item in listing.items:  # what the server never shows: keys and handles
        assert not {"handle", "device_key", "public_key", "key_sealed"} & set(item)


# --- revoke -----------------------------------------------------------------------------------


def test_revoke_another_phones_device(server: Server, till: TerminalClient, tmp_path: Path) -> None:
    user = new_user(server)
    phone = new_phone(server, tmp_path / "new", user, ["v1", "v2"])
    lost = new_phone(server, tmp_path / "lost", user, ["v1"])
    lost_id = device_ids(lost)["v1"]
    charge(till, code_of(lost, "v1"))  # now cached by the server that charged it
    stale = code_of(lost, "v1")
    done = devices.revoke(phone, lost_id)
    assert (done.device_id, done.already_revoked, done.removed_version) == (lost_id, False, None)
    refused("device_revoked", charge, till, stale)
    refused("device_revoked", charge, till, code_of(lost, "v1"))
    refused("unauthorized", online.balance, lost)  # its signatures stop too
    assert charge(till, code_of(phone, "v1"))["status"] == "succeeded"
    assert devices.revoke(phone, lost_id).already_revoked is True  # idempotent, and says so
    items = list(devices.list_devices(phone).items)
    assert [item["device_id"] for item in items][-1] == lost_id  # revoked ones come last
    assert items[-1]["revoked"] is True and ISO_UTC.fullmatch(items[-1]["revoked_at"])
    assert row(server, lost_id).revoked_at_s is not None
    assert sorted(device_ids(phone)) == ["v1", "v2"]  # nothing removed from this wallet


def test_revoke_own_device_removes_it_here(
    server: Server, till: TerminalClient, tmp_path: Path
) -> None:
    phone = new_phone(server, tmp_path / "p", new_user(server), ["v1", "v2"])
    v1_id = device_ids(phone)["v1"]
    made_before = code_of(phone, "v1")
    done = devices.revoke(phone, v1_id)  # signed by the wallet's other device, v2
    assert (done.already_revoked, done.removed_version) == (False, "v1")
    assert list(Wallet.open(phone.home).enrollments()) == ["v2"]
    refused("device_revoked", charge, till, made_before)
    assert charge(till, code_of(phone, "v2"))["status"] == "succeeded"
    assert listed(phone)[v1_id]["revoked"] is True


def test_a_device_revokes_itself(server: Server, tmp_path: Path) -> None:
    """Signed by the device it revokes: the answer says so; a retry of the same request
    (answer lost) gets the same answer; any other request from it is refused."""
    phone = new_phone(server, tmp_path / "p", new_user(server), ["v3"])
    device_id = device_ids(phone)["v3"]
    path, key = f"/v1/wallet/devices/{device_id}/revoke", str(uuid.uuid4())
    first = online.signed_call(phone, "POST", path, {}, idempotency_key=key).body
    assert first["current"] is True and first["already_revoked"] is False
    assert (first["device_id"], first["version"], first["revoked"]) == (device_id, "v3", True)
    again = online.signed_call(phone, "POST", path, {}, idempotency_key=key).body
    assert {**again, "server_time": 0} == {**first, "server_time": 0}
    refused("unauthorized", online.signed_call, phone, "POST", path, {}, idempotency_key="k2")
    refused("unauthorized", online.balance, phone)
    # The wallet command on its last device: the server refuses its signature, so it is
    # only forgotten here.
    done = devices.revoke(phone, device_id)
    assert (done.already_revoked, done.removed_version) == (True, "v3")
    assert Wallet.open(phone.home).enrollments() == {}


def test_another_users_device_is_not_found(
    server: Server, till: TerminalClient, tmp_path: Path
) -> None:
    phone = new_phone(server, tmp_path / "p", new_user(server), ["v1"])
    victim = new_phone(server, tmp_path / "v", new_user(server), ["v2"])
    victim_id = device_ids(victim)["v2"]
    theirs = refused("not_found", devices.revoke, phone, victim_id)
    unknown = refused("not_found", devices.revoke, phone, "dev_0000000000000000")
    assert theirs.message == unknown.message and theirs.status == unknown.status == 404
    assert row(server, victim_id).revoked_at_s is None
    assert charge(till, code_of(victim, "v2"))["status"] == "succeeded"
    with pytest.raises(WalletError) as bad:
        devices.revoke(phone, "dev/../x")
    assert bad.value.code == "invalid_argument"


# --- rotate -----------------------------------------------------------------------------------


def test_rotate_gives_new_keys_and_revokes_the_old_ones(
    server: Server, till: TerminalClient, tmp_path: Path
) -> None:
    phone = new_phone(server, tmp_path / "p", new_user(server), ["v1", "v3"])
    before = device_ids(phone)
    old_codes = {version: code_of(phone, version) for version in before}
    rotated = devices.rotate(phone)
    after = device_ids(Wallet.open(phone.home))
    assert [(r.version, r.old_device_id, r.new_device_id) for r in rotated] == [
        (version, before[version], after[version]) for version in ("v1", "v3")
    ]
    assert set(before.values()).isdisjoint(after.values())
    for version, text in old_codes.items():
        refused("device_revoked", charge, till, text)
        assert charge(till, code_of(phone, version))["code_version"] == version
    items = listed(phone)
    for version in ("v1", "v3"):
        assert items[before[version]]["revoked"] is True
        new = items[after[version]]
        assert new["revoked"] is False and new["this_wallet"] == version
        assert new["label"] == items[before[version]]["label"]  # kept unless asked
    assert items[after["v1"]]["current"] is True


def test_a_lost_rotation_answer_is_recovered_with_the_old_key(
    server: Server, till: TerminalClient, tmp_path: Path
) -> None:
    """The server rotated, the answer never arrived: the wallet still holds only the old (now
    revoked) key and the saved request. Running `rotate` again gets the same grant."""
    phone = new_phone(server, tmp_path / "p", new_user(server), ["v2"])
    old_id = device_ids(phone)["v2"]
    pending = PendingRotation("v2", "v2", str(uuid.uuid4()), b"")
    phone.begin_rotation(pending)
    lost = online.signed_call(
        phone,
        "POST",
        "/v1/wallet/devices/rotate",
        {"version": "v2"},
        idempotency_key=pending.idempotency_key,
    ).body
    read_grant(lost)  # a whole grant, with the new device key
    assert lost["revoked_device_id"] == old_id
    assert row(server, old_id).revoked_at_s is not None
    refused(
        "unauthorized",  # a new request from the revoked device: refused
        online.signed_call,
        phone,
        "POST",
        "/v1/wallet/devices/rotate",
        {"version": "v2"},
        idempotency_key=str(uuid.uuid4()),
    )
    [resumed] = devices.rotate(Wallet.open(phone.home))
    assert (resumed.old_device_id, resumed.new_device_id) == (old_id, lost["device_id"])
    wallet = Wallet.open(phone.home)
    assert wallet.pending_rotation("v2") is None
    assert charge(till, code_of(wallet, "v2"))["status"] == "succeeded"


def test_rotation_refusals_keep_the_old_device(server: Server, tmp_path: Path) -> None:
    phone = new_phone(server, tmp_path / "p", new_user(server), ["v1"])
    old_id = device_ids(phone)["v1"]
    bad = {"version": "v3", "public_key": "not base64"}
    refused(
        "invalid_request",
        online.signed_call,
        phone,
        "POST",
        "/v1/wallet/devices/rotate",
        bad,
        idempotency_key="r-1",
    )
    refused("invalid_request", devices.rotate_one, phone, "v1", "v9")
    for path in ("/v1/wallet/devices/rotate", f"/v1/wallet/devices/{old_id}/revoke"):
        refused("invalid_request", online.signed_call, phone, "POST", path, {"version": "v1"})
    assert Wallet.open(phone.home).pending_rotation("v1") is None  # refused: not kept
    assert device_ids(Wallet.open(phone.home)) == {"v1": old_id}
    assert row(server, old_id).revoked_at_s is None
    assert online.balance(phone)["accounts"][0]["balance"] == "100.00"


# --- lifecycle: re-enroll, retired versions ---------------------------------------------------


def set_version(server: Server, action: str, version: str) -> None:
    done = server.cli_in_process("versions", action, version)
    assert done.returncode == 0, done.stdout + done.stderr


def test_reenroll_after_deprecate_and_retired_versions_refused(
    server: Server, till: TerminalClient, tmp_path: Path
) -> None:
    user = new_user(server)
    moving = new_phone(server, tmp_path / "moving", user, ["v1", "v2"])
    holding = new_phone(server, tmp_path / "holding", user, ["v1", "v3"])
    old = {**device_ids(moving), "holding v1": device_ids(holding)["v1"]}
    set_version(server, "deprecate", "v1")
    set_version(server, "retire", "v2")
    try:
        assert online.reenroll_of(online.balance(moving)) == online.Reenroll(
            "v3", "code version v1 is deprecated"
        )
        # A retired version cannot be rotated onto, and the refusal changes nothing.
        refused("version_retired", devices.rotate_one, holding, "v1", "v2")
        assert device_ids(Wallet.open(holding.home))["v1"] == old["holding v1"]
        # moving: v1 is rotated onto v3; v2 (retired) is then only revoked, v3 being here.
        done = devices.reenroll(moving)
        assert [(r.version, r.new_version) for r in done.rotated] == [("v1", "v3")]
        assert [(d.device_id, d.removed_version) for d in done.dropped] == [(old["v2"], "v2")]
        assert sorted(device_ids(Wallet.open(moving.home))) == ["v3"]
        assert charge(till, code_of(moving, "v3"))["status"] == "succeeded"
        # holding already has v3: its v1 device is only revoked.
        done = devices.reenroll(holding)
        assert (done.rotated, [d.removed_version for d in done.dropped]) == ([], ["v1"])
        for device_id in old.values():
            assert row(server, device_id).revoked_at_s is not None
        assert devices.reenroll(moving).as_json() == {"rotated": [], "dropped": []}
        assert online.reenroll_of(online.balance(moving)) is None
    finally:
        set_version(server, "activate", "v1")
        set_version(server, "activate", "v2")


# --- the console scripts ----------------------------------------------------------------------


def wallet_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    env["PAYCODE_WALLET_PASSPHRASE"] = PASSPHRASE
    return env


def wallet_main(
    home: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`paycode-wallet --home HOME ARGS`, its main(argv) run in this process
    (tests.support.servers.run_in_process): the only way to reach the in-process server, and a
    second sooner a command; tests/wallet/test_wallet_cli.py runs the console script itself."""
    return run_in_process(
        "paycode.client.cli", wallet_env(), "--home", str(home), *args, stdin=stdin
    )


def cli_error(done: subprocess.CompletedProcess[str], code: str) -> None:
    assert done.returncode == 1, done
    assert f"error [{code}]" in done.stderr and "Traceback" not in done.stderr + done.stdout


def test_wallet_commands(server: Server, till: TerminalClient, tmp_path: Path) -> None:
    user = new_user(server)
    home = tmp_path / "cli"
    enroll = ("enroll", "--server", server.url, "--user", user, "--password-stdin")
    ok_json(
        wallet_main(
            home, "--json", *enroll, "--version", "v1", "--version", "v2", stdin=PASSWORD + "\n"
        )
    )
    other = new_phone(server, tmp_path / "other", user, ["v3"])
    other_id = device_ids(other)["v3"]
    listing = ok_json(wallet_main(home, "devices", "--json"))
    marks = {item["device_id"]: item["this_wallet"] for item in listing["devices"]}
    assert sorted(mark for mark in marks.values() if mark) == ["v1", "v2"]
    assert marks[other_id] is None and "reenroll" not in listing
    human = wallet_main(home, "devices")  # nothing at all on stderr
    assert human.returncode == 0 and human.stderr == ""
    own_lines = [line for line in human.stdout.splitlines() if line.startswith("* ")]
    assert len(own_lines) == 2 and all("this wallet's v" in line for line in own_lines)
    assert f"  {other_id}  v3  live  created " in human.stdout
    # revoke asks first; with no terminal to ask on, --yes is required
    cli_error(wallet_main(home, "revoke", other_id), "confirmation_required")
    assert row(server, other_id).revoked_at_s is None
    done = ok_json(wallet_main(home, "revoke", other_id, "--yes", "--json"))
    assert (done["device_id"], done["already_revoked"], done["removed_from_wallet"]) == (
        other_id,
        False,
        None,
    )
    again = wallet_main(home, "revoke", other_id, "--yes")
    assert again.stdout == f"device {other_id} was already revoked\n"
    cli_error(wallet_main(home, "revoke", "dev_0000000000000000", "--yes"), "not_found")
    cli_error(wallet_main(home, "revoke", "a/b", "--yes"), "invalid_argument")
    # rotate one version, then re-enroll (nothing to do)
    v2_before = ok_json(wallet_main(home, "status", "--json"))["enrolled"]["v2"]
    rotated = ok_json(wallet_main(home, "rotate", "--version", "v2", "--json"))["rotated"]
    assert [(r["version"], r["old_device_id"]) for r in rotated] == [("v2", v2_before)]
    v2_after = ok_json(wallet_main(home, "status", "--json"))["enrolled"]["v2"]
    assert v2_after == rotated[0]["new_device_id"] != v2_before
    code = ok_json(wallet_main(home, "code", "--version", "v2", "--json"))["code"]
    assert charge(till, code)["status"] == "succeeded"
    nothing = wallet_main(home, "reenroll")
    assert nothing.stdout.startswith("nothing to re-enroll")
    # revoking this wallet's own device removes it here
    own = wallet_main(home, "revoke", v2_after, "--yes")
    assert own.stdout == f"device {v2_after} revoked; removed v2 from this wallet\n"
    assert list(ok_json(wallet_main(home, "status", "--json"))["enrolled"]) == ["v1"]
    # the admin CLI sees the same devices
    admin = ok_json(server.cli_in_process("--json", "devices", "list", user))
    states = {item["device_id"]: item["revoked"] for item in admin["devices"]}
    assert states[other_id] is True and states[v2_before] is True and states[v2_after] is True
    assert sum(not revoked for revoked in states.values()) == 1
    assert all(ISO_UTC.fullmatch(item["created_at"]) for item in admin["devices"])
    text = server.cli_in_process("devices", "list", user)
    assert text.returncode == 0 and f"{other_id}  v3  created " in text.stdout
    assert "revoked " in text.stdout and "live" in text.stdout
    missing = server.cli_in_process("devices", "list", "nobody_here")
    assert missing.returncode == 1 and "error [not_found]" in missing.stderr


@pytest.mark.parametrize("command", ["devices", "revoke", "rotate", "reenroll"])
def test_wallet_help(tmp_path: Path, command: str) -> None:
    done = wallet_main(tmp_path, command, "--help")
    assert done.returncode == 0 and done.stdout.startswith(f"usage: paycode-wallet {command}")
    assert "--json" in done.stdout


def test_no_secret_in_device_listings(server: Server, tmp_path: Path) -> None:
    phone = new_phone(server, tmp_path / "p", new_user(server), ["v1", "v2", "v3"])
    text = str(devices.list_devices(phone).items)
    with server.session() as session:
        rows = session.scalars(select(Device).where(Device.id.in_(device_ids(phone).values())))
        for device in rows:
            assert device.handle.hex() not in text
    for enrollment in phone.enrollments().values():
        assert enrollment.credential.handle.hex() not in text
