"""Code-version lifecycle (server/lifecycle.py): operators deprecate, retire and re-activate
versions with `paycode-server versions`; charges and the wallet's online calls follow.

The end-to-end tests run the real terminal client and wallet calls on SQLite and PostgreSQL,
against a fresh bank (tests.support.shop.open_bank) on the module's in-process server whose
version states are put back to the defaults before each test, and change states with the real
CLI (its main(argv) in this process, on the same database). A change reaching a running server
by its own cache TTL is watched over real HTTP on live servers (the wire of this area).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from paycode.appkit.http_client import ServerClient
from paycode.client.online import DeviceAuth
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.config import STATUSES_TTL_ENV, ServerConfig
from paycode.server.database.engine import make_engine
from paycode.server.database.models import Base, Claim, Payment, VersionState
from paycode.server.operations import lifecycle
from paycode.server.wallets.devices import parse_enroll
from paycode.shared.errors import ApiError, ConfigError, ServerRejected
from paycode.shared.versions.base import VersionStatus
from paycode.shared.versions.registry import DEFAULT_STATUS
from tests.support.in_process import reconfigure
from tests.support.servers import BACKEND_PARAMS, Server, run_cli_in_process, server_env, started
from tests.support.shop import Bank, open_bank

START_MINOR = 10_000
ACTIVE, DEPRECATED, RETIRED = VersionStatus.ACTIVE, VersionStatus.DEPRECATED, VersionStatus.RETIRED
BLOCKED_WAIT_S = 0.5
"""How long a second transition is watched to prove it waits for the first one's commit."""
PROPAGATION_SLACK_S = 2.0
STATUSES_TTL_S = 0.5
"""The servers here cache the statuses this long (ServerConfig.statuses_ttl_s), not the
production lifecycle.STATUSES_TTL_S (5 s), so that a change reaches them sooner."""


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(f"sqlite:///{tmp_path / 'states.db'}")
    Base.metadata.create_all(made)
    yield made
    made.dispose()


@pytest.fixture
def default_states(server: Server) -> Server:
    """The module's in-process server with no version state stored (every version at its
    default) and no cached one, as a fresh database has it."""
    with server.session() as session:
        session.execute(delete(VersionState))
    lifecycle.forget_cache()
    return server


@pytest.fixture
def bank(default_states: Server, monkeypatch: pytest.MonkeyPatch) -> Bank:
    """A customer with a device per version and a merchant with a terminal, on a server that
    caches the states for STATUSES_TTL_S."""
    reconfigure(monkeypatch, default_states, statuses_ttl_s=STATUSES_TTL_S)
    return open_bank(default_states, START_MINOR, merchants=1)


