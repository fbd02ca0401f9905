"""`paycode-pos charge` with the line down (docs/offline.md 4.2 to 4.4), in this process: the
till's server is a closed port, the customer's code comes on stdin as a barcode gun types it.
A v4 code within the limits is PAID OFFLINE (exit 0, amber, its acceptance in the log); a
v1-v3 code is NOT PAID with "ask for an OFFLINE code"; `query --order` answers from the log;
a crash between the decision and the screen is reported at the next start; and the sale goes
to the server with the next `sync`."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from paycode.appkit.rendering import qr_image
from paycode.merchant_pos import cli, offline_keys, settings, terminal_client
from paycode.merchant_pos.offline_charge import recover_interrupted
from paycode.merchant_pos.offline_log import open_log
from paycode.merchant_pos.offline_outcome import OfflineReceipt
from paycode.merchant_pos.screens import AMBER, render_outcome
from paycode.merchant_pos.till import Sale
from paycode.merchant_pos.typed_input import read_typed_line
from paycode.shared.versions import v1_numeric
from tests.support.offline_server import KEY_ID, SECRET, offline_server
from tests.support.offline_till import Allowance, store_keys
from tests.support.servers import free_port


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """A closed port refuses at once; the terminal client's back-off between its attempts
    (0.25 s doubling, 1.75 s a sale) is its own tests' business, not this module's."""
    monkeypatch.setattr(terminal_client, "BACKOFF_FIRST_S", 0.0)


@pytest.fixture
def down_till(tmp_path: Path) -> Iterator[Path]:
    """A till whose server is gone (a closed port), holding a fresh copy of the keys."""
    home = tmp_path / "pos"
    url = f"http://127.0.0.1:{free_port()}"
    settings.save(home, settings.PosSettings(url, KEY_ID, SECRET, "CNY"))
    now_s = time.time()
    store_keys(home, fetched_at_s=now_s, accept_until_s=int(now_s) + 400_000)
    yield home


def _customer(label: str) -> Allowance:
    now_s = int(time.time())
    return Allowance(label, not_before_s=now_s - 3600, expiry_s=now_s + 86_400)


def _charge(
    home: Path, code: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    *args: str,
) -> tuple[int, dict[str, Any], str]:  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO(code + "\n"))
    status = cli.main(["--home", str(home), "--json", "charge", "--source", "stdin", *args])
    captured = capsys.readouterr()
    return status, json.loads(captured.out), captured.err


def test_a_v4_code_with_the_line_down_is_paid_offline(
    down_till: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _customer("alice").code(at_s=time.time())
    status, said, _ = _charge(down_till, code, capsys, monkeypatch, "--amount", "12.50")
    assert status == 0
    assert said["outcome"] == "paid_offline" and said["code"] == "paid_offline" and said["paid"]
    assert said["acceptance_id"].startswith("acc_") and said["counter"] == 0
    assert said["cert"] == _customer("alice").cert_id.hex()[:8]
    assert "Settles when the till is back online." in said["message"]
    assert said["acceptance_id"] in said["message"]
    with open_log(down_till) as log:
        record = log.by_order(said["order_id"])
        assert record is not None and record.id == said["acceptance_id"]
        assert (record.amount_minor, record.code) == (1250, code)
    assert not (down_till / "offline" / "sale.pending").exists()  # the outcome was shown

    # The same code again: refused by the log, NOT PAID, exit 3, nothing more logged.
    status, said, _ = _charge(down_till, code, capsys, monkeypatch, "--amount", "1.00")
    assert status == 3 and said["outcome"] == "not_paid" and said["code"] == "code_replayed"
    # Above the floor limit: NOT PAID with the reason.
    big = _customer("bob").code(at_s=time.time())
    status, said, _ = _charge(down_till, big, capsys, monkeypatch, "--amount", "100.01")
    assert status == 3 and said["code"] == "offline_limit"
    assert "above the offline limit" in said["message"].lower()
    with open_log(down_till) as log:
        assert len(log.unsynced()) == 1


def test_a_v3_code_with_the_line_down_asks_for_an_offline_code(
    down_till: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = _typed_v1_code()
    status, said, _ = _charge(down_till, v1, capsys, monkeypatch, "--amount", "5.00")
    assert status == 3 and said["code"] == "server_unreachable"
    assert said["hint"] == "Server offline: ask for an OFFLINE code."


def _typed_v1_code() -> str:
    """A well-formed v1 code as a barcode gun types it (the last digit checks the others)."""
    body = v1_numeric.PREFIX + "0" * (v1_numeric.LENGTH - len(v1_numeric.PREFIX) - 1)
    return next(body + d for d in "0123456789" if read_typed_line(body + d).code is not None)


def test_query_answers_from_the_log_and_sync_forwards_the_sale(
    down_till: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _customer("carol").code(at_s=time.time())
    status, sold, _ = _charge(down_till, code, capsys, monkeypatch, "--amount", "3.20")
    assert status == 0
    status = cli.main(["--home", str(down_till), "--json", "query", "--order", sold["order_id"]])
    found = json.loads(capsys.readouterr().out)["offline_acceptance"]
    assert status == 0 and found["id"] == sold["acceptance_id"] and found["synced"] is None
    status = cli.main(["--home", str(down_till), "--json", "offline", "status"])
    state = json.loads(capsys.readouterr().out)
    assert state["unsynced_minor"] == 320 and state["keys"]["ready"] is True

    with offline_server() as server:  # the line is back
        settings.save(down_till, settings.PosSettings(server.url, KEY_ID, SECRET, "CNY"))
        status = cli.main(["--home", str(down_till), "--json", "sync"])
        said = json.loads(capsys.readouterr().out)
        assert status == 0 and said["results"][0]["id"] == sold["acceptance_id"]
        assert server.accepted_ids() == [sold["acceptance_id"]]
    status = cli.main(["--home", str(down_till), "--json", "query", "--order", sold["order_id"]])
    found = json.loads(capsys.readouterr().out)["offline_acceptance"]
    assert found["synced"]["result"] == "paid"


def test_a_sale_interrupted_after_the_fsync_is_reported_paid_at_the_next_start(
    down_till: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 between the log's fsync and the screen: sale.pending and the accept record are
    on disk; the next start tells the cashier it was PAID OFFLINE, once."""
    code = _customer("dave").code(at_s=time.time())
    with open_log(down_till) as log:
        log.begin_sale("pos-crashed")
        log.accept(order="pos-crashed", cert=_customer("dave").cert_id.hex(), counter=0,
                   code=code, amount_minor=700, currency="CNY", at_s=int(time.time()))  # fmt: skip
        # ... and the process dies here: no end_sale.
    with open_log(down_till) as log:
        log.begin_sale("pos-not-decided")
    line = recover_interrupted(down_till)
    assert line is not None and line.startswith("NOT PAID") and "pos-not-decided" in line
    assert recover_interrupted(down_till) is None  # told once
    with open_log(down_till) as log:
        log.begin_sale("pos-crashed")
    status, said, err = _charge(
        down_till, _customer("erin").code(at_s=time.time()), capsys, monkeypatch,
        "--amount", "1.00",
    )  # fmt: skip
    assert "PAID OFFLINE (recovered) 7.00 CNY, order pos-crashed" in err
    assert status == 0 and said["outcome"] == "paid_offline"


