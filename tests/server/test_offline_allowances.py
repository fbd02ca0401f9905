"""Offline allowances on the server (docs/offline.md §2, issue 21 step 3): taking one moves the
money into its own escrow and certifies the wallet's four fresh keys; handing it back keeps in
escrow what the codes made may still claim; the sweep returns the rest once. On SQLite and
PostgreSQL, with requests signed by an enrolled device as a wallet signs them."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select, update

from paycode.appkit.http_client import ServerClient
from paycode.client.online import DeviceAuth
from paycode.server.books import escrow_return, ledger
from paycode.server.charge import step_up
from paycode.server.config import ServerConfig
from paycode.server.database.models import Account, User, new_id
from paycode.server.database.offline_models import (
    ESCROW,
    OfflineAcceptance,
    OfflineAllowance,
    OfflineCertificate,
)
from paycode.server.safety.limits import LimitSettings
from paycode.server.safety.offline_keys import load_offline_keys
from paycode.server.safety.offline_settings import OfflineSettings
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.emv.qr_signature import b64url
from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.errors import ServerRejected
from paycode.shared.offline import check_certificate, parse_certificate
from paycode.shared.offline_proof import make_offline_key_proof
from tests.support.books import assert_books_clean
from tests.support.servers import Server, all_at_once
from tests.support.shop import bank_devices, bank_user, ok_json
from tests.support.weak_keys import small_order_keys

PIN = "246810"
WRONG_PIN = "135790"
ALLOWANCES = "/v1/wallet/offline/allowances"
SETTINGS = OfflineSettings()


@dataclass
class Customer:
    """A user with a PIN and one enrolled device, signing as the wallet does."""

    server: Server
    user_id: str
    auth: DeviceAuth
    seeds: dict[bytes, bytes] = field(default_factory=dict)
    """Public key -> seed of every offline key this customer made."""

    @property
    def device_id(self) -> str:
        return self.auth.device_id

    def client(self) -> ServerClient:
        return ServerClient(self.server.url)

    def fresh_keys(self, count: int = 4) -> list[bytes]:
        publics = []
        for _ in range(count):
            seed, public = new_ed25519_seed()
            self.seeds[public] = seed
            publics.append(public)
        return publics

    def take_body(
        self,
        idempotency_key: str,
        amount_minor: int = 10_000,
        *,
        publics: list[bytes] | None = None,
        pin: str | None = PIN,
    ) -> dict[str, Any]:
        publics = publics if publics is not None else self.fresh_keys()
        keys = [
            {
                "public_key": b64url(public),
                "proof": b64url(
                    make_offline_key_proof(
                        self.seeds[public], self.device_id, idempotency_key, index
                    )
                ),
            }
            for index, public in enumerate(publics)
        ]
        body: dict[str, Any] = {"amount_minor": amount_minor, "currency": "CNY", "keys": keys}
        if pin is not None:
            body["pin"] = pin
        return body

    def post(self, path: str, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        reply = self.client().call(
            "POST", path, body, signer=self.auth.sign, idempotency_key=idempotency_key
        )
        return reply.body

    def take(self, amount_minor: int = 10_000, **options: Any) -> dict[str, Any]:
        key = new_key()
        return self.post(ALLOWANCES, self.take_body(key, amount_minor, **options), key)

    def hand_back(
        self, allowance_id: str, reserved_minor: list[int] | None = None, key: str | None = None
    ) -> dict[str, Any]:
        uses = uses_of(self.server, allowance_id, reserved_minor)
        return self.post(
            f"{ALLOWANCES}/{allowance_id}/return", {"certificates": uses}, key or new_key()
        )

    def listed(self) -> list[dict[str, Any]]:
        reply = self.client().call("GET", ALLOWANCES, signer=self.auth.sign)
        allowances: list[dict[str, Any]] = reply.body["allowances"]
        return allowances

    def balance_minor(self) -> int:
        with self.server.session() as session:
            found = ledger.account(session, "user", self.user_id, "CNY")
            assert found is not None
            return found.balance_minor


def new_key() -> str:
    return str(uuid.uuid4())


def customer(server: Server, balance_minor: int = 200_000) -> Customer:
    user_id = bank_user(server, balance_minor)
    credentials = bank_devices(server, user_id)
    device_id, credential = next(
        (device_id, credential)
        for device_id, credential in credentials.items()
        if credential.version == "v3"
    )
    with server.session() as session:
        step_up.set_pin(session, user_id, PIN)
    return Customer(server, user_id, DeviceAuth(device_id, credential))


def refused_with(code: str, call: Any, *args: Any, **kwargs: Any) -> ServerRejected:
    with pytest.raises(ServerRejected) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


def uses_of(
    server: Server, allowance_id: str, reserved_minor: list[int] | None = None
) -> list[dict[str, Any]]:
    """The hand-back body's certificates, in cert id order, reserving `reserved_minor`."""
    with server.session() as session:
        cert_ids = session.scalars(
            select(OfflineCertificate.cert_id)
            .where(OfflineCertificate.allowance_id == allowance_id)
            .order_by(OfflineCertificate.cert_id)
        ).all()
    reserved = reserved_minor or [0] * len(cert_ids)
    return [
        {"cert_id": cert_id, "counters_used": 1 if amount else 0, "reserved_minor": amount}
        for cert_id, amount in zip(cert_ids, reserved, strict=True)
    ]


