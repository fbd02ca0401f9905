"""Codes typed at the till (`charge --source stdin`): a USB barcode gun in keyboard mode types
a code and Enter; a cashier keys the digits the customer's wallet shows, in groups of four.

Each line is read as the cashier means it: the group separators a wallet or a keyboard puts
between digits are dropped, and a numeric code whose check digit (docs/spec.md section 4)
does not match is told at once ("check digit wrong: re-type the code"), never sent. Product
barcodes, URLs and blank lines are skipped silently, as a camera ignores them. The sale ends
like a camera's: PAID or NOT PAID from the server, or NOT PAID when the input ends
(`no_payment_code`) or `--timeout-s` passes (`scan_timeout`) without a code.
"""

from __future__ import annotations

import io
import os
import select
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, TextIO

from paycode.merchant_pos.messages import cashier_message
from paycode.merchant_pos.stopping import SaleStops
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.merchant_pos.till import ConfirmWait, Sale, SaleOutcome, charge_code
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import CodeMalformed
from paycode.shared.versions import v1_numeric
from paycode.shared.versions.registry import route

CHECK_DIGIT_WRONG = "check digit wrong: re-type the code"
LINES_MAX = 1000
"""A gun types one code and Enter; a thousand lines without a code is not a sale."""
LINE_CHARS_MAX = 4096
READ_BYTES = 4096
READS_MAX = LINES_MAX * LINE_CHARS_MAX
"""Each read brings a byte at least (a gun on a pipe may send them one at a time): no more
than a thousand full lines' worth; the sale's --timeout-s ends it long before."""
LETTERS_AMONG_DIGITS = "a payment code is digits only (0 not O, 1 not l): re-type the code"
LETTER_SLIPS_MAX = 3
HAND_TYPED_DIGITS_MIN = 16
"""A run of digits this long that opens with the numeric prefix is a code attempt, not a
product barcode (GTIN-14, the longest, has 14); a wrong count is then told, not ignored."""
SEPARATORS = frozenset(
    " \t-_.\u00a0\u2007\u2009\u202f\u3000\u2010\u2011\u2012\u2013\u2014\u2212\ufe63\uff0d"
)
"""Between groups of digits: spaces (no-break, figure, thin, ideographic), hyphens and
dashes (a word processor's, a full-width one), dots and underscores."""


class TypedLine(NamedTuple):
    """One line as read: the payment code it is, or what to tell the cashier, or neither."""

    code: str | None
    feedback: str | None


def read_typed_line(line: str) -> TypedLine:
    """The payment code on `line` (separators dropped from digits), a line for the cashier
    when the line is a mistyped numeric code, or (None, None) for anything else."""
    text = line.strip()
    if not text:
        return TypedLine(None, None)
    digits = _digits_of(text)
    candidate = text if digits is None else digits
    try:
        codec = route(candidate)
    except CodeMalformed:
        return TypedLine(None, _letters_feedback(text) if digits is None else None)
    try:
        codec.parse(candidate)
    except CodeMalformed:
        return TypedLine(None, _numeric_feedback(candidate, hand_typed=candidate != text))
    return TypedLine(candidate, None)


def _digits_of(text: str) -> str | None:
    """`text` as ASCII digits when it is only decimal digits (of any script: full-width from
    an IME) and separators; None otherwise (superscripts are not decimal digits)."""
    if len(text) > LINE_CHARS_MAX:
        return None
    kept: list[str] = []
    for char in text:
        if char in SEPARATORS:
            continue
        if not char.isdecimal():
            return None
        kept.append(str(unicodedata.decimal(char)))
    return "".join(kept) or None


def _numeric_feedback(digits: str, *, hand_typed: bool) -> str | None:
    """Why a numeric code attempt is wrong, in the cashier's words; None for what is no
    attempt at one (a QR code's text, a product barcode that shares the prefix)."""
    if not (digits.isascii() and digits.isdigit() and digits.startswith(v1_numeric.PREFIX)):
        return None
    if len(digits) == v1_numeric.LENGTH:
        return CHECK_DIGIT_WRONG
    if hand_typed or len(digits) >= HAND_TYPED_DIGITS_MIN:
        return (
            f"{len(digits)} digits typed, a payment code has {v1_numeric.LENGTH}: re-type the code"
        )
    return None


