"""The wallet library: keystore at rest, offline code generation, enrollment and signed calls.

The server is the real app in this process, on SQLite and on PostgreSQL (the `server`
fixture). Codes are checked the way its charge checks them: `shared.verify.verify_code` on the
device rows it wrote and the keys it sealed when it enrolled the wallet
(tests/support/wallet_server.py), at a time the test chooses. Time is a parameter: tests pass
`local_now_s`, they never sleep. The requests a wallet sends are read off the in-process wire;
the grant that allows fewer codes than the version does is the server's, edited on its way
back (no honest server sends one). The wallet's requests over a real socket are
tests/wallet/test_wallet_cli.py's.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from paycode.appkit.http_client import ServerClient
from paycode.client import keystore, online
from paycode.client.keystore import KEYSTORE_NAME, PASSPHRASE_ENV, SECRET_NAME
from paycode.client.online import DeviceAuth
from paycode.client.wallet import COUNTER_STEPS_KEPT, LOCK_NAME, Enrollment, GeneratedCode, Wallet
from paycode.shared import wallet_auth
from paycode.shared.binding import MerchantBinding, charging_point_bindings
from paycode.shared.errors import CounterExhausted, ServerRejected, ServerUnreachable, WalletError
from paycode.shared.timestep import STEP_SECONDS, step_at
from paycode.shared.versions.base import (
    Accepted,
    DeviceCredential,
    Flags,
    Reason,
    Rejected,
    Verification,
)
from paycode.shared.versions.registry import by_name
from tests.support.servers import InProcessServer, Server, start_server
from tests.support.shop import PASSWORD, charge, code_of, new_till, new_user
from tests.support.wallet_server import (
    Verifier,
    closed_port_url,
    intercepted,
    json_edit,
    server_clock,
)

PASSPHRASE = "test passphrase, not a secret"
TOP_UP = "100.00"
VERSIONS = ["v1", "v2", "v3"]
T0_S = 1_800_000_000.0
"""A fixed local time at the start of a step (1_800_000_000 is a multiple of 30)."""
assert T0_S % STEP_SECONDS == 0
FAST_SCRYPT_N = 2**10
"""New keystores here use the cheapest scrypt the reader accepts (n is stored in the file, so
opening works the same); the CLI tests keep the real cost."""


def use_test_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.setattr(keystore, "SCRYPT_N", FAST_SCRYPT_N)


@pytest.fixture(autouse=True)
def _passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    use_test_keystore(monkeypatch)


@pytest.fixture(scope="module")
def verifier(server: Server) -> Verifier:
    return Verifier(server)


@pytest.fixture(scope="module")
def customer(server: Server) -> str:
    """A user (TOP_UP CNY) whose wallets no test charges: many tests enroll one of their own,
    and making a user costs a tenth of a second (the server hashes its password with scrypt)."""
    return new_user(server, "alice", TOP_UP)


def enrolled_wallet(
    home: Path,
    server: Server,
    versions: list[str] = VERSIONS,
    *,
    user: str | None = None,
    keep_offset: bool = False,
    server_offset_s: float = 0.0,
) -> Wallet:
    """Enroll `user` (default: a new one with TOP_UP CNY). The learned offset (a few ms here)
    is reset to 0 unless kept, so `local_now_s` is exactly the device's time and steps are
    deterministic. `server_offset_s`: how far the server's clock is from the real one
    (server_clock)."""
    wallet = Wallet.open_or_create(home)
    client = ServerClient(server.url)
    user = user or new_user(server, "alice", TOP_UP)
    online.enroll(wallet, client, user=user, password=PASSWORD, versions=versions)
    assert abs(wallet.clock_offset_s - server_offset_s) < 2.0
    if not keep_offset:
        wallet.record_clock_offset(0.0)
    return wallet


@pytest.fixture(scope="module")
def enrolled_home(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wallet enrolled in every version per server, which `wallet` copies for each test.
    Enrolling costs a third of a second (the server checks the password with scrypt), a copy
    nothing, and a copy is that same keystore: what these tests read and change (the file,
    its counters, its clock offset) is the copy's own. A test that charges its codes (the
    copies share devices, so their counters would meet) enrolls a wallet of its own."""
    home = tmp_path_factory.mktemp("enrolled") / "wallet"
    with pytest.MonkeyPatch.context() as patch:
        use_test_keystore(patch)
        enrolled_wallet(home, server)
    return home