def escrow_minor(server: Server, allowance_id: str) -> int | None:
    with server.session() as session:
        found = ledger.account(session, ESCROW, allowance_id, "CNY")
        return None if found is None else found.balance_minor


def allowance_count(server: Server, user_id: str) -> int:
    with server.session() as session:
        return int(
            session.scalar(select(func.count()).where(OfflineAllowance.user_id == user_id)) or 0
        )


def published_keys(server: Server) -> dict[bytes, bytes]:
    box = SecretBox.from_config(ServerConfig.from_env(server.env))
    with server.session() as session:
        keys = load_offline_keys(session, box, now_s=time.time(), publish_s=SETTINGS.key_publish_s)
    return {key.key_id: key.public_key for key in keys.live}


def move_returns_to_past(server: Server, allowance_id: str) -> None:
    with server.session() as session:
        session.execute(
            update(OfflineAllowance)
            .where(OfflineAllowance.id == allowance_id)
            .values(returns_at_s=time.time() - 1)
        )


# -- taking an allowance ------------------------------------------------------------------------


def test_an_allowance_moves_into_escrow_and_certifies_the_four_keys(server: Server) -> None:
    alice = customer(server, 200_000)
    key = new_key()
    publics = alice.fresh_keys()
    reply = alice.post(ALLOWANCES, alice.take_body(key, 50_000, publics=publics), key)
    allowance_id = reply["allowance_id"]
    assert reply["amount_minor"] == 50_000 and reply["currency"] == "CNY"
    assert reply["balance_minor"] == 150_000 == alice.balance_minor()
    assert escrow_minor(server, allowance_id) == 50_000
    assert reply["returns_at_s"] == reply["expires_at_s"] + SETTINGS.grace_s
    assert reply["expires_at_s"] % 3600 == 0
    assert reply["expires_at_s"] >= time.time() + SETTINGS.lifetime_s - 60  # rounded up
    assert_books_clean(server)
    server_keys = published_keys(server)
    now_s = time.time()
    assert len(reply["certificates"]) == 4
    for public, text in zip(publics, reply["certificates"], strict=True):
        raw = base64.b64decode(text, validate=True)
        assert len(raw) == 137
        certificate = parse_certificate(raw)
        assert (
            check_certificate(certificate, server_keys=server_keys, now_s=now_s, currency="CNY")
            is None
        )
        fields = certificate.fields
        assert fields.offline_pk == public, "in the order the keys were asked"
        assert fields.total_cap_minor == 12_500
        assert fields.per_payment_cap_minor == 10_000
        assert fields.count_max == SETTINGS.count
        assert fields.expiry_s == reply["expires_at_s"]
        assert fields.not_before_s <= now_s
    listed = alice.listed()
    assert [item["allowance_id"] for item in listed] == [allowance_id]
    assert listed[0] | {"expires_at_s": 0, "returns_at_s": 0} == {
        "allowance_id": allowance_id,
        "state": "live",
        "amount_minor": 50_000,
        "currency": "CNY",
        "expires_at_s": 0,
        "returns_at_s": 0,
        "settled_minor": 0,
        "returned_minor": 0,
        "held_minor": 50_000,
    }


