"""Clocks: a phone whose clock is off, the wallet re-syncing on every online call, the `code`
command's warning, and the drift the server learns per device from accepted codes.

Against the real app in this process, on SQLite and on PostgreSQL (tests/support/servers.py):
what the server answers and learns is the subject, not HTTP. The phone's clock is moved by giving
the wallet library a skewed clock (`local_now_s`, and the clock its HTTP client stamps
signatures with); the server keeps the real one.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paycode.appkit import http_client as api
from paycode.client import online
from paycode.client.keystore import KEYSTORE_NAME, Keystore
from paycode.client.wallet import CLOCK_SYNC_AGE_S_MAX, Wallet
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.charge.planning import learned_drift
from paycode.server.database.models import Device
from paycode.shared import terminal_auth
from paycode.shared.timestep import STEP_SECONDS, seconds_left_in_step
from paycode.shared.versions.base import (
    Accepted,
    DeviceRecord,
    Reason,
    Rejected,
    VerifierKeys,
    VerifyContext,
    judge_window,
)
from tests.support.servers import InProcessServer, Server, run_in_process
from tests.support.shop import (
    PASSPHRASE,
    charge,
    code_of,
    new_phone,
    new_till,
    new_user,
    refused,
    use_fast_keystore,
)

BOUNDARY_MARGIN_S = 1.0
"""Codes are made at least this long before a step ends, so the server sees the same step."""


@pytest.fixture(autouse=True)
def _fast_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


@pytest.fixture(scope="module")
def till(server: Server) -> TerminalClient:
    return new_till(server)


class SkewedClock:
    """Stands in for the `time` module of the wallet's HTTP client: the phone's clock."""

    def __init__(self, skew_s: float) -> None:
        self.skew_s = skew_s

    def time(self) -> float:
        return time.time() + self.skew_s


@contextlib.contextmanager
def phone_clock(monkeypatch: pytest.MonkeyPatch, skew_s: float) -> Iterator[SkewedClock]:
    """Inside: the wallet's HTTP client and its request signing run on the skewed clock. The
    till shares that client code, so it is used outside only (a till's clock is not the
    phone's)."""
    clock = SkewedClock(skew_s)
    with monkeypatch.context() as patch:
        patch.setattr(api, "time", clock)
        patch.setattr(online, "time", clock)
        yield clock


def raw_charge(server: Server, till: TerminalClient, code: str) -> tuple[int, dict[str, Any]]:
    """A charge signed and sent by hand to the app, to read the whole answer (problem members
    included)."""
    assert isinstance(server, InProcessServer) and server.app is not None
    body = json.dumps({"code": code, "amount": "1.00", "currency": "CNY"}).encode()
    headers = terminal_auth.sign_headers(
        till.key_id, till.secret, "POST", "/v1/charges", body, timestamp_s=int(time.time())
    )
    headers |= {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
    reply = server.app.test_client().post("/v1/charges", data=body, headers=headers)
    return reply.status_code, json.loads(reply.get_data())


def test_a_phone_5_minutes_off_is_told_then_resyncs_with_one_call(
    server: Server,
    till: TerminalClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    phone = new_phone(server, tmp_path / "p", new_user(server), ["v1", "v3"])
    assert abs(phone.clock_offset_s) < 2.0  # enrolled while its clock was right
    clock = SkewedClock(300.0)  # then it jumped 5 minutes ahead
    status, problem = raw_charge(server, till, code_of(phone, "v1", local_now_s=clock.time()))
    assert (status, problem["code"]) == (422, "code_expired")
    assert "clock is wrong (ahead of the server)" in problem["detail"]
    assert not any(char.isdigit() for char in problem["detail"])  # no time to come back at
    assert abs(problem["server_time"] - time.time()) < 5
    refused("code_expired", charge, till, code_of(phone, "v3", local_now_s=clock.time()))
    with phone_clock(monkeypatch, clock.skew_s):
        online.balance(phone)  # one online call
    assert phone.clock_offset_s == pytest.approx(-300.0, abs=2.0)
    assert Wallet.open(phone.home).clock_offset_s == phone.clock_offset_s
    for version in ("v1", "v3"):
        paid = charge(till, code_of(phone, version, local_now_s=clock.time()))
        assert paid["status"] == "succeeded"


def test_a_signature_refused_for_the_clock_is_signed_again_once(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 minutes off: past the 300 s the server allows a signature. The refusal still
    carries the server's time; the wallet learns it and signs once more."""
    phone = new_phone(server, tmp_path / "p", new_user(server), ["v2"])
    skewed = SkewedClock(-600.0)  # no till in this test
    monkeypatch.setattr(api, "time", skewed)
    monkeypatch.setattr(online, "time", skewed)
    sent: list[str] = []
    real_call = api.ServerClient.call

    def counting(self: api.ServerClient, method: str, path: str, *args: Any, **kw: Any) -> Any:
        sent.append(path)
        return real_call(self, method, path, *args, **kw)

    monkeypatch.setattr(api.ServerClient, "call", counting)
    assert online.balance(phone)["accounts"][0]["currency"] == "CNY"
    assert sent == ["/v1/wallet/balance"] * 2
    assert phone.clock_offset_s == pytest.approx(600.0, abs=2.0)
    sent.clear()
    online.history(phone)
    assert sent == ["/v1/wallet/history?limit=20"]  # in sync now: one request
    # A refusal that is not about the clock is not sent again.
    phone.record_clock_offset(phone.clock_offset_s)
    refused("not_found", online.signed_call, phone, "GET", "/v1/wallet/nothing")
    assert len(sent) == 2


def wallet_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`paycode-wallet --home HOME ARGS`, its main(argv) run in this process: what it prints
    is the subject (tests/wallet/test_wallet_cli.py runs the console script as a process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    env["PAYCODE_WALLET_PASSPHRASE"] = PASSPHRASE
    return run_in_process("paycode.client.cli", env, "--home", str(home), *args)


def forget_sync_time(home: Path) -> None:
    """The keystore of a wallet that has no record of when it last synced."""
    store, document = Keystore.open(home / KEYSTORE_NAME, PASSPHRASE.encode())
    document.pop("clock_synced_at_s", None)
    store.save(document)


def test_code_warns_on_stderr_when_the_clock_was_not_checked_lately(
    server: Server, tmp_path: Path
) -> None:
    phone = new_phone(server, tmp_path / "p", new_user(server), ["v1"])
    fresh = wallet_cli(phone.home, "code")
    assert fresh.returncode == 0 and fresh.stderr == ""
    days = CLOCK_SYNC_AGE_S_MAX / 86400 + 1
    phone.record_clock_offset(phone.clock_offset_s, local_now_s=time.time() - days * 86400)
    stale = wallet_cli(phone.home, "code")
    assert stale.returncode == 0 and len(stale.stdout.replace(" ", "").strip()) == 24
    assert stale.stderr == (
        f"warning: this wallet last checked its clock against the server {days:.0f} days ago; "
        "the till may refuse codes as expired: run 'paycode-wallet balance' (online) to "
        "re-sync\n"
    )
    as_json = wallet_cli(phone.home, "code", "--json")
    assert json.loads(as_json.stdout)["ok"] is True  # stdout stays the answer
    assert as_json.stderr.startswith("warning: this wallet last checked its clock")
    forget_sync_time(phone.home)
    never = wallet_cli(phone.home, "--json", "code")
    assert json.loads(never.stdout)["version"] == "v1"
    assert "has never checked its clock against the server" in never.stderr
    phone = Wallet.open(phone.home)
    phone.record_clock_offset(phone.clock_offset_s, local_now_s=time.time() + 3600)
    assert "clock was set back" in wallet_cli(phone.home, "code").stderr
    assert wallet_cli(phone.home, "balance").returncode == 0  # online: re-synced
    assert wallet_cli(phone.home, "code").stderr == ""


def drift_of(server: Server, device_id: str) -> int:
    with server.session() as session:
        device = session.get(Device, device_id)
        assert device is not None
        return device.drift_steps


def code_ahead(wallet: Wallet, version: str, steps: int) -> str:
    """A code made on a phone clock `steps` steps ahead of the server's."""
    if seconds_left_in_step(time.time(), STEP_SECONDS) < BOUNDARY_MARGIN_S:
        time.sleep(BOUNDARY_MARGIN_S)
    return code_of(wallet, version, local_now_s=time.time() + steps * STEP_SECONDS)


def test_drift_learned_from_accepted_codes_moves_the_window(
    server: Server, till: TerminalClient, tmp_path: Path
) -> None:
    """A phone whose clock creeps ahead a step at a time is followed (each code is inside
    the window around the drift learned so far); a phone of the same user whose drift was
    never learned is refused for the same clock. A clock set right without an online call is
    refused (its codes look 4 steps old); the online call that re-syncs it resets the drift,
    and its codes pay at once."""
    user = new_user(server)
    phone = new_phone(server, tmp_path / "p", user, ["v2"])
    fresh = new_phone(server, tmp_path / "f", user, ["v2"])
    device_id = phone.enrollment("v2").device_id
    for steps in (1, 2, 3):  # five charges in all: within a user's password-free day
        assert charge(till, code_ahead(phone, "v2", steps))["status"] == "succeeded"
        assert drift_of(server, device_id) == steps
    error = refused("code_expired", charge, till, code_ahead(fresh, "v2", 4))
    assert "clock is wrong (ahead of the server)" in error.message
    assert charge(till, code_ahead(phone, "v2", 4))["status"] == "succeeded"
    assert drift_of(server, device_id) == 4
    refused("code_expired", charge, till, code_ahead(phone, "v2", 0))
    assert drift_of(server, device_id) == 4
    online.balance(phone)  # the wallet re-syncs: its own key signs, the drift goes to 0
    assert drift_of(server, device_id) == 0
    assert charge(till, code_ahead(phone, "v2", 0))["status"] == "succeeded"
    assert drift_of(server, device_id) == 0


def test_a_re_sync_signed_by_one_device_resets_the_drift_of_every_version(
    server: Server, till: TerminalClient, tmp_path: Path
) -> None:
    """The wallet signs its calls with one device, but re-syncs the clock all its versions
    use: a v3 device left on a learned drift of 4 (no second window any more) would refuse
    the re-synced phone's codes for good."""
    phone = new_phone(server, tmp_path / "p", new_user(server), ["v1", "v3"])
    v3_device = phone.enrollment("v3").device_id
    with server.session() as session:
        device = session.get(Device, v3_device)
        assert device is not None
        device.drift_steps = 4
    refused("code_expired", charge, till, code_ahead(phone, "v3", 0))
    online.balance(phone)
    assert drift_of(server, v3_device) == 0
    assert charge(till, code_ahead(phone, "v3", 0))["status"] == "succeeded"


@pytest.mark.parametrize(
    ("observed", "current", "learned"),
    [
        (1, 0, 1),
        (3, 2, 3),
        (2, 3, 3),
        (0, 3, 0),
        (-1, 0, 0),
        (-2, 0, -2),
        (12, 0, 10),
        (-12, 0, -10),
    ],
)
def test_learned_drift_follows_the_clock_but_not_latency(
    observed: int, current: int, learned: int
) -> None:
    assert learned_drift(observed, current) == learned


def judged(step: int, drift_steps: int, now_s: float) -> Any:
    device = DeviceRecord("dev_1", b"h" * 8, b"k" * 32, drift_steps)
    context = VerifyContext(now_s, lambda _version, _handle: None, VerifierKeys())
    return judge_window(context, "v2", device, step=step, counter=0, flags=0)


def test_the_window_follows_the_learned_drift_only() -> None:
    """Around the learned drift 3, and nowhere else: the server's own clock (offsets -1..1) is
    no second window, since a code made on the clock the server follows would pay there too,
    minutes later (issue 19, item 12). Refused codes are named for burning, with no figure."""
    now_s = 1_800_000_000.0
    server_step = int(now_s // STEP_SECONDS)
    for offset in (2, 3, 4):
        accepted = judged(server_step + offset, 3, now_s)
        assert isinstance(accepted, Accepted) and accepted.drift_steps == offset
    for offset, detail in (
        (5, "the phone's clock is wrong (ahead of the server)"),
        (1, "this code is too old, or the phone's clock is wrong (behind the server)"),
        (0, "this code is too old, or the phone's clock is wrong (behind the server)"),
        (-1, "this code is too old, or the phone's clock is wrong (behind the server)"),
    ):  # fmt: skip
        rejected = judged(server_step + offset, 3, now_s)
        assert isinstance(rejected, Rejected) and rejected.reason is Reason.CODE_EXPIRED
        assert rejected.detail.startswith(detail) and rejected.burn_key