@pytest.fixture
def wallet(tmp_path: Path, enrolled_home: Path) -> Wallet:
    home = tmp_path / "wallet"
    shutil.copytree(enrolled_home, home)
    return Wallet.open(home)


def accepted(verifier: Verifier, code: GeneratedCode, *, now_s: float) -> Accepted:
    result = verifier.verify(code.text, now_s=now_s)
    assert isinstance(result, Accepted), result
    assert (result.version, result.step, result.counter) == (code.version, code.step, code.counter)
    return result


def wallet_error(home: Path) -> WalletError:
    with pytest.raises(WalletError) as caught:
        Wallet.open(home)
    return caught.value


def envelope_of(home: Path) -> dict[str, Any]:
    data = json.loads((home / KEYSTORE_NAME).read_bytes())
    assert isinstance(data, dict)
    return data


def write_envelope(home: Path, envelope: dict[str, Any]) -> None:
    (home / KEYSTORE_NAME).write_text(json.dumps(envelope))


# --- keystore -------------------------------------------------------------------------------


def test_keystore_file_is_private_and_holds_no_key_material(wallet: Wallet) -> None:
    path = wallet.home / KEYSTORE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    names = sorted(p.name for p in wallet.home.iterdir())
    assert names == [KEYSTORE_NAME, LOCK_NAME], "temp files left"
    assert (wallet.home / LOCK_NAME).stat().st_size == 0  # a lock, never a copy
    raw = path.read_bytes()
    enrollments = wallet.enrollments()
    assert sorted(enrollments) == VERSIONS
    for enrollment in enrollments.values():
        credential = enrollment.credential
        secrets_ = [credential.secret, credential.handle]
        if credential.hiding_key:
            secrets_.append(credential.hiding_key)
        for secret in secrets_:
            for form in (
                secret.hex(),
                secret.hex().upper(),
                base64.b64encode(secret).decode(),
                base64.urlsafe_b64encode(secret).decode().rstrip("="),
            ):
                assert form.encode() not in raw
        assert enrollment.device_id.encode() not in raw
    assert PASSPHRASE.encode() not in raw
    assert wallet.user.encode() not in raw


def test_keystore_reopens_with_the_same_enrollments(wallet: Wallet) -> None:
    again = Wallet.open(wallet.home)
    assert again.enrollments() == wallet.enrollments()
    assert (again.server_url, again.user) == (wallet.server_url, wallet.user)
    assert again.user.startswith("alice_")


def test_wrong_passphrase_is_wallet_locked(wallet: Wallet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE + "!")
    assert wallet_error(wallet.home).code == "wallet_locked"


def test_tampered_ciphertext_is_wallet_locked(wallet: Wallet) -> None:
    envelope = envelope_of(wallet.home)
    ciphertext = bytearray(base64.b64decode(envelope["ciphertext"]))
    ciphertext[len(ciphertext) // 2] ^= 0x01
    envelope["ciphertext"] = base64.b64encode(bytes(ciphertext)).decode()
    write_envelope(wallet.home, envelope)
    assert wallet_error(wallet.home).code == "wallet_locked"


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00\xff garbage", b"[1, 2, 3]", b'{"format": "something-else/1"}', b"\xff" * 64],
)
def test_garbage_file_is_wallet_corrupt(tmp_path: Path, garbage: bytes) -> None:
    tmp_path.joinpath(KEYSTORE_NAME).write_bytes(garbage)
    assert wallet_error(tmp_path).code == "wallet_corrupt"


def test_damaged_envelope_fields_are_wallet_corrupt(wallet: Wallet) -> None:
    for field, value in (("nonce", "not base64!"), ("ciphertext", 12), ("kdf", "scrypt")):
        envelope = envelope_of(wallet.home)
        envelope[field] = value
        write_envelope(wallet.home, envelope)
        assert wallet_error(wallet.home).code == "wallet_corrupt", field