def test_a_retry_replays_the_same_certificates_and_moves_nothing_twice(server: Server) -> None:
    alice = customer(server, 100_000)
    key = new_key()
    body = alice.take_body(key, 20_000)
    first = alice.post(ALLOWANCES, body, key)
    again = alice.post(ALLOWANCES, body, key)
    assert again["allowance_id"] == first["allowance_id"]
    assert again["certificates"] == first["certificates"]
    assert alice.balance_minor() == 80_000
    assert allowance_count(server, alice.user_id) == 1
    # The PIN is asked of every call, a retry too; the key is bound to the rest of the body.
    without_pin = {name: value for name, value in body.items() if name != "pin"}
    refused_with("pin_required", alice.post, ALLOWANCES, without_pin, key)
    changed = alice.take_body(key, 40_000)
    refused_with("idempotency_conflict", alice.post, ALLOWANCES, changed, key)
    assert_books_clean(server)


def test_an_amount_off_the_ladder_is_refused(server: Server) -> None:
    alice = customer(server)
    refused = refused_with("offline_amount_invalid", alice.take, 12_345)
    assert refused.status == 422
    assert alice.balance_minor() == 200_000
    assert allowance_count(server, alice.user_id) == 0


def test_the_pin_is_always_required_and_a_wrong_one_counts(server: Server) -> None:
    alice = customer(server)
    assert refused_with("pin_required", alice.take, pin=None).status == 403
    wrong = refused_with("pin_invalid", alice.take, pin=WRONG_PIN)
    assert wrong.status == 403
    assert "4 tries left" in wrong.message
    assert "3 tries left" in refused_with("pin_invalid", alice.take, pin=WRONG_PIN).message
    assert alice.balance_minor() == 200_000
    assert allowance_count(server, alice.user_id) == 0
    alice.take()  # the right PIN still works
    assert alice.balance_minor() == 190_000


def test_a_key_without_a_valid_proof_is_refused(server: Server) -> None:
    alice = customer(server)
    key = new_key()
    body = alice.take_body(key)
    body["keys"][1], body["keys"][2] = body["keys"][2], body["keys"][1]  # proofs bind the index
    assert refused_with("key_proof_invalid", alice.post, ALLOWANCES, body, key).status == 400
    other = alice.take_body(new_key())  # proofs made for another request
    refused_with("key_proof_invalid", alice.post, ALLOWANCES, other, new_key())
    assert alice.balance_minor() == 200_000


def test_weak_and_repeated_keys_are_refused(server: Server) -> None:
    alice = customer(server)
    key = new_key()
    body = alice.take_body(key)
    body["keys"][0]["public_key"] = b64url(small_order_keys()[1])
    assert refused_with("weak_key", alice.post, ALLOWANCES, body, key).status == 400
    publics = alice.fresh_keys(3)
    twice = alice.take_body(key, publics=[*publics, publics[0]])
    refused_with("weak_key", alice.post, ALLOWANCES, twice, key)
    assert alice.balance_minor() == 200_000
    assert allowance_count(server, alice.user_id) == 0


def test_a_key_certified_before_is_refused(server: Server) -> None:
    alice = customer(server)
    publics = alice.fresh_keys()
    key = new_key()
    first = alice.post(ALLOWANCES, alice.take_body(key, publics=publics), key)
    alice.hand_back(first["allowance_id"])
    before = alice.balance_minor()
    reused = [publics[2], *alice.fresh_keys(3)]
    again = new_key()
    body = alice.take_body(again, publics=reused)
    refused_with("weak_key", alice.post, ALLOWANCES, body, again)
    assert alice.balance_minor() == before
    assert allowance_count(server, alice.user_id) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"amount_minor": "10000"},
        {"amount_minor": True},
        {"amount_minor": 10_000.0},
        {"currency": "cny"},
        {"extra": 1},
        {"keys": []},
    ],
)
def test_malformed_requests_are_invalid(server: Server, body: dict[str, Any]) -> None:
    alice = customer(server)
    key = new_key()
    sent = alice.take_body(key) | body
    assert refused_with("invalid_request", alice.post, ALLOWANCES, sent, key).status == 400


