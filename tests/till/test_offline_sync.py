"""The till's sync (docs/offline.md section 5) against a tiny local HTTP server standing in for
the server's offline endpoints (tests/support/offline_server.py, which checks the terminal
signature, the Idempotency-Key and the hash chain as the server will): seq order, answers
stored, a record without an answer stops the run, the back-off file, 409 and other 4xx, and
the exit statuses of `paycode-pos sync`."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paycode.merchant_pos import cli, offline_keys, settings, terminal_client
from paycode.merchant_pos.offline_commands import TAIL_RECORDS_MAX, after_online_sale
from paycode.merchant_pos.offline_log import open_log
from paycode.merchant_pos.offline_records import Acceptance
from paycode.merchant_pos.offline_sale import OfflineRequest, decide
from paycode.merchant_pos.offline_sync import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    Backoff,
    load_backoff,
    sync,
    sync_path,
)
from paycode.merchant_pos.terminal_client import TerminalClient
from tests.support.offline_server import KEY_ID, SECRET, OfflineServer, offline_server, problem
from tests.support.offline_till import NOW_S, Allowance, till_keys
from tests.support.servers import free_port

BODY_KEYS = {"id", "seq", "prev", "code", "amount_minor", "currency", "merchant_order_id", "at_s"}


@pytest.fixture
def server() -> Iterator[OfflineServer]:
    with offline_server() as running:
        yield running


def _client(url: str) -> TerminalClient:
    return TerminalClient(url, KEY_ID, SECRET, timeout_s=5, sleep=lambda _s: None)


def _sell(home: Path, count: int) -> list[Acceptance]:
    """`count` offline sales by different customers, decided and logged as a till does."""
    keys = till_keys()
    sold = []
    with open_log(home) as log:
        for number in range(count):
            code = Allowance(f"customer-{number}").code()
            request = OfflineRequest(code, 1000 + number, "CNY", f"pos-{number}", NOW_S, NOW_S)
            decision = decide(request, keys, log)
            assert isinstance(decision, Acceptance)
            sold.append(decision)
    return sold


def _run(home: Path, url: str, now_s: float = NOW_S, **options: Any) -> Any:
    with open_log(home) as log:
        return sync(_client(url), log, home, now_s=now_s, **options)


def _unsynced(home: Path) -> list[str]:
    with open_log(home) as log:
        return [a.id for a in log.unsynced()]


def test_every_record_goes_in_seq_order_with_its_id_as_key(
    server: OfflineServer, tmp_path: Path
) -> None:
    sold = _sell(tmp_path, 3)
    outcome = _run(tmp_path, server.url)
    assert outcome.exit_status == 0 and outcome.left == 0
    assert server.accepted_ids() == [a.id for a in sold]
    for (_method, _path, headers, body), record in zip(server.requests, sold, strict=True):
        assert set(body) == BODY_KEYS and headers["idempotency-key"] == record.id
        assert (body["seq"], body["prev"], body["merchant_order_id"]) == (
            record.seq, record.prev, record.order,
        )  # fmt: skip
    assert [s.payment_id for s in outcome.settled] == ["pay_0001", "pay_0002", "pay_0003"]
    with open_log(tmp_path) as log:
        assert not log.unsynced()
        assert [log.synced(a.id).result for a in sold] == ["paid"] * 3  # type: ignore[union-attr]


def test_a_record_without_an_answer_stops_the_run_and_backs_off(
    server: OfflineServer, tmp_path: Path
) -> None:
    sold = _sell(tmp_path, 3)
    server.results = {}
    first = _run(tmp_path, server.url, records_max=1)
    assert first.exit_status == 6 and first.left == 2  # records_max stops early too
    server.scripted = [problem(503, "database_busy")] * 4  # every retry of record 2
    failed = _run(tmp_path, server.url)
    assert failed.exit_status == 6 and failed.stopped_at == sold[1] and failed.left == 2
    assert server.accepted_ids() == [sold[0].id] + [sold[1].id] * 4  # record 3 never sent
    assert failed.next_try_at_s == NOW_S + BACKOFF_FIRST_S
    assert load_backoff(tmp_path) == Backoff(1, NOW_S + BACKOFF_FIRST_S)
    assert sync_path(tmp_path).stat().st_mode & 0o777 == 0o600

    sent = len(server.requests)
    waiting = _run(tmp_path, server.url, now_s=NOW_S + 29)
    assert waiting.exit_status == 6 and len(server.requests) == sent  # backing off: no request
    server.scripted = [problem(503, "database_busy")] * 4
    again = _run(tmp_path, server.url, now_s=NOW_S + 30)
    assert again.next_try_at_s == NOW_S + 30 + 2 * BACKOFF_FIRST_S
    for failures in range(2, 12):
        backoff = Backoff(failures, 0).after_failure(NOW_S)
        assert backoff.next_try_at_s - NOW_S <= BACKOFF_MAX_S
    assert Backoff(10, 0).after_failure(NOW_S).next_try_at_s == NOW_S + BACKOFF_MAX_S

    done = _run(tmp_path, server.url, now_s=NOW_S + 31, force=True)
    assert done.exit_status == 0 and _unsynced(tmp_path) == []
    assert [s.record.id for s in done.settled] == [sold[1].id, sold[2].id]
    assert load_backoff(tmp_path).failures == 0


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (problem(409, "idempotency_in_progress"), "idempotency_in_progress"),
        ((409, {"code": "offline_out_of_order", "expected_seq": 7}), "offline_out_of_order"),
        (problem(422, "code_invalid"), "code_invalid"),
        (problem(401, "unauthorized"), "unauthorized"),
    ],
)
def test_a_refused_request_leaves_its_record_unsynced_and_stops(
    server: OfflineServer, tmp_path: Path, reply: Any, code: str
) -> None:
    """Nothing the server refused is marked synced: it booked nothing and took no seq, so
    skipping it would break the chain for every later record (offline_sync's docstring)."""
    sold = _sell(tmp_path, 2)
    server.scripted = [reply]
    outcome = _run(tmp_path, server.url)
    assert outcome.exit_status == 6 and outcome.code == code and outcome.stopped_at == sold[0]
    assert server.accepted_ids() == [sold[0].id]  # a 4xx is not retried within the run
    assert _unsynced(tmp_path) == [a.id for a in sold]
    assert _run(tmp_path, server.url, force=True).exit_status == 0  # the next run sends it


def test_short_refused_and_duplicate_results_are_final_and_exit_5(
    server: OfflineServer, tmp_path: Path
) -> None:
    sold = _sell(tmp_path, 4)
    server.results = {2: ("paid_short", 400), 3: ("refused_invalid", 0), 4: ("duplicate", 0)}
    outcome = _run(tmp_path, server.url)
    assert outcome.exit_status == 5 and outcome.left == 0
    assert [s.synced.result for s in outcome.short] == ["paid_short", "refused_invalid",
                                                         "duplicate"]  # fmt: skip
    assert outcome.short[0].synced.loss_minor == sold[1].amount_minor - 400
    assert _run(tmp_path, server.url).exit_status == 0  # nothing left to forward


def test_an_answer_that_cannot_be_stored_stops_the_run(
    server: OfflineServer, tmp_path: Path
) -> None:
    _sell(tmp_path, 1)
    server.scripted = [(201, {"result": "paid", "paid_minor": 1, "loss_minor": 0})]
    outcome = _run(tmp_path, server.url)
    assert outcome.exit_status == 6 and "cannot be stored" in outcome.why
    assert len(_unsynced(tmp_path)) == 1


def test_no_server_is_exit_6(tmp_path: Path) -> None:
    _sell(tmp_path, 1)
    outcome = _run(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert outcome.exit_status == 6 and outcome.code == "server_unreachable"


# -- the commands ------------------------------------------------------------------------------


def _configure(home: Path, url: str) -> None:
    settings.save(home, settings.PosSettings(url, KEY_ID, SECRET, "CNY"))


def _pos(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, Any]:
    status = cli.main(["--home", str(home), "--json", *args])
    out = capsys.readouterr().out
    return status, json.loads(out)


def test_sync_command_exits_0_5_6_and_refreshes_the_keys(
    server: OfflineServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(terminal_client, "BACKOFF_FIRST_S", 0.0)  # 4 busy answers, no waits
    _configure(tmp_path, server.url)
    _sell(tmp_path, 2)
    server.scripted = [problem(503, "database_busy")] * 4
    status, said = _pos(capsys, tmp_path, "sync")
    assert status == 6 and said["left"] == 2 and said["code"] == "database_busy"
    assert offline_keys.load(tmp_path) is None  # no keys fetched while records wait
    status, said = _pos(capsys, tmp_path, "sync")
    assert status == 6 and said["forwarded"] == 0  # backing off
    server.results = {2: ("paid_short", 1)}
    status, said = _pos(capsys, tmp_path, "sync", "--force")
    assert status == 5 and said["not_in_full"] == 1 and said["left"] == 0
    assert [r["result"] for r in said["results"]] == ["paid", "paid_short"]
    keys = offline_keys.load(tmp_path)
    assert keys is not None and keys.merchant_id == "mer_noodle_bar"
    status, said = _pos(capsys, tmp_path, "sync")
    assert status == 0 and said["forwarded"] == 0
    status, said = _pos(capsys, tmp_path, "offline", "status")
    assert status == 0 and said["unsynced"] == [] and said["keys"]["keys"] == 1


def test_configure_fetches_the_offline_keys_and_tolerates_an_older_server(
    server: OfflineServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    secret = base64.b64encode(SECRET).decode() + "\n"
    args = ["configure", "--server", server.url, "--key-id", KEY_ID, "--secret-stdin"]
    monkeypatch.setattr("sys.stdin", io.StringIO(secret))
    status, said = _pos(capsys, tmp_path / "new", *args)
    assert status == 0 and said["offline"]["ready"] is True
    assert offline_keys.load(tmp_path / "new") is not None
    server.keys_reply = problem(404, "not_found")
    monkeypatch.setattr("sys.stdin", io.StringIO(secret))
    status, said = _pos(capsys, tmp_path / "old", *args)
    assert status == 0 and said["offline"] is None and said["checked"] is True
    assert offline_keys.load(tmp_path / "old") is None


def test_a_log_all_synced_and_older_than_any_certificate_rotates_and_continues_its_chain(
    server: OfflineServer, tmp_path: Path
) -> None:
    sold = _sell(tmp_path, 2)
    assert _run(tmp_path, server.url).exit_status == 0
    assert (tmp_path / "offline" / "acceptances.log").exists()  # too young to rotate
    _run(tmp_path, server.url, now_s=NOW_S + 259_200)
    assert not (tmp_path / "offline" / "acceptances.log").exists()
    assert (tmp_path / "offline" / f"acceptances.{sold[-1].seq}.log").exists()
    later = NOW_S + 300_000
    keys = till_keys(fetched_at_s=later, accept_until_s=int(later) + 9)
    customer = Allowance("late", not_before_s=int(later) - 60, expiry_s=int(later) + 3600)
    with open_log(tmp_path) as log:
        request = OfflineRequest(customer.code(at_s=later), 500, "CNY", "pos-late", later, later)
        record = decide(request, keys, log)
        assert isinstance(record, Acceptance) and record.seq == 3
    assert _run(tmp_path, server.url, now_s=later).exit_status == 0  # the server's chain agrees
    assert server.last_seq == 3


def test_after_an_online_sale_a_few_records_go_and_old_keys_are_refreshed(
    server: OfflineServer, tmp_path: Path
) -> None:

    _sell(tmp_path, TAIL_RECORDS_MAX + 2)
    offline_keys.save(tmp_path, till_keys(fetched_at_s=NOW_S))  # years old by the test's clock
    (tmp_path / "offline" / "line.json").write_text('{"down_at_s": 0, "v": 1}')
    after_online_sale(_client(server.url), tmp_path)
    assert len(server.accepted_ids()) == TAIL_RECORDS_MAX
    assert len(_unsynced(tmp_path)) == 2
    refreshed = offline_keys.load(tmp_path)
    assert refreshed is not None and refreshed.fetched_at_s > NOW_S
    assert not (tmp_path / "offline" / "line.json").exists()


def test_after_an_online_sale_nothing_is_asked_of_a_till_that_never_went_offline(
    server: OfflineServer, tmp_path: Path
) -> None:

    after_online_sale(_client(server.url), tmp_path)
    assert server.requests == [] and not (tmp_path / "offline").exists()