def _letters_feedback(text: str) -> str | None:
    """A numeric code with a letter or two among its digits (O for 0, l or I for 1) is a
    typing slip, not a foreign barcode: say so rather than ignore it."""
    kept = [char for char in text if char not in SEPARATORS]
    digits = sum(char.isdecimal() for char in kept)
    others = len(kept) - digits
    opens = "".join(kept[: len(v1_numeric.PREFIX)]) == v1_numeric.PREFIX
    if opens and digits >= HAND_TYPED_DIGITS_MIN and 0 < others <= LETTER_SLIPS_MAX:
        return LETTERS_AMONG_DIGITS
    return None


# -- reading the lines, within the sale's time ---------------------------------------------------


class TypingTimedOut(Exception):
    """No line came before the deadline."""


def lines_within(
    stream: TextIO, timeout_s: float, clock: Callable[[], float] = time.monotonic
) -> Iterator[str]:
    """The lines of `stream` until it ends; TypingTimedOut when `timeout_s` passes first. A
    stream with a file descriptor (a terminal, a pipe) is read from it directly, so a line
    waiting in Python's buffer cannot hide behind select(); one without (a test's StringIO)
    is read line by line with no clock."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        yield from _buffered_lines(stream)
        return
    yield from _fd_lines(fd, clock() + timeout_s, clock)


def _buffered_lines(stream: TextIO) -> Iterator[str]:
    for _ in range(LINES_MAX):
        line = stream.readline(LINE_CHARS_MAX)
        if not line:
            return
        yield line


def _fd_lines(fd: int, deadline_s: float, clock: Callable[[], float]) -> Iterator[str]:
    """Lines read with os.read as they come (at most LINE_CHARS_MAX bytes kept of one)."""
    pending = b""
    for _ in range(READS_MAX):
        remaining_s = deadline_s - clock()
        if remaining_s <= 0 or not select.select([fd], [], [], remaining_s)[0]:
            raise TypingTimedOut
        chunk = os.read(fd, READ_BYTES)
        if not chunk:
            if pending:
                yield pending.decode("utf-8", "replace")
            return
        *complete, pending = (pending + chunk).split(b"\n")
        yield from (line.decode("utf-8", "replace") for line in complete)
        pending = pending[:LINE_CHARS_MAX]  # an endless line is cut, not kept growing


# -- the sale's part: the first code typed --------------------------------------------------------


@dataclass
class TypedScan:
    """What the lines of one sale held: the first payment code, and what was told."""

    lines: int = 0
    wrong: int = 0

    def first_code(self, lines: Iterator[str], tell: Callable[[str], None]) -> str | None:
        """The first payment code among `lines` (at most LINES_MAX read); each mistyped code
        is told with `tell` and skipped. TypingTimedOut passes through."""
        for line in lines:
            self.lines += 1
            code, feedback = read_typed_line(line)
            if code is not None:
                return code
            if feedback is not None:
                self.wrong += 1
                tell(feedback)
            if self.lines >= LINES_MAX:
                return None
        return None

    def why_not(self, *, timed_out: bool, timeout_s: float) -> tuple[str, str]:
        """(code, cashier's message) of a sale that ended without a code."""
        told = f", {self.wrong} mistyped" if self.wrong else ""
        if timed_out:
            code = ErrorCode.SCAN_TIMEOUT
            detail = f"nothing typed was a payment code in {timeout_s:g} s: {self.lines} lines"
        else:
            code = ErrorCode.NO_PAYMENT_CODE
            detail = f"input ended after {self.lines} lines, none a payment code"
        return code, f"{cashier_message(code)} ({detail}{told})"


def charge_from_typed(
    client: TerminalClient,
    sale: Sale,
    wait: ConfirmWait,
    timeout_s: float,
    stream: TextIO,
    *,
    stops: SaleStops | None = None,
) -> SaleOutcome:
    """The first payment code typed (docs/pos.md, "Typing a code"); a mistyped one is told on
    stderr at once and the sale waits for the next line."""
    if stream.isatty():
        print(
            f"PAY {sale.amount} {sale.currency}: scan the customer's code, or type it and Enter",
            file=sys.stderr,
        )
    scan = TypedScan()
    try:
        code = scan.first_code(lines_within(stream, timeout_s), _tell_cashier)
    except TypingTimedOut:
        return sale.outcome(False, *scan.why_not(timed_out=True, timeout_s=timeout_s))
    if code is None:
        return sale.outcome(False, *scan.why_not(timed_out=False, timeout_s=timeout_s))
    return charge_code(client, code, sale, wait, stops)


def _tell_cashier(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