def test_a_key_entry_with_extra_fields_or_bad_base64_is_invalid(server: Server) -> None:
    alice = customer(server)
    key = new_key()
    body = alice.take_body(key)
    body["keys"][3]["label"] = "x"
    refused_with("invalid_request", alice.post, ALLOWANCES, body, key)
    body = alice.take_body(key)
    body["keys"][0]["proof"] = body["keys"][0]["proof"] + "="
    refused_with("invalid_request", alice.post, ALLOWANCES, body, key)


def test_insufficient_funds_moves_nothing(server: Server) -> None:
    alice = customer(server, 3_000)
    assert refused_with("insufficient_funds", alice.take, 4_000).status == 422
    assert alice.balance_minor() == 3_000
    assert allowance_count(server, alice.user_id) == 0
    assert_books_clean(server)


def test_one_live_allowance_at_a_time(server: Server) -> None:
    alice = customer(server)
    alice.take(4_000)
    refused_with("offline_allowance_live", alice.take, 4_000)
    assert alice.balance_minor() == 196_000
    assert allowance_count(server, alice.user_id) == 1


def test_at_most_two_allowances_a_day(server: Server) -> None:
    days = LimitSettings()
    for _attempt in range(2):  # a limit day may end mid-test (16:00 UTC): then once more
        day = days.day(time.time())
        alice = customer(server)
        for _ in range(SETTINGS.per_day):
            alice.hand_back(alice.take(4_000)["allowance_id"])
        try:
            alice.take(4_000)
        except ServerRejected as refused:
            assert refused.code == "offline_daily_limit", refused
            break
        assert days.day(time.time()) != day, "a third allowance in one limit day"
    assert alice.balance_minor() == 200_000
    assert allowance_count(server, alice.user_id) == SETTINGS.per_day


def test_a_blocked_user_gets_no_allowance(server: Server) -> None:
    alice = customer(server)
    with server.session() as session:
        session.execute(
            update(User).where(User.id == alice.user_id).values(offline_blocked_at_s=time.time())
        )
    refused_with("offline_blocked", alice.take)
    assert alice.balance_minor() == 200_000


def test_two_requests_at_once_make_one_allowance(server: Server) -> None:
    alice = customer(server)

    def take() -> str:
        try:
            return str(alice.take(20_000)["allowance_id"])
        except ServerRejected as refused:
            return refused.code

    results = all_at_once([take, take])
    assert sorted(result[:4] for result in results) == ["alw_", "offl"], results
    assert "offline_allowance_live" in results
    assert alice.balance_minor() == 180_000
    assert allowance_count(server, alice.user_id) == 1
    assert_books_clean(server)


# -- handing it back and the sweep ----------------------------------------------------------------


def test_hand_back_returns_what_was_not_reserved_and_denies_the_certificates(
    server: Server,
) -> None:
    alice = customer(server, 100_000)
    allowance_id = alice.take(10_000)["allowance_id"]
    key = new_key()
    reply = alice.hand_back(allowance_id, [1_000, 0, 2_500, 0], key=key)
    assert reply | {"server_time": 0} == {
        "allowance_id": allowance_id,
        "state": "returned",
        "returned_minor": 6_500,
        "held_minor": 3_500,
        "balance_minor": 96_500,
        "server_time": 0,
    }
    assert alice.balance_minor() == 96_500
    assert escrow_minor(server, allowance_id) == 3_500
    with server.session() as session:
        certificates = session.scalars(
            select(OfflineCertificate)
            .where(OfflineCertificate.allowance_id == allowance_id)
            .order_by(OfflineCertificate.cert_id)
        ).all()
        assert [c.returned_spent_minor for c in certificates] == [1_000, 0, 2_500, 0]
        assert [c.returned_counter for c in certificates] == [1, 0, 1, 0]
        assert all(c.denied_at_s is not None for c in certificates)
    # The same call retried is its replay; another is refused and moves nothing.
    again = alice.hand_back(allowance_id, [1_000, 0, 2_500, 0], key=key)
    assert again["returned_minor"] == 6_500
    assert refused_with("allowance_not_live", alice.hand_back, allowance_id).status == 409
    assert alice.balance_minor() == 96_500
    listed = alice.listed()[0]
    assert listed["state"] == "returned"
    assert (listed["returned_minor"], listed["held_minor"]) == (6_500, 3_500)
    assert_books_clean(server)


