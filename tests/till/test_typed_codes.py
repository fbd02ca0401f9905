"""Typing a code at the till (issue 20, item 3): `charge --source stdin`, from a keyboard or a
barcode gun in keyboard mode.

The code as the wallet shows it (digits in groups of four) is charged; a wrong check digit is
told at once on stderr, nothing is sent, and the sale waits for the next line; and the sale
ends with the exit codes of the other sources (3 NOT PAID when input ends or time runs out
without a code). The reading rules are tested in this process; the sales run the real till
process with stdin lines against a live server, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from paycode.appkit.rendering import group_digits
from paycode.merchant_pos import settings
from paycode.merchant_pos.typed_input import (
    CHECK_DIGIT_WRONG,
    LINES_MAX,
    TypedScan,
    TypingTimedOut,
    lines_within,
    read_typed_line,
)
from paycode.server.testing import REPO_ROOT
from tests.endtoend.till_process import TillProcess
from tests.support.protocol import load_vectors
from tests.support.servers import Server
from tests.support.shop import Shop, open_shop

NUMERIC = next(str(v["code"]) for v in load_vectors() if v["version"] == "v1")
QR_CODES = [str(v["code"]) for v in load_vectors() if v["version"] != "v1"][:4]
SHOP = "Typed Noodles"


def _typo(code: str) -> str:
    """One digit changed: the Damm check digit catches every single substitution."""
    return code[:7] + str((int(code[7]) + 3) % 10) + code[8:]


# -- reading a line (in this process) -----------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        group_digits(NUMERIC),  # as the wallet shows it
        group_digits(NUMERIC).replace(" ", "-"),
        "  " + group_digits(NUMERIC, group=3) + " \t",
        group_digits(NUMERIC).replace(" ", "\u00a0"),  # a no-break space, pasted from a page
        group_digits(NUMERIC).replace(" ", "\u2013"),  # an en dash a word processor made
        group_digits(NUMERIC).replace(" ", "\u3000"),  # an ideographic space (a Chinese IME)
        NUMERIC.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"}),  # full-width digits
    ],
    ids=["spaces", "dashes", "threes", "nbsp", "en-dash", "ideographic", "full-width"],
)
def test_a_code_typed_with_group_separators_reads_as_the_code(typed: str) -> None:
    assert read_typed_line(typed) == (NUMERIC, None)


@pytest.mark.parametrize("typed", [NUMERIC[:-1] + "\u00b2", NUMERIC[:4] + "/" + NUMERIC[4:]])
def test_superscripts_and_other_marks_are_not_digits_nor_separators(typed: str) -> None:
    code, _feedback = read_typed_line(typed)
    assert code is None


def test_a_wrong_digit_is_told_as_a_check_digit_error() -> None:
    assert read_typed_line(group_digits(_typo(NUMERIC))) == (None, CHECK_DIGIT_WRONG)
    assert "re-type" in CHECK_DIGIT_WRONG


def test_a_missing_or_extra_digit_is_told_with_the_count() -> None:
    code, feedback = read_typed_line(group_digits(NUMERIC[:-1]))
    assert code is None and feedback is not None
    assert "23 digits" in feedback and "24" in feedback and "re-type" in feedback
    code, feedback = read_typed_line(NUMERIC + "5")
    assert code is None and feedback is not None and "25 digits" in feedback


@pytest.mark.parametrize("wrong", ["O", "o", "l", "I"])
def test_a_letter_typed_for_a_digit_is_told_not_ignored(wrong: str) -> None:
    typed = group_digits(NUMERIC[:9] + wrong + NUMERIC[10:])
    code, feedback = read_typed_line(typed)
    assert code is None and feedback is not None
    assert "digits only" in feedback and "re-type" in feedback


@pytest.mark.parametrize(
    "typed", ["", "   ", "4006381333931", "8712345678901", "https://example.com/87", "hello"]
)
def test_product_barcodes_urls_and_blank_lines_are_ignored_silently(typed: str) -> None:
    assert read_typed_line(typed) == (None, None)


def test_qr_codes_from_a_gun_are_taken_as_they_are() -> None:
    for code in QR_CODES:
        assert read_typed_line(code + "\r\n") == (code, None)


def test_lines_are_bounded_and_the_first_code_wins() -> None:
    told: list[str] = []
    endless = TypedScan()
    assert endless.first_code(lines_within(io.StringIO("a\n" * 5000), 1.0), told.append) is None
    assert endless.lines == LINES_MAX and told == []
    typed = f"\n4006381333931\n{_typo(NUMERIC)}\nhttps://x.example\n{NUMERIC}\n{QR_CODES[0]}\n"
    scan = TypedScan()
    assert scan.first_code(lines_within(io.StringIO(typed), 1.0), told.append) == NUMERIC
    assert (scan.lines, scan.wrong, told) == (5, 1, [CHECK_DIGIT_WRONG])


def test_lines_from_a_pipe_come_whole_however_they_are_cut_and_an_idle_pipe_times_out() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, encoding="utf-8") as stream:
        for piece in (b"8712 34", b"56 \xe4\xb8", b"\xad\nhalf a li"):  # a UTF-8 character cut
            os.write(write_fd, piece)
        lines = lines_within(stream, 0.3)
        assert next(lines) == "8712 3456 中"
        with pytest.raises(TypingTimedOut):
            next(lines)
        os.close(write_fd)
    ended = lines_within(io.StringIO("only line"), 0.3)
    assert list(ended) == ["only line"]


# -- the till process against a live server -----------------------------------------------------


@pytest.fixture(scope="module")
def shop(live_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Shop:
    """The customer's wallet and the shop's setup run in this process over real HTTP; every
    sale is a till process of its own (spawn_pos), reading the lines on its stdin."""
    home = tmp_path_factory.mktemp("typed")
    return open_shop(live_server, home, merchants=[SHOP], top_up="100.00", in_process=True)


def _sale(shop: Shop, stdin: str, *extra: str) -> subprocess.CompletedProcess[str]:
    done: subprocess.CompletedProcess[str] = shop.spawn_pos(
        "charge", "--amount", "2.00", "--source", "stdin", *extra, stdin=stdin
    )
    return done


def _attempts(shop: Shop, order_id: str) -> list[dict[str, Any]]:
    """Every payment attempt the server has under the order id, failed ones too."""
    return settings.load(shop.tills[SHOP]).client().payments_by_order(order_id)


def test_the_code_typed_in_groups_of_four_as_the_wallet_shows_it_is_charged(shop: Shop) -> None:
    before = shop.balance()
    done = _sale(shop, group_digits(shop.code("v1")) + "\n", "--order-id", "typed-groups")
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["paid"] is True and outcome["payment"]["code_version"] == "v1"
    assert float(before) - float(shop.balance()) == pytest.approx(2.00)


def test_a_mistyped_digit_is_told_at_once_sends_nothing_and_the_sale_waits_for_the_next_line(
    shop: Shop,
) -> None:
    code = shop.code("v1")
    typed = f"{group_digits(_typo(code))}\n{group_digits(code).replace(' ', '-')}\n"
    done = _sale(shop, typed, "--order-id", "typed-typo")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["paid"] is True
    assert done.stderr.count(CHECK_DIGIT_WRONG) == 1
    assert code not in done.stderr and _typo(code) not in done.stderr  # a code is never echoed
    assert [p["status"] for p in _attempts(shop, "typed-typo")] == ["succeeded"]


def test_input_ending_without_a_code_is_not_paid_exit_3_like_a_camera_that_saw_none(
    shop: Shop,
) -> None:
    typed = f"4006381333931\n{group_digits(_typo(shop.code('v1')))}\n\n"
    done = _sale(shop, typed, "--order-id", "typed-none")
    assert done.returncode == 3, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert (outcome["paid"], outcome["code"]) == (False, "no_payment_code")
    assert outcome["merchant_order_id"] == "typed-none"
    assert "3 lines" in outcome["message"] and "1 mistyped" in outcome["message"]
    assert CHECK_DIGIT_WRONG in done.stderr
    assert _attempts(shop, "typed-none") == []


def test_nothing_typed_within_the_timeout_is_not_paid_exit_3_like_a_camera_timing_out(
    shop: Shop,
) -> None:
    """A terminal left open (a keyboard nobody types on): the sale ends at --timeout-s."""
    args = ["--amount", "2.00", "--source", "stdin", "--timeout-s", "1", "--order-id", "typed-idle"]
    with TillProcess.start(shop.tills[SHOP], *args) as till:
        till.type_code("4006381333931")  # a product barcode, then nothing: stdin stays open
        status, outcome, stderr = till.finish()
    assert status == 3, (outcome, stderr)
    assert (outcome["paid"], outcome["code"]) == (False, "scan_timeout")
    assert outcome["merchant_order_id"] == "typed-idle"


def test_the_reading_rules_are_in_the_docs() -> None:
    doc = (Path(REPO_ROOT) / "docs" / "pos.md").read_text(encoding="utf-8")
    assert CHECK_DIGIT_WRONG in doc