@pytest.fixture(scope="module", params=BACKEND_PARAMS)
def short_ttl_live_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A live server (`run` on SQLite, gunicorn on PostgreSQL) caching the states for
    STATUSES_TTL_S (the test servers' knob, PAYCODE_VERSION_STATUSES_TTL_S)."""
    extra_env = {STATUSES_TTL_ENV: str(STATUSES_TTL_S)}
    with started(request.param, "process", extra_env=extra_env) as server:
        yield server


def statuses(bind: Engine) -> dict[str, VersionStatus]:
    with Session(bind) as session:
        return lifecycle.read_statuses(session)


def transition(bind: Engine, version: str, status: VersionStatus) -> lifecycle.Transition:
    with Session(bind) as session, session.begin():
        return lifecycle.set_status(session, version, status, time.time())


def refused(bind: Engine, version: str, status: VersionStatus) -> str:
    with pytest.raises(ApiError) as caught:
        transition(bind, version, status)
    return caught.value.code


# -- the rules, in-process ---------------------------------------------------------------------


def test_defaults_until_an_operator_decides(engine: Engine) -> None:
    assert statuses(engine) == DEFAULT_STATUS
    change = transition(engine, "v1", DEPRECATED)
    assert (change.before, change.after, change.changed) == (ACTIVE, DEPRECATED, True)
    assert statuses(engine) == {"v1": DEPRECATED, "v2": ACTIVE, "v3": ACTIVE}
    again = transition(engine, "v1", DEPRECATED)
    assert not again.changed
    with Session(engine) as session:
        rows = session.scalars(select(VersionState)).all()
    assert [(row.version, row.status) for row in rows] == [("v1", "deprecated")]  # v2, v3: none


def test_refusals_leave_the_states_alone(engine: Engine) -> None:
    assert refused(engine, "v9", DEPRECATED) == "version_unknown"
    assert refused(engine, "v3", RETIRED) == "version_preferred"
    transition(engine, "v1", RETIRED)
    transition(engine, "v3", DEPRECATED)  # the preferred one may be deprecated while v2 is active
    assert refused(engine, "v2", DEPRECATED) == "last_active_version"
    assert refused(engine, "v2", RETIRED) == "last_active_version"
    assert statuses(engine) == {"v1": RETIRED, "v2": ACTIVE, "v3": DEPRECATED}
    transition(engine, "v1", ACTIVE)  # retired versions can come back
    transition(engine, "v2", RETIRED)  # now v1 is active, so v2 may go
    assert statuses(engine) == {"v1": ACTIVE, "v2": RETIRED, "v3": DEPRECATED}


def test_the_cache_is_stale_at_most_the_ttl(engine: Engine) -> None:
    lifecycle.forget_cache()
    ttl_s = lifecycle.STATUSES_TTL_S
    assert lifecycle.load_statuses(engine, 100.0)["v1"] is ACTIVE
    transition(engine, "v1", RETIRED)
    assert lifecycle.load_statuses(engine, 100.0 + ttl_s - 0.01)["v1"] is ACTIVE  # cached
    assert lifecycle.load_statuses(engine, 100.0 + ttl_s)["v1"] is RETIRED  # re-read
    transition(engine, "v1", ACTIVE)
    assert lifecycle.load_statuses(engine, 50.0)["v1"] is ACTIVE  # a clock going back re-reads


def test_a_configured_ttl_replaces_the_default(engine: Engine, tmp_path: Path) -> None:
    """PAYCODE_VERSION_STATUSES_TTL_S (test servers only) -> ServerConfig -> load_statuses."""
    base = {"PAYCODE_INSTANCE": str(tmp_path), "PAYCODE_MASTER_KEY": "A" * 43 + "="}
    assert ServerConfig.from_env(base).statuses_ttl_s is None  # production: STATUSES_TTL_S
    short = ServerConfig.from_env(base | {STATUSES_TTL_ENV: "0.25"}).statuses_ttl_s
    assert short == 0.25
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(ConfigError):
            ServerConfig.from_env(base | {STATUSES_TTL_ENV: bad})
    lifecycle.forget_cache()
    assert lifecycle.load_statuses(engine, 100.0, short)["v1"] is ACTIVE
    transition(engine, "v1", RETIRED)
    assert lifecycle.load_statuses(engine, 100.2, short)["v1"] is ACTIVE  # cached
    assert lifecycle.load_statuses(engine, 100.25, short)["v1"] is RETIRED  # re-read
    lifecycle.forget_cache()


def test_reenroll_advice_names_an_active_version() -> None:
    live = dict(DEFAULT_STATUS)
    assert lifecycle.reenroll_advice("v1", live) is None
    live["v1"] = DEPRECATED
    assert lifecycle.reenroll_advice("v1", live) == {
        "version": "v3",
        "reason": "code version v1 is deprecated",
    }
    live["v3"] = DEPRECATED  # the preferred one is being phased out too: point at v2
    assert lifecycle.reenroll_advice("v3", live) == {
        "version": "v2",
        "reason": "code version v3 is deprecated",
    }
    assert lifecycle.reenroll_advice("v9", live) == {
        "version": "v2",
        "reason": "code version v9 is retired",
    }


def test_enrollment_follows_the_live_states() -> None:
    live = {**DEFAULT_STATUS, "v1": DEPRECATED, "v2": RETIRED}
    assert parse_enroll({"version": "v1"}, live).version == "v1"  # deprecated still enrolls
    with pytest.raises(ApiError) as caught:
        parse_enroll({"version": "v2"}, live)
    assert caught.value.code == "version_retired"


def test_two_operators_cannot_leave_no_active_version(default_states: Server) -> None:
    """v3 is deprecated; one operator deprecates v1 while another deprecates v2. Without the
    transition lock both would see the other version active and both would succeed."""
    bound = default_states.engine
    transition(bound, "v3", DEPRECATED)
    second = race_second_transition(bound)
    assert second == "last_active_version"
    assert statuses(bound) == {"v1": DEPRECATED, "v2": ACTIVE, "v3": DEPRECATED}


def race_second_transition(bound: Engine) -> str:
    """Hold the first transition open, start the second, prove it waits, then commit."""
    outcome: list[str] = []

    def second() -> None:
        try:
            transition(bound, "v2", DEPRECATED)
            outcome.append("ok")
        except ApiError as error:
            outcome.append(error.code)

    with Session(bound) as session, session.begin():
        lifecycle.set_status(session, "v1", DEPRECATED, time.time())
        racer = threading.Thread(target=second)
        racer.start()
        racer.join(BLOCKED_WAIT_S)
        assert racer.is_alive() and not outcome  # waiting for our commit
    racer.join(10)
    assert not racer.is_alive()
    return outcome[0]


# -- the CLI -----------------------------------------------------------------------------------


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`paycode-server ARGS` as main(argv) in this process."""
    return run_cli_in_process(env, *args)


def ok_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["ok"] is True
    return data


def error_code(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stdout + result.stderr
    code: str = json.loads(result.stdout)["error"]["code"]
    return code


def test_versions_commands(tmp_path: Path) -> None:
    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'paycode.db'}")
    assert cli(env, "init-db").returncode == 0
    deprecated = ok_json(cli(env, "versions", "deprecate", "v1", "--json"))
    assert deprecated == {
        "ok": True,
        "version": "v1",
        "before": "active",
        "status": "deprecated",
        "changed": True,
    }
    human = cli(env, "versions", "retire", "v2")
    assert human.returncode == 0
    assert human.stdout.startswith("v2: active -> retired; its codes are refused")
    listed = ok_json(cli(env, "--json", "versions"))["versions"]
    assert [(row["version"], row["status"]) for row in listed] == [
        ("v1", "deprecated"),
        ("v2", "retired"),
        ("v3", "active"),
    ]
    assert listed[0]["changed_at_s"] > 0 and listed[2]["changed_at_s"] is None
    refusals = [
        ["versions", "retire", "v3", "--json"],
        ["versions", "deprecate", "v3", "--json"],
        ["versions", "activate", "v7", "--json"],
        ["versions", "retire", "v3"],
    ]
    preferred, last, unknown, plain = [cli(env, *args) for args in refusals]
    assert error_code(preferred) == "version_preferred"
    assert error_code(last) == "last_active_version"
    assert error_code(unknown) == "version_unknown"
    assert "error [version_preferred]" in plain.stderr and plain.returncode == 1
    assert [row["status"] for row in ok_json(cli(env, "versions", "--json"))["versions"]] == [
        "deprecated",
        "retired",
        "active",
    ]  # the refusals changed nothing
    again = ok_json(cli(env, "versions", "activate", "v2", "--json"))
    assert (again["before"], again["status"]) == ("retired", "active")


# -- end to end: charges and the wallet over HTTP -----------------------------------------------


def set_by_cli(bank: Bank, action: str, version: str) -> None:
    """What an operator types; then this process forgets its cached states, as every worker
    does within its TTL (test_a_change_reaches_a_running_server)."""
    ok_json(cli(bank.server.env, "versions", action, version, "--json"))
    lifecycle.forget_cache()


def terminal(bank: Bank) -> TerminalClient:
    return bank.till()


def code(bank: Bank, version: str, counter: int = 0) -> str:
    return bank.code(version, counter=counter)


def wallet_get(bank: Bank, version: str, path: str) -> dict[str, Any]:
    """A wallet call signed by the customer's device of `version`."""
    device_id, credential = bank.device(version)
    reply = ServerClient(bank.url).call("GET", path, signer=DeviceAuth(device_id, credential).sign)
    return reply.body


def rows(bank: Bank, model: type[Base]) -> int:
    with bank.server.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_deprecated_version_pays_and_the_wallet_is_told(bank: Bank) -> None:
    set_by_cli(bank, "deprecate", "v1")
    pos = terminal(bank)
    paid = pos.charge(code=code(bank, "v1"), amount="2.00", currency="CNY")
    assert paid["status"] == "succeeded"
    assert paid["notice"] == "code version v1 is deprecated"
    assert "notice" not in pos.charge(code=code(bank, "v2"), amount="1.00", currency="CNY")
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 300
    advice = {"version": "v3", "reason": "code version v1 is deprecated"}
    balance = wallet_get(bank, "v1", "/v1/wallet/balance")
    assert balance["reenroll"] == advice
    assert balance["accounts"][0]["balance_minor"] == START_MINOR - 300
    assert wallet_get(bank, "v1", "/v1/wallet/history?limit=5")["reenroll"] == advice
    assert "reenroll" not in wallet_get(bank, "v3", "/v1/wallet/balance")
    assert "reenroll" not in wallet_get(bank, "v2", "/v1/wallet/history")


def test_retired_version_moves_nothing_until_activated(bank: Bank) -> None:
    pos = terminal(bank)
    text = code(bank, "v1")
    claims, payments = rows(bank, Claim), rows(bank, Payment)
    set_by_cli(bank, "retire", "v1")
    with pytest.raises(ServerRejected) as caught:
        pos.charge(code=text, amount="5.00", currency="CNY")
    assert (caught.value.code, caught.value.status) == ("version_retired", 422)
    assert (rows(bank, Claim), rows(bank, Payment)) == (claims, payments)
    assert bank.balance_minor("user", bank.user_id) == START_MINOR
    assert wallet_get(bank, "v1", "/v1/wallet/balance")["reenroll"] == {
        "version": "v3",
        "reason": "code version v1 is retired",
    }
    set_by_cli(bank, "activate", "v1")
    paid = pos.charge(code=text, amount="5.00", currency="CNY")  # the same code: never claimed
    assert paid["status"] == "succeeded" and "notice" not in paid
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 500
    assert bank.ledger_sum_minor() == 0
    assert "reenroll" not in wallet_get(bank, "v1", "/v1/wallet/balance")


def test_a_change_reaches_a_running_server(short_ttl_live_server: Server) -> None:
    """No cache is forgotten by hand here: the server's own TTL brings the change (this
    module's short one; the production default is test_the_cache_is_stale_at_most_the_ttl's).
    The server is a process of its own, over real HTTP: nothing in this process is shared."""
    bank = open_bank(short_ttl_live_server, START_MINOR, merchants=1)
    assert "reenroll" not in wallet_get(bank, "v1", "/v1/wallet/balance")  # cached: active
    ok_json(cli(bank.server.env, "versions", "deprecate", "v1", "--json"))
    changed_at_s = time.monotonic()
    deadline_s = changed_at_s + STATUSES_TTL_S + PROPAGATION_SLACK_S
    seen = False
    while not seen and time.monotonic() < deadline_s:
        seen = "reenroll" in wallet_get(bank, "v1", "/v1/wallet/balance")
        time.sleep(0.05)
    assert seen, "the deprecation did not reach the running server in time"