def test_two_hand_backs_at_once_return_the_money_once(server: Server) -> None:
    alice = customer(server, 100_000)
    allowance_id = alice.take(20_000)["allowance_id"]

    def hand_back() -> str:
        try:
            return str(alice.hand_back(allowance_id)["returned_minor"])
        except ServerRejected as refused:
            return refused.code

    assert sorted(all_at_once([hand_back, hand_back])) == ["20000", "allowance_not_live"]
    assert alice.balance_minor() == 100_000
    assert_books_clean(server)


def test_hand_back_checks_owner_and_certificates(server: Server) -> None:
    alice, bob = customer(server), customer(server)
    allowance_id = alice.take(4_000)["allowance_id"]
    uses = uses_of(server, allowance_id)
    path = f"{ALLOWANCES}/{allowance_id}/return"
    refused_with("not_found", bob.post, path, {"certificates": uses}, new_key())
    refused_with("not_found", alice.post, f"{ALLOWANCES}/alw_nope/return", {"certificates": uses},
                 new_key())  # fmt: skip
    for wrong in (
        uses[:3],
        [*uses[:3], uses[0]],
        [*uses[:3], uses[3] | {"reserved_minor": 1_001}],  # T = 1000
        [*uses[:3], uses[3] | {"counters_used": SETTINGS.count + 1}],
        [*uses[:3], uses[3] | {"cert_id": "0" * 32}],
        [*uses[:3], uses[3] | {"extra": 1}],
    ):
        refused_with("invalid_request", alice.post, path, {"certificates": wrong}, new_key())
    assert escrow_minor(server, allowance_id) == 4_000
    assert alice.hand_back(allowance_id)["returned_minor"] == 4_000


def test_hand_back_keeps_only_what_unsettled_codes_may_claim(server: Server) -> None:
    """Escrow already paid 800 of certificate 0's 1000 reserved: 200 of it and certificate 2's
    2500 stay. Run in a transaction rolled back at the end: the charge is made up here (the
    settlement is another module's), and leaves nothing behind."""
    alice = customer(server, 100_000)
    allowance_id = alice.take(10_000)["allowance_id"]
    uses = uses_of(server, allowance_id, [1_000, 0, 2_500, 0])
    with server.session() as session:
        escrow = ledger.account(session, ESCROW, allowance_id, "CNY")
        payee = ledger.open_account(session, "merchant", new_id("mer"), "CNY")
        assert escrow is not None
        ledger.transfer(
            session, kind="charge", debit=escrow, credit=payee, amount_minor=800, now_s=1.0
        )
        session.add(
            OfflineAcceptance(
                terminal_id="ter_test", id=new_id("acc"), merchant_id=payee.owner_id, seq=1,
                allowance_id=allowance_id, cert_id=uses[0]["cert_id"], counter=0,
                amount_minor=800, currency="CNY", at_s=1.0, arrived_at_s=1.0, result="paid",
                paid_minor=800, loss_minor=0,
            )
        )  # fmt: skip
        session.flush()
        done = escrow_return.return_allowance(
            session,
            user_id=alice.user_id,
            allowance_id=allowance_id,
            uses=[escrow_return.CertificateUse(**use) for use in uses],
            now_s=time.time(),
        )
        assert (done.held_minor, done.returned_minor) == (2_700, 6_500)
        assert done.balance_minor == 96_500
        session.rollback()
    assert escrow_minor(server, allowance_id) == 10_000