def test_missing_keystore_is_not_enrolled(tmp_path: Path) -> None:
    error = wallet_error(tmp_path / "nowhere")
    assert error.code == "not_enrolled"
    assert "enroll" in error.message


@pytest.mark.parametrize(
    "kdf_change",
    [
        {"n": 2**40},
        {"n": 2**20, "r": 32, "p": 4},  # in each single range, together 4 GiB and a minute
        {"r": 10**6},
        {"p": 10**6},
        {"n": 3000},  # not a power of two: scrypt itself refuses it
        {"n": "32768"},
        {"name": "argon2id"},
    ],
)
def test_absurd_scrypt_parameters_are_corrupt_without_hanging(
    wallet: Wallet, kdf_change: dict[str, object]
) -> None:
    envelope = envelope_of(wallet.home)
    envelope["kdf"].update(kdf_change)
    write_envelope(wallet.home, envelope)
    started_s = time.perf_counter()
    assert wallet_error(wallet.home).code == "wallet_corrupt"
    assert time.perf_counter() - started_s < 1.0


def test_secret_file_stands_in_for_the_passphrase(
    tmp_path: Path, server: Server, customer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV)
    home = tmp_path / "wallet"
    enrolled_wallet(home, server, ["v1"], user=customer)
    secret_path = home / SECRET_NAME
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert Wallet.open(home).enrollment("v1").device_id
    secret_path.write_text("another secret")
    assert wallet_error(home).code == "wallet_locked"


# --- next_code ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_codes_verify_against_the_server_records(
    wallet: Wallet, verifier: Verifier, version: str
) -> None:
    device_id = wallet.enrollment(version).device_id
    now_s = time.time()
    codes = [wallet.next_code(version, local_now_s=now_s) for _ in range(3)]
    assert len({code.text for code in codes}) == 3
    assert [code.counter for code in codes] == [0, 1, 2]
    claims = set()
    for code in codes:
        assert code.version == version
        assert 0 < code.refresh_in_s <= STEP_SECONDS
        result = accepted(verifier, code, now_s=time.time())
        assert result.device.device_id == device_id
        claims.add(result.claim_key)
    assert len(claims) == 3


def test_default_version_is_the_numeric_one(wallet: Wallet, verifier: Verifier) -> None:
    code = wallet.next_code(local_now_s=T0_S)
    assert code.version == "v1" and code.symbology == "numeric"
    assert len(code.text) == 24 and code.text.isdigit()
    accepted(verifier, code, now_s=T0_S)


def test_a_code_expires_and_is_not_accepted_by_another_device(
    tmp_path: Path, wallet: Wallet, verifier: Verifier
) -> None:
    code = wallet.next_code("v2", local_now_s=T0_S)
    late = verifier.verify(code.text, now_s=T0_S + 3 * STEP_SECONDS)
    assert isinstance(late, Rejected) and late.reason is Reason.CODE_EXPIRED
    with start_server("sqlite", where="in_process") as other_server:
        other = enrolled_wallet(tmp_path / "other", other_server, ["v2"])
        foreign = other.next_code("v2", local_now_s=T0_S)
    invalid = verifier.verify(foreign.text, now_s=T0_S)
    assert isinstance(invalid, Rejected) and invalid.reason is Reason.CODE_INVALID


