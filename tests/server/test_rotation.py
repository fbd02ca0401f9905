"""Master-key rotation (server/rotation.py, server/config.py): several master keys configured at
once, every sealed secret re-wrapped under the new one in resumable batches, while servers keep
charging; then the old key goes and everything still opens, verifies and pays.

The servers are apps in this process (paycode.server.testing.start_server, "in_process"), each
test on a fresh database (the tests count every sealed row); a second server on the same
database is a fresh app with its own engine and caches, as a worker just started. The
operator's procedure runs `paycode-server` as main(argv) in this process.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from paycode.server.config import ServerConfig, master_keys
from paycode.server.database.engine import make_engine
from paycode.server.database.models import Base
from paycode.server.safety import keyring
from paycode.server.safety.rotation import SEALED_COLUMNS, key_usage, rotate_master
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.errors import ApiError, ConfigError
from tests.support.servers import (
    BACKEND_PARAMS,
    postgres_database,
    run_cli_in_process,
    server_env,
    start_server,
    started,
)
from tests.support.shop import Bank, bank_devices, bank_user, open_bank

OLD, NEW = os.urandom(32), os.urandom(32)
BOTH = {"mk1": OLD, "mk2": NEW}
START_MINOR = 10_000
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def write_key(path: Path, key: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(b64(key) + "\n")
    path.chmod(mode)


# -- configuration -----------------------------------------------------------------------------


def test_keys_from_the_environment(tmp_path: Path) -> None:
    env = {"PAYCODE_MASTER_KEY_ID": "mk2", "PAYCODE_MASTER_KEYS": f"mk1:{b64(OLD)}, mk2:{b64(NEW)}"}
    assert master_keys(env, tmp_path) == (BOTH, "mk2")
    single = {"PAYCODE_MASTER_KEY_ID": "mk2", "PAYCODE_MASTER_KEY": b64(NEW)}
    assert master_keys({**single, "PAYCODE_MASTER_KEYS": f"mk1:{b64(OLD)}"}, tmp_path) == (
        BOTH,
        "mk2",
    )
    assert not (tmp_path / "master.key").exists()  # no key file is made when keys are given


def test_key_files_one_per_id(tmp_path: Path) -> None:
    write_key(tmp_path / "master-mk1.key", OLD)
    write_key(tmp_path / "master-mk2.key", NEW)
    assert master_keys({"PAYCODE_MASTER_KEY_ID": "mk2"}, tmp_path) == (BOTH, "mk2")
    assert master_keys({}, tmp_path) == (BOTH, "mk1")  # the new key opens, the old one seals


def test_the_legacy_file_is_the_current_key(tmp_path: Path) -> None:
    keys, current = master_keys({}, tmp_path)  # first start: made, 0600
    assert current == "mk1" and keys["mk1"] == base64.b64decode(
        (tmp_path / "master.key").read_text()
    )
    write_key(tmp_path / "master-mk2.key", NEW)  # rotation step 1: the new key beside it
    assert master_keys({}, tmp_path) == ({"mk1": keys["mk1"], "mk2": NEW}, "mk1")


@pytest.mark.parametrize(
    ("env", "files", "message"),
    [
        ({"PAYCODE_MASTER_KEYS": "mk1"}, {}, "ID:BASE64"),
        ({"PAYCODE_MASTER_KEYS": "bad id:AAAA"}, {}, "key id"),
        ({"PAYCODE_MASTER_KEYS": "mk1:not-base64!"}, {}, "not base64"),
        ({"PAYCODE_MASTER_KEYS": f"mk1:{b64(OLD[:16])}"}, {}, "32 bytes"),
        ({"PAYCODE_MASTER_KEY_ID": "x" * 17}, {}, "key id"),
        (  # one id, two different keys
            {"PAYCODE_MASTER_KEY": b64(NEW), "PAYCODE_MASTER_KEYS": f"mk1:{b64(OLD)}"},
            {},
            "different keys",
        ),
        ({"PAYCODE_MASTER_KEY_ID": "mk2"}, {"master-mk1.key": OLD}, "configured keys are mk1"),
        (  # the id is changed before master.key was renamed to master-mk1.key
            {"PAYCODE_MASTER_KEY_ID": "mk2"},
            {"master.key": OLD, "master-mk2.key": NEW},
            "rename master.key",
        ),
    ],
)
def test_ambiguous_or_broken_key_configuration_is_refused(
    tmp_path: Path, env: dict[str, str], files: dict[str, bytes], message: str
) -> None:
    for name, key in files.items():
        write_key(tmp_path / name, key)
    with pytest.raises(ConfigError) as caught:
        master_keys(env, tmp_path)
    assert message in caught.value.message and caught.value.code == "config_invalid"
    assert b64(OLD) not in caught.value.message and b64(NEW) not in caught.value.message


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    write_key(tmp_path / "master-mk2.key", NEW, mode=0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        master_keys({"PAYCODE_MASTER_KEY": b64(OLD)}, tmp_path)


# -- rotation while servers charge --------------------------------------------------------------


def keys_env(keys: dict[str, bytes], current: str) -> dict[str, str]:
    """The environment that configures `keys`, sealing under `current`."""
    others = ",".join(f"{key_id}:{b64(key)}" for key_id, key in keys.items() if key_id != current)
    env = {"PAYCODE_MASTER_KEY_ID": current, "PAYCODE_MASTER_KEY": b64(keys[current])}
    return env | ({"PAYCODE_MASTER_KEYS": others} if others else {})


@pytest.fixture(params=BACKEND_PARAMS)
def bank(request: pytest.FixtureRequest) -> Iterator[Bank]:
    """A server that already has the new key configured, still sealing under the old one, on
    a fresh database; alice (the bank's customer) and bob with a device per version, three
    merchants with a terminal each."""
    keyring.forget_cache()
    with started(request.param, "in_process", extra_env=keys_env(BOTH, "mk1")) as server:
        made = open_bank(server, START_MINOR, merchants=3, pinless_count_max=1000)
        bank_devices(server, bank_user(server, 0))
        yield made


def box_of(bank: Bank) -> SecretBox:
    """The bank server's own secret box: the keys its environment configures."""
    return SecretBox.from_config(ServerConfig.from_env(bank.server.env))


@contextmanager
def another_server(bank: Bank, keys: dict[str, bytes], current: str) -> Iterator[Bank]:
    """A second server on the same database, with fresh caches (a worker just started)."""
    with start_server(
        bank.server.backend,
        where="in_process",
        database_url=bank.server.database_url,
        extra_env=keys_env(keys, current),
    ) as other:
        yield dataclasses.replace(bank, server=other)


def charge(bank: Bank, version: str, amount: str = "1.00", counter: int = 0) -> dict[str, Any]:
    text = bank.code(version, counter=counter)
    reply = bank.till().charge(code=text, amount=amount, currency="CNY")
    assert reply["status"] == "succeeded", reply
    return reply


def secrets_of(bank: Bank, box: SecretBox) -> dict[tuple[str, str], bytes]:
    """(table, row id) -> plaintext of every sealed secret."""
    found: dict[tuple[str, str], bytes] = {}
    with bank.server.session() as session:
        for name, column in SEALED_COLUMNS:
            table = Base.metadata.tables[name]
            rows = session.execute(
                select(table.c.id, table.c.key_id, table.c[column]).where(
                    table.c[column].is_not(None)
                )
            ).all()
            for row_id, key_id, sealed in rows:
                found[(name, row_id)] = box.open(key_id, sealed, row_id=row_id)
    return found


def rotate(bank: Bank, box: SecretBox, **limits: int) -> Any:
    with bank.server.session() as session:
        return rotate_master(session, box, **limits)


def usage(bank: Bank) -> dict[str, dict[str, int]]:
    with bank.server.session() as session:
        return key_usage(session)


def all_under(key_id: str) -> dict[str, dict[str, int]]:
    """The bank's sealed rows, all under `key_id`: 2 users x (v1, v2) devices (v3 devices store
    only a public key), 3 terminals, 3 verifier keys, the QR signing key and the offline key that
    signs certificates; its merchants have
    no notification secret (they were made without `merchants create --notify-url`)."""
    return {
        "devices": {key_id: 4},
        "terminals": {key_id: 3},
        "server_keys": {key_id: 5},
        "merchants": {},
    }


def test_rotation_without_downtime(bank: Bank) -> None:
    before = secrets_of(bank, box_of(bank))
    assert usage(bank) == all_under("mk1")
    charge(bank, "v1")  # the running server has every secret cached now
    rotator = SecretBox(BOTH, "mk2")
    partial = rotate(bank, rotator, batch_rows=2, batches_max=1)  # as if stopped mid-way
    assert partial.rewrapped == {"devices": 2, "terminals": 2, "server_keys": 2, "merchants": 0}
    assert partial.remaining == {"devices": 2, "terminals": 1, "server_keys": 3, "merchants": 0}
    assert not partial.complete
    charge(bank, "v1", counter=1)  # the old server, cached, charges on
    with another_server(bank, BOTH, "mk2") as fresh:  # and a new one reads mixed rows
        for version in ("v1", "v2", "v3"):
            charge(fresh, version, counter=2)
    rest = rotate(bank, rotator)
    assert rest.rewrapped == partial.remaining and rest.complete
    assert usage(bank) == all_under("mk2")
    only_new = SecretBox({"mk2": NEW}, "mk2")
    assert secrets_of(bank, only_new) == before  # the same secrets, wrapped anew
    keyring.forget_cache()
    with another_server(bank, {"mk2": NEW}, "mk2") as after:  # the old key is gone
        for version in ("v1", "v2", "v3"):
            charge(after, version, amount="2.00", counter=3)
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 2 * 100 - 3 * 100 - 3 * 200
    assert bank.ledger_sum_minor() == 0
    again = rotate(bank, rotator)
    assert again.complete and not any(again.rewrapped.values())


class CrashingBox(SecretBox):
    """Fails on its `crash_at`-th seal, like a process killed mid-batch."""

    def __init__(self, keys: dict[str, bytes], current_id: str, crash_at: int) -> None:
        super().__init__(keys, current_id)
        self.crash_at, self.seals = crash_at, 0

    def seal(self, plaintext: bytes, *, row_id: str) -> tuple[str, bytes]:
        self.seals += 1
        if self.seals == self.crash_at:
            raise RuntimeError("killed")
        return super().seal(plaintext, row_id=row_id)


def test_a_crash_mid_rotation_is_finished_by_a_rerun(bank: Bank) -> None:
    before = secrets_of(bank, box_of(bank))
    with pytest.raises(RuntimeError, match="killed"):
        rotate(bank, CrashingBox(BOTH, "mk2", crash_at=4), batch_rows=2)
    # The first batch (2 devices) was committed; the second died after one row: rolled back.
    assert usage(bank)["devices"] == {"mk1": 2, "mk2": 2}
    assert usage(bank)["terminals"] == {"mk1": 3}
    assert secrets_of(bank, SecretBox(BOTH, "mk2")) == before
    done = rotate(bank, SecretBox(BOTH, "mk2"), batch_rows=2)
    assert done.complete and done.rewrapped == {
        "devices": 2,
        "terminals": 3,
        "server_keys": 5,
        "merchants": 0,
    }
    assert secrets_of(bank, SecretBox({"mk2": NEW}, "mk2")) == before


def test_rows_under_an_unconfigured_key_stop_it_before_any_change(bank: Bank) -> None:
    with pytest.raises(ApiError) as caught:
        rotate(bank, SecretBox({"mk2": NEW}, "mk2"))
    assert caught.value.code == "master_key_missing" and "mk1" in caught.value.message
    wrong_old = SecretBox({"mk1": os.urandom(32), "mk2": NEW}, "mk2")
    with pytest.raises(ApiError) as caught:
        rotate(bank, wrong_old)
    assert caught.value.code == "master_key_invalid"
    assert usage(bank) == all_under("mk1")


# -- the operator's procedure, with the CLI and key files ---------------------------------------


def cli_json(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result: subprocess.CompletedProcess[str] = run_cli_in_process(env, *args, "--json")
    assert "Traceback" not in result.stdout + result.stderr
    assert b64(OLD) not in result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, data


def ok(env: dict[str, str], *args: str) -> dict[str, Any]:
    code, data = cli_json(env, *args)
    assert code == 0, data
    return data


def failed(env: dict[str, str], *args: str) -> str:
    code, data = cli_json(env, *args)
    assert code == 1, data
    error: str = data["error"]["code"]
    return error


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotation_procedure_with_key_files(backend: str, tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    with fresh_database_url(backend, tmp_path) as url:
        env = server_env(instance, url)
        del env["PAYCODE_MASTER_KEY"]  # the default set-up: instance/master.key, id mk1
        ok(env, "init-db")
        notify_secret = base64.b64decode(ok(env, "merchants", "create", "Shop")["notify_secret"])
        secret = base64.b64decode(ok(env, "terminals", "create", "Shop")["secret"])
        old = base64.b64decode((instance / "master.key").read_text())
        write_key(instance / "master-mk2.key", NEW)  # 1. the new key beside the old one
        new_env = {**env, "PAYCODE_MASTER_KEY_ID": "mk2"}
        assert failed(new_env, "keys", "status") == "config_invalid"  # master.key's id unknown
        (instance / "master.key").rename(instance / "master-mk1.key")  # 2. name the old key
        assert ok(env, "keys", "status")["configured_key_ids"] == ["mk1", "mk2"]
        # 3. servers restart with PAYCODE_MASTER_KEY_ID=mk2; 4. re-wrap
        assert failed(new_env, "keys", "rotate-master", "--new-key-id", "mk1") == (
            "master_key_not_current"
        )
        limited = ["--batch-rows", "1", "--batches-max", "1"]
        assert failed(new_env, "keys", "rotate-master", "--new-key-id", "mk2", *limited) == (
            "rotation_incomplete"
        )
        done = ok(new_env, "keys", "rotate-master", "--new-key-id", "mk2")
        assert done["rewrapped"] == {
            "devices": 0,
            "terminals": 0,
            "server_keys": 4,
            "merchants": 0,  # the limited run above re-wrapped the only one
        }
        (instance / "master-mk1.key").unlink()  # 5. the old key goes
        status = ok(new_env, "keys", "status")
        assert status["configured_key_ids"] == ["mk2"] and status["missing_key_ids"] == []
        assert status["rows"] == {
            "devices": {},
            "terminals": {"mk2": 1},
            "server_keys": {"mk2": 5},
            "merchants": {"mk2": 1},
        }
        assert_opens_under_new_key_only(url, secret, notify_secret)
        assert old != NEW


@contextmanager
def fresh_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An SQLite file in `tmp_path`, or a fresh PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'paycode.db'}"
        return
    with postgres_database() as url:
        yield url


def assert_opens_under_new_key_only(url: str, terminal_secret: bytes, notify_secret: bytes) -> None:
    box = SecretBox({"mk2": NEW}, "mk2")
    engine = make_engine(url)
    try:
        keyring.forget_cache()
        keys, current = keyring.load_keys(engine, box)
        assert set(keys.hiding_keys) == {"v1", "v2"} and "seal_public" in current
        table = Base.metadata.tables["terminals"]
        with Session(engine) as session:
            row = session.execute(select(table.c.id, table.c.key_id, table.c.secret_sealed)).one()
        assert box.open(row.key_id, row.secret_sealed, row_id=row.id) == terminal_secret
        merchants = Base.metadata.tables["merchants"]
        with Session(engine) as session:
            found = session.execute(
                select(merchants.c.id, merchants.c.key_id, merchants.c.notify_secret_sealed)
            ).one()
        assert box.open(found.key_id, found.notify_secret_sealed, row_id=found.id) == notify_secret
    finally:
        engine.dispose()
        keyring.forget_cache()
