"""The till's durable offline log (docs/offline.md 4.3) on real files: the chain, a torn last
line, a damaged middle one, the lock between processes, the interrupted sale, fsync before an
append returns, and a writer killed with SIGKILL at a random moment."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from paycode.merchant_pos import offline_log
from paycode.merchant_pos.offline_log import (
    CertificateUse,
    InterruptedSale,
    OfflineLogDamaged,
    OfflineRecordInvalid,
    open_log,
)
from paycode.merchant_pos.offline_records import GENESIS_HASH, Acceptance, encode

ROOT = Path(__file__).resolve().parents[2]
CERT = "0123456789abcdef0123456789abcdef"
CODE = "hQVDUFYwMWGB608J8FBBWUNPREUE" + "A" * 300


def _sale(number: int, **changes: Any) -> dict[str, Any]:
    sale: dict[str, Any] = {
        "order": f"pos-{number}", "cert": CERT, "counter": number % 200,
        "code": CODE[:-4] + f"{number:04d}", "amount_minor": 1250, "currency": "CNY",
        "at_s": 1763888461 + number,
    }  # fmt: skip
    return sale | changes


def _log_path(home: Path) -> Path:
    return home / "offline" / "acceptances.log"


def _fill(home: Path, count: int) -> list[Acceptance]:
    with open_log(home) as log:
        return [log.accept(**_sale(number)) for number in range(1, count + 1)]


def _child_env() -> dict[str, str]:
    """The child imports this checkout's till, whatever is installed."""
    folders = [str(ROOT / part) for part in ("shared", "appkit", "merchant_pos")]
    inherited = os.environ.get("PYTHONPATH", "")
    return os.environ | {"PYTHONPATH": os.pathsep.join([*folders, inherited])}


def _child(script: str, home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_child_env(),
    )


def test_append_and_read_back_in_canonical_chained_lines(tmp_path: Path) -> None:
    written = _fill(tmp_path, 3)
    with open_log(tmp_path) as log:
        log.mark_synced(written[0].id, result="paid", paid_minor=1250, loss_minor=0)
    lines = _log_path(tmp_path).read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert (
        lines[0] == json.dumps(written[0].fields(), separators=(",", ":"), sort_keys=True).encode()
    )
    assert json.loads(lines[3]) == {
        "id": written[0].id, "kind": "synced", "loss_minor": 0, "paid_minor": 1250,
        "result": "paid", "v": 1,
    }  # fmt: skip
    assert [a.prev for a in written] == [
        GENESIS_HASH,
        hashlib.sha256(lines[0]).hexdigest(),
        hashlib.sha256(lines[1]).hexdigest(),
    ]
    assert stat.S_IMODE(_log_path(tmp_path).stat().st_mode) == 0o600
    with open_log(tmp_path) as log:
        assert log.truncated_bytes == 0
        assert (log.last_seq, log.last_hash) == (3, hashlib.sha256(lines[2]).hexdigest())
        assert log.acceptance(written[1].id) == written[1]
        assert log.by_order("pos-3") == written[2]
        assert log.by_order("pos-9") is None
        assert log.unsynced() == written[1:]
        synced = log.synced(written[0].id)
        assert synced is not None and synced.result == "paid"
        assert log.has_code(written[2].code) and not log.has_code(CODE)
        assert log.has_counter(CERT, 2) and not log.has_counter(CERT, 7)
        assert log.certificate_use(CERT) == CertificateUse(3 * 1250, 3, 1763888464)
        assert log.accept(**_sale(4)).seq == 4


def test_an_edited_middle_record_breaks_the_chain(tmp_path: Path) -> None:
    _fill(tmp_path, 3)
    path = _log_path(tmp_path)
    lines = path.read_bytes().split(b"\n")
    edited = json.loads(lines[0]) | {"amount_minor": 125}  # still canonical, chain now broken
    lines[0] = json.dumps(edited, separators=(",", ":"), sort_keys=True).encode()
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(OfflineLogDamaged, match="line 2") as refused:
        open_log(tmp_path).__enter__()
    assert refused.value.code == "offline_log_damaged"