@pytest.mark.parametrize(("version", "counter_max"), [("v1", 9), ("v2", 3), ("v3", 2)])
def test_counter_exhausted_after_counter_max_plus_one_codes(
    tmp_path: Path,
    server: Server,
    customer: str,
    verifier: Verifier,
    version: str,
    counter_max: int,
) -> None:
    # v1's grant is the server's own (10 codes a step). v2/v3 allow 65536 codes a step and the
    # server grants them all; a grant may allow fewer, so for them its grant is edited to.
    assert (by_name(version).counter_max == counter_max) is (version == "v1")

    def allow_fewer(grant: dict[str, Any]) -> None:
        grant["counter_max"] = counter_max

    fewer = None if version == "v1" else json_edit("POST", "/v1/wallet/devices", allow_fewer)
    with intercepted(server, fewer):
        wallet = enrolled_wallet(tmp_path / "wallet", server, [version], user=customer)
    assert wallet.enrollment(version).counter_max == counter_max
    now_s = T0_S + 12.5
    codes = [wallet.next_code(version, local_now_s=now_s) for _ in range(counter_max + 1)]
    assert [code.counter for code in codes] == list(range(counter_max + 1))
    with pytest.raises(CounterExhausted) as caught:
        wallet.next_code(version, local_now_s=now_s + 1)
    assert caught.value.code == "counter_exhausted"
    assert caught.value.retry_after_s == pytest.approx(STEP_SECONDS - 13.5)
    next_step = wallet.next_code(version, local_now_s=T0_S + STEP_SECONDS)
    assert (next_step.step, next_step.counter) == (step_at(T0_S) + 1, 0)
    for code in [*codes, next_step]:
        accepted(verifier, code, now_s=T0_S + STEP_SECONDS)


@pytest.mark.parametrize("version", VERSIONS)
def test_counters_survive_reopening_and_a_clock_stepping_back(
    wallet: Wallet, verifier: Verifier, version: str
) -> None:
    """Every (step, counter) is handed out once, whatever the clock and the process do."""
    home = wallet.home
    # (local time, reopen the wallet before this code?)
    plan = [
        (T0_S, False),
        (T0_S + 1, True),
        (T0_S + STEP_SECONDS, False),
        (T0_S + 2 * STEP_SECONDS, True),
        (T0_S + 5, True),  # the clock stepped back two steps
        (T0_S + STEP_SECONDS + 3, False),
        (T0_S + 3 * STEP_SECONDS, True),
        (T0_S + 2, True),  # and back again
    ]
    claims: set[bytes] = set()
    texts: set[str] = set()
    handed_out: list[tuple[int, int]] = []
    for now_s, reopen in plan:
        if reopen:
            wallet = Wallet.open(home)
        code = wallet.next_code(version, local_now_s=now_s)
        result = accepted(verifier, code, now_s=now_s)
        assert result.claim_key not in claims, f"repeated {result.claim_key!r} at {now_s}"
        claims.add(result.claim_key)
        texts.add(code.text)
        handed_out.append((code.step - step_at(T0_S), code.counter))
    assert len(texts) == len(plan)
    assert handed_out == [(0, 0), (0, 1), (1, 0), (2, 0), (0, 2), (1, 1), (3, 0), (0, 3)]


def test_a_clock_far_behind_never_repeats_forgotten_counters(
    wallet: Wallet, verifier: Verifier
) -> None:
    """Past the steps the wallet remembers, it refuses rather than hand out counter 0 again."""
    claims = set()
    for step_index in range(COUNTER_STEPS_KEPT + 1):  # one step more than it remembers
        now_s = T0_S + step_index * STEP_SECONDS
        code = wallet.next_code("v1", local_now_s=now_s)
        claims.add(accepted(verifier, code, now_s=now_s).claim_key)
    for _ in range(2):  # back to the first step, whose counter the wallet has forgotten
        with pytest.raises(CounterExhausted) as caught:
            Wallet.open(wallet.home).next_code("v1", local_now_s=T0_S + 1)
        assert caught.value.retry_after_s == pytest.approx(STEP_SECONDS - 1)
    remembered = wallet.next_code("v1", local_now_s=T0_S + STEP_SECONDS + 1)
    assert remembered.counter == 1
    assert accepted(verifier, remembered, now_s=T0_S + STEP_SECONDS).claim_key not in claims


