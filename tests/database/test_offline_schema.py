"""The offline tables (docs/offline.md §6.2): the migrations build what the models declare, and
the database itself refuses what must never happen (an escrow below zero, one code paid twice
at one merchant, an acceptance that does not add up), on SQLite and PostgreSQL alike.
Also the offline keys (§2.3, §4.1): made at init-db, published before they sign, retired only
when nothing they signed can still settle."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.config import ServerConfig
from paycode.server.database.models import Account, Base
from paycode.server.database.offline_models import (
    ESCROW,
    OfflineAcceptance,
    OfflineAllowance,
    OfflineCertificate,
)
from paycode.server.safety import offline_keys
from paycode.server.safety.secretbox import SecretBox
from paycode.server.testing import Server
from paycode.shared.errors import ApiError
from paycode.shared.offline import key_id
from tests.support.shop import new_merchant, new_user

OFFLINE_TABLES = {
    "offline_allowances",
    "offline_certificates",
    "offline_acceptances",
    "offline_terminals",
}


def _acceptance(**fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "terminal_id": "term_1",
        "id": "acc_0000000000000001",
        "merchant_id": "mch_1",
        "seq": 1,
        "cert_id": "ab" * 16,
        "counter": 0,
        "amount_minor": 1000,
        "currency": "CNY",
        "at_s": 1.0,
        "arrived_at_s": 2.0,
        "result": "paid",
        "paid_minor": 1000,
        "loss_minor": 0,
    }
    row.update(fields)
    return row


def _refused(engine: Engine, statement: object) -> bool:
    with Session(engine) as session:
        try:
            session.execute(statement)  # type: ignore[call-overload]
            session.commit()
        except IntegrityError:
            return True
    return False


def test_one_code_is_paid_once_per_merchant_but_a_duplicate_is_recorded(migrated: Engine) -> None:
    table = OfflineAcceptance.__table__
    with Session(migrated) as session:
        session.execute(insert(table).values(**_acceptance()))
        session.commit()
    second_till = _acceptance(terminal_id="term_2", seq=1)
    assert _refused(migrated, insert(table).values(**second_till))
    duplicate = {**second_till, "result": "duplicate", "paid_minor": 0, "loss_minor": 0}
    assert not _refused(migrated, insert(table).values(**duplicate))
    other_merchant = _acceptance(terminal_id="term_3", merchant_id="mch_2")
    assert not _refused(migrated, insert(table).values(**other_merchant))


def test_an_acceptance_must_add_up_and_a_till_sequence_is_unique(migrated: Engine) -> None:
    table = OfflineAcceptance.__table__
    short = _acceptance(id="acc_0000000000000002", seq=2, counter=1, paid_minor=600, loss_minor=0)
    assert _refused(migrated, insert(table).values(**short))
    assert _refused(migrated, insert(table).values(**_acceptance(result="lost")))
    with Session(migrated) as session:
        session.execute(insert(table).values(**_acceptance()))
        session.commit()
    same_seq = _acceptance(id="acc_0000000000000003", counter=2)
    assert _refused(migrated, insert(table).values(**same_seq))


def test_an_escrow_account_cannot_go_below_zero(migrated: Engine) -> None:
    with Session(migrated) as session:
        session.add(Account(owner_kind=ESCROW, owner_id="alw_1", currency="CNY", balance_minor=5))
        session.commit()
    below = (
        update(Account)
        .where(Account.owner_kind == ESCROW)
        .values(balance_minor=Account.balance_minor - 6)
    )
    assert _refused(migrated, below)


def test_an_allowance_state_is_one_of_three(migrated: Engine) -> None:
    with Session(migrated) as session:
        session.execute(
            insert(Base.metadata.tables["users"]).values(
                id="usr_1", name="u", password_hash="x", created_at_s=1.0
            )
        )
        session.commit()
    row = {
        "id": "alw_1",
        "user_id": "usr_1",
        "device_id": "dev_1",
        "currency": "CNY",
        "amount_minor": 4000,
        "created_at_s": 1.0,
        "expires_at_s": 2.0,
        "returns_at_s": 3.0,
    }
    table = OfflineAllowance.__table__
    assert _refused(migrated, insert(table).values(**row, state="spent"))
    assert not _refused(migrated, insert(table).values(**row, state="live"))


# -- offline keys ------------------------------------------------------------------------


def _box(server: Server) -> SecretBox:
    return SecretBox.from_config(ServerConfig.from_env(server.env))


def test_init_db_makes_one_offline_key_that_signs_at_once(server: Server) -> None:
    offline_keys.forget_cache()
    with server.session() as session:
        keys = offline_keys.load_offline_keys(
            session, _box(server), now_s=time.time(), publish_s=172_800
        )
    assert keys.live and keys.signing.key_id == key_id(keys.signing.public_key)
    assert keys.status(keys.signing) == "signing"


def test_a_rotated_key_is_published_as_next_before_it_signs(server: Server) -> None:
    box, now_s, publish_s = _box(server), time.time(), 172_800
    with server.session() as session:
        before = offline_keys.load_offline_keys(session, box, now_s=now_s, publish_s=publish_s)
        new_id = offline_keys.add_key(session, box, now_s)
    with server.session() as session:
        keys = offline_keys.load_offline_keys(session, box, now_s=now_s, publish_s=publish_s)
        later = offline_keys.load_offline_keys(
            session, box, now_s=now_s + publish_s + 1, publish_s=publish_s
        )
    new = keys.by_id[bytes.fromhex(new_id)]
    assert keys.status(new) == "next"
    assert keys.signing.key_id == before.signing.key_id
    assert later.signing.key_id == new.key_id
    assert later.status(later.by_id[before.signing.key_id]) == "old"
    published = {item["key_id"]: item["status"] for item in keys.public_json(accept_until_s=1)}
    assert published[new_id] == "next"


def test_a_key_whose_certificates_can_settle_is_retired_only_by_force(server: Server) -> None:
    box, now_s = _box(server), time.time()
    user = new_user(server, "offline-key")
    new_merchant(server, "OfflineKeyShop")
    with server.session() as session:
        keys = offline_keys.load_offline_keys(session, box, now_s=now_s, publish_s=0)
        old_id = keys.signing.key_id.hex()
        user_id = session.scalar(select(Base.metadata.tables["users"].c.id).filter_by(name=user))
        session.add(
            OfflineAllowance(
                id="alw_retire_test_1",
                user_id=user_id,
                device_id="dev_x",
                currency="CNY",
                amount_minor=4000,
                state="live",
                created_at_s=now_s,
                expires_at_s=now_s + 3600,
                returns_at_s=now_s + 7200,
            )
        )
        session.flush()
        session.add(
            OfflineCertificate(
                cert_id="cd" * 16,
                allowance_id="alw_retire_test_1",
                server_key_id=old_id,
                body=b"\x01" * 137,
                offline_pk=b"\x02" * 32,
                total_cap_minor=1000,
                count_max=16,
                expires_at_s=now_s + 3600,
            )
        )
        offline_keys.add_key(session, box, now_s - 1)
    with server.session() as session:
        with pytest.raises(ApiError, match="can settle until"):
            offline_keys.retire_key(session, box, old_id, now_s=now_s, grace_s=600, force=False)
        offline_keys.retire_key(session, box, old_id, now_s=now_s, grace_s=600, force=True)
    offline_keys.forget_cache()
    with server.session() as session:
        keys = offline_keys.load_offline_keys(session, box, now_s=now_s, publish_s=0)
        assert bytes.fromhex(old_id) not in keys.by_id
        for other in keys.live[1:]:
            offline_keys.retire_key(
                session, box, other.key_id.hex(), now_s=now_s, grace_s=600, force=True
            )
    with server.session() as session, pytest.raises(ApiError, match="last live offline key"):
        offline_keys.retire_key(
            session, box, keys.signing.key_id.hex(), now_s=now_s, grace_s=600, force=True
        )