def test_a_torn_last_line_is_cut_and_the_log_goes_on(tmp_path: Path) -> None:
    written = _fill(tmp_path, 2)
    path = _log_path(tmp_path)
    whole = path.read_bytes()
    with open_log(tmp_path) as log:
        third = encode(log.accept(**_sale(3)).fields())
    path.write_bytes(whole + third[: len(third) // 2])  # the crash hit mid-write
    with open_log(tmp_path) as log:
        assert log.truncated_bytes == len(third) // 2
        assert path.read_bytes() == whole
        assert log.unsynced() == written
        again = log.accept(**_sale(3))
        second_line = whole.split(b"\n")[1]
        assert (again.seq, again.prev) == (3, hashlib.sha256(second_line).hexdigest())
    with open_log(tmp_path) as log:
        assert log.truncated_bytes == 0 and log.last_seq == 3


def test_a_whole_last_line_that_does_not_follow_is_a_torn_write(tmp_path: Path) -> None:
    _fill(tmp_path, 2)
    path = _log_path(tmp_path)
    whole = path.read_bytes()
    stray = json.loads(whole.split(b"\n")[1]) | {"seq": 9, "id": "acc_00000000000000ff"}
    path.write_bytes(whole + encode(stray) + b"\n")
    with open_log(tmp_path) as log:
        assert log.last_seq == 2 and log.truncated_bytes > 0
    assert path.read_bytes() == whole


@pytest.mark.parametrize(
    "bad_line", [b"not json", b"", b'{"kind":"accept"}', b'{"v": 1, "kind": "synced"}']
)
def test_a_bad_line_before_the_last_refuses_and_changes_nothing(
    tmp_path: Path, bad_line: bytes
) -> None:
    _fill(tmp_path, 3)
    path = _log_path(tmp_path)
    lines = path.read_bytes().split(b"\n")
    damaged = b"\n".join([lines[0], bad_line, *lines[1:]])
    path.write_bytes(damaged)
    with pytest.raises(OfflineLogDamaged, match="line 2"):
        open_log(tmp_path).__enter__()
    assert path.read_bytes() == damaged


def test_a_file_longer_than_the_bound_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(tmp_path, 4)
    monkeypatch.setattr(offline_log, "RECORDS_MAX", 3)
    with pytest.raises(OfflineLogDamaged, match="rotate"):
        open_log(tmp_path).__enter__()


@pytest.mark.parametrize(
    "changes",
    [
        {"amount_minor": 12.5},
        {"amount_minor": 0},
        {"amount_minor": True},
        {"cert": "ABC"},
        {"counter": 255},
        {"currency": "cny"},
        {"order": ""},
        {"order": "x" * 65},
        {"code": "has space"},
        {"acceptance_id": "acc_1"},
    ],
)
def test_a_record_that_would_not_read_back_is_not_appended(
    tmp_path: Path, changes: dict[str, Any]
) -> None:
    _fill(tmp_path, 1)
    before = _log_path(tmp_path).read_bytes()
    with open_log(tmp_path) as log, pytest.raises(OfflineRecordInvalid):
        log.accept(**_sale(2, **changes))
    assert _log_path(tmp_path).read_bytes() == before


def test_repeats_and_unknown_synced_records_are_refused(tmp_path: Path) -> None:
    (first,) = _fill(tmp_path, 1)
    with open_log(tmp_path) as log:
        for repeat in ({"order": "pos-1"}, {"counter": 1}, {"acceptance_id": first.id}):
            with pytest.raises(OfflineRecordInvalid):
                log.accept(**_sale(2, **repeat))
        with pytest.raises(OfflineRecordInvalid):
            log.mark_synced("acc_0000000000000000", result="paid", paid_minor=0, loss_minor=0)
        with pytest.raises(OfflineRecordInvalid):
            log.mark_synced(first.id, result="paid", paid_minor=1000, loss_minor=0)
        log.mark_synced(first.id, result="paid_short", paid_minor=1000, loss_minor=250)
        with pytest.raises(OfflineRecordInvalid):
            log.mark_synced(first.id, result="paid", paid_minor=1250, loss_minor=0)
        assert log.unsynced() == []


def test_every_write_is_fsynced_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_write, real_fsync = os.write, os.fsync

    def write(fd: int, data: bytes) -> int:
        events.append("write")
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    with open_log(tmp_path) as log:
        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)
        first = log.accept(**_sale(1))
        events.append("returned")
        log.accept(**_sale(2))
        events.append("returned")
        log.mark_synced(first.id, result="paid", paid_minor=1250, loss_minor=0)
        events.append("returned")
        log.begin_sale("pos-3")  # the marker's bytes, then its name in the folder
        events.append("returned")
        log.end_sale()
        events.append("returned")
    assert events == [
        *("write", "fsync file", "fsync folder", "returned"),
        *("write", "fsync file", "returned"),
        *("write", "fsync file", "returned"),
        *("fsync file", "fsync folder", "returned"),
        *("fsync folder", "returned"),
    ]


HOLDER = """
import sys
from pathlib import Path
from paycode.merchant_pos.offline_log import open_log
with open_log(Path(sys.argv[1])) as log:
    print("holding", flush=True)
    sys.stdin.readline()
    print(log.accept(order="pos-child", cert="f" * 32, counter=0, code="CHILD", amount_minor=5,
                     currency="CNY", at_s=1).id, flush=True)
"""


def test_a_second_writer_waits_for_the_lock(tmp_path: Path) -> None:
    child = _child(HOLDER, tmp_path)
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "holding\n"
        seen: list[Acceptance | None] = []

        def sell() -> None:
            with open_log(tmp_path) as log:
                seen.append(log.by_order("pos-child"))
                log.accept(**_sale(1))

        waiter = threading.Thread(target=sell)
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive() and not seen  # blocked while the child holds the lock
        child.stdin.write("go\n")
        child.stdin.flush()
        child_id = child.stdout.readline().strip()
        waiter.join(timeout=10)
        assert not waiter.is_alive()
    finally:
        child.kill()
        child.wait(timeout=10)
    assert seen[0] is not None and seen[0].id == child_id
    with open_log(tmp_path) as log:
        assert [a.order for a in log.unsynced()] == ["pos-child", "pos-1"]


CRASHER = """
import os, signal, sys
from pathlib import Path
from paycode.merchant_pos.offline_log import open_log
with open_log(Path(sys.argv[1])) as log:
    log.begin_sale(sys.argv[2])
    if sys.argv[3] == "accept":
        log.accept(order=sys.argv[2], cert="e" * 32, counter=1, code="C", amount_minor=9,
                   currency="CNY", at_s=1)
    os.kill(os.getpid(), signal.SIGKILL)  # between the fsync and the screen
"""


@pytest.mark.parametrize("step", ["accept", "decide"])
def test_a_sale_interrupted_by_a_crash_is_reported_at_the_next_start(
    tmp_path: Path, step: str
) -> None:
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHER, str(tmp_path), "pos-42", step],
        env=_child_env(),
        check=False,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL
    pending = tmp_path / "offline" / "sale.pending"
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600
    with open_log(tmp_path) as log:
        found = log.interrupted_sale()
        assert found == InterruptedSale("pos-42", log.by_order("pos-42"))
        assert (found.acceptance is not None) == (step == "accept")
        log.end_sale()
        assert log.interrupted_sale() is None
    assert not pending.exists()
    with open_log(tmp_path) as log:
        assert log.interrupted_sale() is None
        log.begin_sale("pos-43")
        log.end_sale()