def test_learned_clock_offset_makes_codes_the_server_accepts(
    tmp_path: Path,
    server: Server,
    customer: str,
    verifier: Verifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The phone's clock is 10 minutes fast; enrollment taught it the server's time."""
    server_clock(monkeypatch, -600.0)
    wallet = enrolled_wallet(
        tmp_path / "wallet", server, user=customer, keep_offset=True, server_offset_s=-600.0
    )
    assert wallet.clock_offset_s == pytest.approx(-600.0, abs=2.0)
    assert Wallet.open(wallet.home).clock_offset_s == wallet.clock_offset_s
    local_now_s = time.time()  # the real clock is the phone's: 600 s ahead of the server
    for version in VERSIONS:
        result = accepted(
            verifier, wallet.next_code(version, local_now_s=local_now_s), now_s=time.time() - 600
        )
        assert abs(result.drift_steps) <= 1
    wallet.record_clock_offset(0.0)  # forget it: the same phone's codes are now 10 min ahead
    ahead = verifier.verify(
        wallet.next_code("v1", local_now_s=local_now_s).text, now_s=time.time() - 600
    )
    assert isinstance(ahead, Rejected) and ahead.reason is Reason.CODE_EXPIRED


def test_absurd_clock_offsets_are_ignored(wallet: Wallet) -> None:
    wallet.record_clock_offset(12.3456)
    wallet.record_clock_offset(None)
    wallet.record_clock_offset(1e12)
    assert Wallet.open(wallet.home).clock_offset_s == 12.346


def test_unenrolled_version_is_not_enrolled(tmp_path: Path, server: Server, customer: str) -> None:
    wallet = enrolled_wallet(tmp_path / "wallet", server, ["v2"], user=customer)
    assert wallet.next_code(local_now_s=T0_S).version == "v2"
    with pytest.raises(WalletError) as caught:
        wallet.next_code("v3", local_now_s=T0_S)
    assert caught.value.code == "not_enrolled"
    empty = Wallet.open_or_create(tmp_path / "empty")
    with pytest.raises(WalletError) as caught:
        empty.next_code(local_now_s=T0_S)
    assert caught.value.code == "not_enrolled"


# --- online ---------------------------------------------------------------------------------


def test_enroll_all_versions(tmp_path: Path, server: Server, verifier: Verifier) -> None:
    wallet = Wallet.open_or_create(tmp_path / "wallet")
    user = new_user(server, "alice")
    with intercepted(server) as exchanges:
        result = online.enroll(
            wallet, ServerClient(server.url + "/"), user=user, password=PASSWORD, versions=VERSIONS
        )
    assert [grant.version for grant in result.granted] == VERSIONS
    assert (wallet.server_url, wallet.user) == (server.url, user)
    enrollments = wallet.enrollments()
    for grant in result.granted:
        enrollment: Enrollment = enrollments[grant.version]
        assert enrollment.device_id == grant.device_id
        record = verifier.lookup(grant.version, enrollment.credential.handle)
        assert record is not None and record.device_id == grant.device_id
        if grant.version == "v3":  # the server holds only the public half
            assert record.key != enrollment.credential.secret
            assert enrollment.credential.seal_public_key == verifier.seal_public_key
        else:
            assert record.key == enrollment.credential.secret
    posts = [seen for seen in exchanges if seen.path == "/v1/wallet/devices"]
    assert len(posts) == 3
    keys = {seen.headers.get("Idempotency-Key") for seen in posts}
    assert len(keys) == 3 and None not in keys
    assert all(seen.headers["Authorization"].startswith("Bearer ") for seen in posts)


def test_enroll_with_a_wrong_password_is_unauthorized(tmp_path: Path, server: Server) -> None:
    wallet = Wallet.open_or_create(tmp_path / "wallet")
    user = new_user(server, "alice")
    with intercepted(server) as exchanges, pytest.raises(ServerRejected) as caught:
        online.enroll(
            wallet, ServerClient(server.url), user=user, password="wrong", versions=VERSIONS
        )
    assert (caught.value.code, caught.value.status) == ("unauthorized", 401)
    assert "wrong user name or password" in caught.value.message
    assert wallet.enrollments() == {}
    assert [seen.path for seen in exchanges] == ["/v1/wallet/sessions"]


def test_enroll_with_the_server_down_is_unreachable(tmp_path: Path) -> None:
    wallet = Wallet.open_or_create(tmp_path / "wallet")
    url = closed_port_url()
    with pytest.raises(ServerUnreachable) as caught:
        online.enroll(wallet, ServerClient(url), user="alice", password=PASSWORD, versions=VERSIONS)
    assert caught.value.code == "server_unreachable"
    assert url in caught.value.message


def test_server_url_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(ServerUnreachable):
        ServerClient("ftp://example.org")


def test_balance_and_history_are_signed_requests(tmp_path: Path, server: Server) -> None:
    """Its own wallet: two of its codes are charged (real payments in its history)."""
    wallet = enrolled_wallet(tmp_path / "wallet", server)
    till = new_till(server)
    for amount in ("3.20", "9.99"):
        assert charge(till, code_of(wallet, "v1"), amount)["status"] == "succeeded"
    with intercepted(server) as exchanges:
        body = online.balance(wallet)
        newest = online.history(wallet, limit=1)["items"]
        everything = online.history(wallet, limit=500)["items"]
    assert body["accounts"] == [{"currency": "CNY", "balance": "86.81", "balance_minor": 8681}]
    assert [item["amount"] for item in everything] == ["9.99", "3.20"]  # newest first
    assert newest == everything[:1]
    gets = [seen for seen in exchanges if seen.method == "GET"]
    assert [(seen.path, seen.status) for seen in gets] == [
        ("/v1/wallet/balance", 200),
        ("/v1/wallet/history?limit=1", 200),
        ("/v1/wallet/history?limit=100", 200),
    ]
    v1_device = wallet.enrollment("v1").device_id
    assert all(seen.headers["Paycode-Device"] == v1_device for seen in gets)


def test_signed_requests_work_with_a_learned_clock_offset(
    tmp_path: Path, server: Server, customer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phone 10 minutes fast signs with server time, or the server refuses its timestamp."""
    server_clock(monkeypatch, -600.0)
    wallet = enrolled_wallet(
        tmp_path / "wallet", server, ["v3"], user=customer, keep_offset=True, server_offset_s=-600.0
    )
    assert online.balance(wallet)["accounts"][0]["balance_minor"] == 10000


def _raw_get(server: Server, path: str, headers: dict[str, str]) -> int:
    """The status of a GET the test signs by hand, sent straight to the app."""
    assert isinstance(server, InProcessServer) and server.app is not None
    return int(server.app.test_client().get(path, headers=headers).status_code)


@pytest.mark.parametrize("version", VERSIONS)
def test_server_rejects_tampered_signatures(wallet: Wallet, server: Server, version: str) -> None:
    """What the wallet's signature proves: the server refuses every change to it."""
    enrollment = wallet.enrollment(version)

    def headers(
        path: str, *, nonce: str, credential: DeviceCredential | None = None
    ) -> dict[str, str]:
        timestamp_s = int(time.time())
        message = wallet_auth.signing_message("GET", path, timestamp_s, nonce, b"")
        signature = wallet_auth.sign(credential or enrollment.credential, message)
        signed = wallet_auth.SignedHeaders(enrollment.device_id, timestamp_s, nonce, signature)
        return signed.as_dict()

    path = "/v1/wallet/history?limit=5"
    # Nonces are the server's to remember for every test's copy of this wallet: fresh ones.
    nonce = f"{version}-{time.time_ns()}-"
    good = headers(path, nonce=nonce + "1")
    assert _raw_get(server, path, good) == 200
    assert _raw_get(server, path, good) == 401, "a replayed nonce"
    other_path = headers("/v1/wallet/history?limit=50", nonce=nonce + "2")
    assert _raw_get(server, path, other_path) == 401, "signature over another query"
    flipped = headers(path, nonce=nonce + "3")
    raw = bytearray(base64.b64decode(flipped["Paycode-Signature"]))
    raw[0] ^= 0x80
    flipped["Paycode-Signature"] = base64.b64encode(bytes(raw)).decode()
    assert _raw_get(server, path, flipped) == 401, "a flipped signature bit"
    wrong_key = DeviceCredential(version, enrollment.credential.handle, bytes(32))
    assert _raw_get(server, path, headers(path, nonce=nonce + "4", credential=wrong_key)) == 401
    assert _raw_get(server, path, {}) == 401, "no signature at all"

    forged = DeviceAuth(enrollment.device_id, wrong_key)
    with pytest.raises(ServerRejected) as caught:
        ServerClient(server.url).call("GET", "/v1/wallet/balance", signer=forged.sign)
    assert (caught.value.code, caught.value.status) == ("unauthorized", 401)


# --- merchant-bound codes -------------------------------------------------------------------

CAFE_TILL = MerchantBinding("mer_cafe", "term_1")


def charged_at(
    verifier: Verifier, code: GeneratedCode, merchant_id: str, terminal_id: str
) -> Verification:
    """Verify as the server does for a charge from `terminal_id` of `merchant_id`."""
    bindings = charging_point_bindings(merchant_id, terminal_id)
    return verifier.verify(code.text, now_s=T0_S, bindings=bindings)


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_bound_code_pays_only_where_it_was_made_for(
    wallet: Wallet, verifier: Verifier, version: str
) -> None:
    code = wallet.next_code(version, local_now_s=T0_S, binding=CAFE_TILL)
    assert code.binding == CAFE_TILL
    result = charged_at(verifier, code, "mer_cafe", "term_1")
    assert isinstance(result, Accepted) and result.flags == Flags.MERCHANT_BOUND
    for merchant_id, terminal_id in (("mer_cafe", "term_2"), ("mer_shop", "term_1")):
        elsewhere = charged_at(verifier, code, merchant_id, terminal_id)
        assert isinstance(elsewhere, Rejected) and elsewhere.reason is Reason.MERCHANT_MISMATCH
    unbound = wallet.next_code(version, local_now_s=T0_S)
    assert unbound.binding is None
    assert isinstance(charged_at(verifier, unbound, "mer_shop", "term_1"), Accepted)


@pytest.mark.parametrize(
    ("enrolled_versions", "expected"), [(VERSIONS, "v3"), (["v1", "v2"], "v2")]
)
def test_bound_code_defaults_to_a_version_that_can_be_bound(
    tmp_path: Path, server: Server, customer: str, enrolled_versions: list[str], expected: str
) -> None:
    wallet = enrolled_wallet(tmp_path / "wallet", server, enrolled_versions, user=customer)
    assert wallet.next_code(local_now_s=T0_S, binding=CAFE_TILL).version == expected
    assert wallet.next_code(local_now_s=T0_S).version == "v1"  # unbound default unchanged


def test_v1_cannot_be_bound_and_spends_no_counter(
    tmp_path: Path, server: Server, customer: str
) -> None:
    wallet = enrolled_wallet(tmp_path / "wallet", server, ["v1"], user=customer)
    for version in ("v1", None):
        with pytest.raises(WalletError) as caught:
            wallet.next_code(version, local_now_s=T0_S, binding=CAFE_TILL)
        assert caught.value.code == ("binding_unsupported" if version else "not_enrolled")
        assert "v2 or v3" in caught.value.message
    assert wallet.next_code("v1", local_now_s=T0_S).counter == 0


CONCURRENT_SCRIPT = """
import pathlib, sys
from paycode.client.wallet import Wallet
wallet = Wallet.open(pathlib.Path(sys.argv[1]))
for n in range(30):
    if sys.argv[2] == "codes":
        print(wallet.next_code("v2", local_now_s=1_763_888_401.0).text)
    else:
        wallet.record_clock_offset(n / 1000)
"""


def test_processes_sharing_a_home_never_hand_out_a_code_twice(
    wallet: Wallet, tmp_path: Path
) -> None:
    """Two `code` processes and one re-syncing the clock (an online call) on one home: each
    change re-reads the keystore under a lock, so no counter is lost and no code repeats."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_SCRIPT, str(wallet.home), role],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for role in ("codes", "clock", "codes")
    ]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0]
    codes = [line for output in outputs for line in output.split()]
    assert len(codes) == 60 and len(set(codes)) == 60
    assert Wallet.open(wallet.home).clock_offset_s == pytest.approx(0.029)