def test_the_paid_offline_screen_is_amber_with_the_reference() -> None:
    receipt = OfflineReceipt("acc_0123456789abcdef", "0a1b2c3d", 3, 7, "212.50 CNY")
    outcome = Sale("12.50", "CNY").outcome(True, "paid_offline", "m")
    outcome = replace(outcome, offline=receipt, hint=receipt.note)
    assert outcome.headline == "PAID OFFLINE 12.50 CNY" and outcome.outcome == "paid_offline"
    assert receipt.note == "offline: 7 sales, 212.50 CNY to sync"
    screen = render_outcome(outcome, (640, 360))
    corner = screen[2, 2]
    assert tuple(int(v) for v in corner[::-1]) == AMBER
    assert np.count_nonzero((screen != screen[2, 2]).any(axis=2)) > 1000  # text drawn


def test_keys_too_old_refuse_offline_sales(
    down_till: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now_s = time.time()
    store_keys(
        down_till, fetched_at_s=now_s - offline_keys.MAX_AGE_S - 1, accept_until_s=int(now_s) + 9
    )
    code = _customer("frank").code(at_s=now_s)
    status, said, _ = _charge(down_till, code, capsys, monkeypatch, "--amount", "1.00")
    assert status == 3 and said["code"] == "offline_not_ready"


def test_moments_after_a_failed_contact_a_v4_code_skips_the_online_attempt(
    down_till: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _customer("gina").code(at_s=time.time())
    status, said, _ = _charge(down_till, first, capsys, monkeypatch, "--amount", "1.00")
    assert status == 0 and (down_till / "offline" / "line.json").is_file()
    with offline_server() as server:  # the line is back, but the till does not know yet
        settings.save(down_till, settings.PosSettings(server.url, KEY_ID, SECRET, "CNY"))
        code = _customer("hank").code(at_s=time.time())
        status, said, _ = _charge(down_till, code, capsys, monkeypatch, "--amount", "2.00")
        assert status == 0 and said["outcome"] == "paid_offline"
        assert not [r for r in server.requests if r[1] == "/v1/charges"]
        line = down_till / "offline" / "line.json"
        line.write_text(json.dumps({"down_at_s": time.time() - 61, "v": 1}))
        code = _customer("ivan").code(at_s=time.time())
        status, said, _ = _charge(down_till, code, capsys, monkeypatch, "--amount", "3.00")
        assert [r[1] for r in server.requests if r[1] == "/v1/charges"] == ["/v1/charges"]
        assert status == 3 and said["code"] == "not_found"  # the stand-in takes no charges


@pytest.mark.parametrize(
    ("damaged", "code"),
    [
        ("offline/keys.json", "offline_not_ready"),
        ("offline/acceptances.log", "offline_log_damaged"),
    ],
)
def test_a_damaged_keys_copy_or_log_refuses_offline_sales(
    down_till: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    damaged: str, code: str,
) -> None:  # fmt: skip
    (down_till / damaged).write_bytes(b"not a record\nnor this\n")
    sale = _customer("judy").code(at_s=time.time())
    status, said, _ = _charge(down_till, sale, capsys, monkeypatch, "--amount", "1.00")
    assert status == 3 and said["outcome"] == "not_paid" and said["code"] == code


def test_the_camera_path_goes_paid_offline_too(
    down_till: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seam is charge_code, which the camera and the barcode gun share."""
    code = _customer("kim").code(at_s=time.time())
    picture = tmp_path / "phone.png"
    qr_image(code, box_px=6).save(picture)
    args = ["charge", "--amount", "4.00", "--source", f"image:{picture}", "--headless"]
    status = cli.main(["--home", str(down_till), "--json", *args])
    said = json.loads(capsys.readouterr().out)
    assert status == 0 and said["outcome"] == "paid_offline", said