def test_a_damaged_pending_marker_refuses(tmp_path: Path) -> None:
    (tmp_path / "offline").mkdir()
    (tmp_path / "offline" / "sale.pending").write_bytes(b'{"order":""')
    with pytest.raises(OfflineLogDamaged):
        open_log(tmp_path).__enter__()


APPENDER = """
import sys
from pathlib import Path
from paycode.merchant_pos.offline_log import open_log
with open_log(Path(sys.argv[1])) as log:
    start = log.last_seq
    for number in range(start + 1, start + 5001):
        done = log.accept(order=f"pos-{number}", cert=f"{number // 200:032x}",
                          counter=number % 200, code="K" * 300 + str(number),
                          amount_minor=100 + number, currency="CNY", at_s=number)
        print(done.id, flush=True)
"""


def test_every_acknowledged_record_survives_sigkill_at_a_random_moment(tmp_path: Path) -> None:
    randomness = random.Random()
    acknowledged: list[str] = []
    for _ in range(4):
        child = _child(APPENDER, tmp_path)
        assert child.stdout is not None
        try:
            for _ in range(randomness.randint(1, 60)):
                acknowledged.append(child.stdout.readline().strip())
            if randomness.random() < 0.8:  # else at once, between two lines
                threading.Event().wait(randomness.uniform(0, 0.004))
        finally:
            child.send_signal(signal.SIGKILL)
            rest = child.stdout.read()  # not communicate(): it skips what readline buffered
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        acknowledged.extend(rest.split())
        with open_log(tmp_path) as log:  # opens cleanly: at most a torn tail was cut
            logged = [a.id for a in log.unsynced()]
            assert acknowledged == logged[: len(acknowledged)]
            assert len(logged) - len(acknowledged) <= 1  # written, killed before printing
            acknowledged = logged  # that one was durable: the next child continues after it