def test_the_sweep_returns_the_rest_once(server: Server) -> None:
    alice = customer(server, 100_000)
    returned_id = alice.take(10_000)["allowance_id"]
    alice.hand_back(returned_id, [0, 1_500, 0, 0])
    with server.session() as session:
        allowance = session.get(OfflineAllowance, returned_id)
        assert allowance is not None
        returns_at_s = allowance.returns_at_s
        assert escrow_return.sweep_due(session, returns_at_s - 1, 10) == []
        swept = escrow_return.sweep_due(session, returns_at_s, 100)
    mine = [(one.allowance_id, one.returned_minor) for one in swept if one.user_id == alice.user_id]
    assert mine == [(returned_id, 1_500)]
    assert escrow_minor(server, returned_id) == 0
    assert alice.balance_minor() == 100_000
    with server.session() as session:
        later = escrow_return.sweep_due(session, returns_at_s + 10, 100)
        assert all(one.allowance_id != returned_id for one in later), "swept once"
        allowance = session.get(OfflineAllowance, returned_id)
        assert allowance is not None and allowance.state == "swept"
        assert allowance.ended_at_s is not None and allowance.ended_at_s < returns_at_s
    assert alice.balance_minor() == 100_000
    assert alice.listed()[0]["state"] == "swept"
    assert_books_clean(server)


def test_the_sweep_command_and_the_worker_return_a_live_allowance(server: Server) -> None:
    alice = customer(server, 100_000)
    first = alice.take(20_000)["allowance_id"]
    move_returns_to_past(server, first)
    done = ok_json(server.cli_in_process("--json", "offline", "sweep"))
    assert {"allowance_id": first, "user_id": alice.user_id, "currency": "CNY",
            "returned_minor": 20_000} in done["swept"]  # fmt: skip
    assert alice.balance_minor() == 100_000
    again = ok_json(server.cli_in_process("--json", "offline", "sweep"))
    assert all(row["allowance_id"] != first for row in again["swept"])
    assert alice.balance_minor() == 100_000
    second = alice.take(4_000)["allowance_id"]  # no longer live: a new one may be taken
    move_returns_to_past(server, second)
    worker = ok_json(server.cli_in_process("--json", "worker", "--once"))
    assert worker["offline_swept"] >= 1
    assert escrow_minor(server, second) == 0
    assert alice.balance_minor() == 100_000
    assert_books_clean(server)


def test_two_sweeps_at_once_return_the_money_once(server: Server) -> None:
    alice = customer(server, 100_000)
    allowance_id = alice.take(50_000)["allowance_id"]
    with server.session() as session:
        allowance = session.get(OfflineAllowance, allowance_id)
        assert allowance is not None
        due_s = allowance.returns_at_s

    def sweep() -> int:
        with server.session() as session:
            return sum(
                one.returned_minor
                for one in escrow_return.sweep_due(session, due_s, 100)
                if one.allowance_id == allowance_id
            )

    assert sorted(all_at_once([sweep, sweep])) == [0, 50_000]
    assert alice.balance_minor() == 100_000
    assert_books_clean(server)


def test_the_list_is_the_users_own_newest_first(server: Server) -> None:
    alice, bob = customer(server), customer(server)
    first = alice.take(4_000)["allowance_id"]
    alice.hand_back(first)
    second = alice.take(10_000)["allowance_id"]
    bob.take(4_000)
    assert [item["allowance_id"] for item in alice.listed()] == [second, first]
    assert alice.listed()[1]["returned_minor"] == 4_000
    with server.session() as session:
        escrows = session.scalars(
            select(Account).where(Account.owner_kind == ESCROW, Account.owner_id == second)
        ).all()
        assert [account.balance_minor for account in escrows] == [10_000]


# -- over real HTTP -------------------------------------------------------------------------------


def test_take_list_and_hand_back_over_http(live_server: Server) -> None:
    alice = customer(live_server, 100_000)
    taken = alice.take(20_000)
    assert len(taken["certificates"]) == 4
    assert alice.listed()[0]["held_minor"] == 20_000
    reply = alice.hand_back(taken["allowance_id"], [100, 0, 0, 0])
    assert (reply["returned_minor"], reply["held_minor"]) == (19_900, 100)
    assert alice.balance_minor() == 99_900
    assert_books_clean(live_server)