def test_a_synced_expired_log_rotates_and_the_next_one_continues_its_chain(
    tmp_path: Path,
) -> None:
    written = _fill(tmp_path, 3)
    newest_s = written[-1].at_s
    later_s = newest_s + offline_log.LIFETIME_MAX_S
    with open_log(tmp_path) as log:
        for acceptance in written[:2]:
            log.mark_synced(acceptance.id, result="paid", paid_minor=1250, loss_minor=0)
        assert log.rotate(now_s=later_s) is None  # one is not synced yet
        log.mark_synced(written[2].id, result="unpaid", paid_minor=0, loss_minor=1250)
        assert log.rotate(now_s=later_s - 1) is None  # its certificate may still be live
        last_line = _log_path(tmp_path).read_bytes().split(b"\n")[2]
        rotated = log.rotate(now_s=later_s)
    assert rotated == tmp_path / "offline" / "acceptances.3.log"
    assert not _log_path(tmp_path).exists()
    with open_log(tmp_path) as log:
        assert (log.last_seq, log.last_hash) == (3, hashlib.sha256(last_line).hexdigest())
        assert log.by_order("pos-1") is None and log.unsynced() == []
        fourth = log.accept(**_sale(4))
    assert (fourth.seq, fourth.prev) == (4, hashlib.sha256(last_line).hexdigest())
    with open_log(tmp_path) as log:
        assert [a.seq for a in log.unsynced()] == [4]


def test_pruning_keeps_the_newest_rotated_log_whatever_its_age(tmp_path: Path) -> None:
    folder = tmp_path / "offline"
    for number in range(1, 4):
        with open_log(tmp_path) as log:
            sale = log.accept(**_sale(number))
            log.mark_synced(sale.id, result="paid", paid_minor=1250, loss_minor=0)
            assert log.rotate(now_s=sale.at_s + offline_log.LIFETIME_MAX_S) is not None
    names = sorted(path.name for path in folder.glob("acceptances.*.log"))
    assert names == ["acceptances.1.log", "acceptances.2.log", "acceptances.3.log"]
    now_s = int((folder / "acceptances.3.log").stat().st_mtime) + offline_log.ROTATED_KEEP_S
    with open_log(tmp_path) as log:
        assert log.prune(now_s=now_s - 10) == []
        gone = log.prune(now_s=now_s + 10)
        assert sorted(path.name for path in gone) == names[:2]
        assert log.last_seq == 3
    assert [p.name for p in folder.glob("acceptances.*.log")] == ["acceptances.3.log"]


def test_a_rotated_log_that_does_not_end_at_its_name_refuses(tmp_path: Path) -> None:
    _fill(tmp_path, 2)
    _log_path(tmp_path).rename(tmp_path / "offline" / "acceptances.5.log")
    with pytest.raises(OfflineLogDamaged, match="seq 5"):
        open_log(tmp_path).__enter__()
