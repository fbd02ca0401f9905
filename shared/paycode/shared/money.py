"""Money: integer minor units plus an ISO 4217 currency, never floats (docs/api.md).

A float cannot hold 0.10 exactly, so every amount is an `int` count of the currency's minor unit
(fen, cent, fils; yen have none). The API speaks decimal strings ("12.50"); `parse_amount` turns
them into `Money` with str and int operations only, and `format_amount` turns them back.
Pure: no I/O, no locale, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from paycode.shared.errors import AmountInvalid, CurrencyMismatch, CurrencyUnknown

MAX_AMOUNT_MINOR: Final = 10**15
"""Largest |amount_minor| we hold. Below 2**53, so it survives JSON parsers and JavaScript numbers
exactly, and even the sum of two maxima (2 * 10**15) does; far below 2**63 - 1, so it and any
realistic ledger sum fit a PostgreSQL BIGINT. Still ten trillion yuan: no real payment is near."""

AMOUNT_TEXT_CHARS_MAX: Final = 40
"""Longer amount strings are refused before any other work, so hostile input costs nothing."""

INTEGER_DIGITS_MAX: Final = 16
"""Digits before the decimal point: enough for MAX_AMOUNT_MINOR in a currency without minor unit."""

_ECHO_CHARS_MAX: Final = 32
"""Error messages quote at most this much of the user's input, so logs stay readable."""

_ASCII_DIGITS: Final = frozenset("0123456789")

assert MAX_AMOUNT_MINOR * 2 < 2**53
assert len(str(MAX_AMOUNT_MINOR)) <= INTEGER_DIGITS_MAX


@dataclass(frozen=True, slots=True)
class Currency:
    """One ISO 4217 currency. `numeric` stays a 3-digit string ("036"): EMV tag 53 carries it so."""

    alpha: str
    numeric: str
    minor_digits: int

    def __post_init__(self) -> None:
        assert len(self.alpha) == 3 and self.alpha.isascii() and self.alpha.isupper()
        assert len(self.numeric) == 3 and self.numeric.isascii() and self.numeric.isdigit()
        assert 0 <= self.minor_digits <= 3


SUPPORTED_CURRENCIES: Final[tuple[Currency, ...]] = (
    Currency("CNY", "156", 2),
    Currency("USD", "840", 2),
    Currency("EUR", "978", 2),
    Currency("GBP", "826", 2),
    Currency("JPY", "392", 0),
    Currency("KRW", "410", 0),
    Currency("HKD", "344", 2),
    Currency("SGD", "702", 2),
    Currency("THB", "764", 2),
    Currency("INR", "356", 2),
    Currency("BRL", "986", 2),
    Currency("IDR", "360", 2),
    Currency("MYR", "458", 2),
    Currency("VND", "704", 0),
    Currency("PHP", "608", 2),
    Currency("AUD", "036", 2),
    Currency("CAD", "124", 2),
    Currency("CHF", "756", 2),
    Currency("TWD", "901", 2),
    Currency("MOP", "446", 2),
    Currency("KWD", "414", 3),
    Currency("BHD", "048", 3),
    Currency("JOD", "400", 3),
    Currency("CLP", "152", 0),
    Currency("ISK", "352", 0),
)
"""The currencies we accept. Minor digits follow the ISO 4217 list (not street usage: ISO gives
IDR and TWD two digits even though cash has none)."""

_BY_ALPHA: Final[Mapping[str, Currency]] = MappingProxyType(
    {entry.alpha: entry for entry in SUPPORTED_CURRENCIES}
)
_BY_NUMERIC: Final[Mapping[str, Currency]] = MappingProxyType(
    {entry.numeric: entry for entry in SUPPORTED_CURRENCIES}
)
assert len(_BY_ALPHA) == len(_BY_NUMERIC) == len(SUPPORTED_CURRENCIES)


def _echo(value: object) -> str:
    """A short quotation of user input for an error message: at most _ECHO_CHARS_MAX characters
    of quoted text plus the input's length, so hostile input cannot flood logs."""
    if not isinstance(value, str):
        return f"a {type(value).__name__}"
    quoted = repr(value[: _ECHO_CHARS_MAX + 1])  # slice first: repr of a huge string is work
    if len(value) <= _ECHO_CHARS_MAX and len(quoted) <= _ECHO_CHARS_MAX + 2:
        return quoted
    # Escapes ('\x1f') make repr longer than its input; cut the quotation, not just the input.
    return f"{quoted[: _ECHO_CHARS_MAX + 1]}... ({len(value)} chars)"


def currency(code: str) -> Currency:
    """The currency for an alpha ("CNY", uppercase only) or numeric ("156") ISO 4217 code.

    Lowercase is refused rather than folded: the codes come from machines (API, EMV), and one
    spelling per currency keeps idempotency keys and ledger rows comparable.
    """
    if not isinstance(code, str):
        raise CurrencyUnknown(f"currency code must be a string, got {_echo(code)}")
    found = _BY_ALPHA.get(code) or _BY_NUMERIC.get(code)
    if found is None:
        raise CurrencyUnknown(f"unsupported currency {_echo(code)}")
    return found


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units of one supported currency (alpha code). May be negative: ledger
    balances and reversals are Money too; user-typed amounts come through `parse_amount`."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        # bool is an int subclass, but True cents is always a bug.
        assert isinstance(self.amount_minor, int), f"amount_minor is {type(self.amount_minor)}"
        assert not isinstance(self.amount_minor, bool), "amount_minor is a bool"
        assert self.currency in _BY_ALPHA, f"unsupported currency {_echo(self.currency)}"
        assert abs(self.amount_minor) <= MAX_AMOUNT_MINOR, "amount_minor out of range"

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._require_same_currency(other, "add")
        return _checked(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._require_same_currency(other, "subtract")
        return _checked(self.amount_minor - other.amount_minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._require_same_currency(other, "compare")
        return self.amount_minor < other.amount_minor

    def __le__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._require_same_currency(other, "compare")
        return self.amount_minor <= other.amount_minor

    def __gt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._require_same_currency(other, "compare")
        return self.amount_minor > other.amount_minor

    def __ge__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._require_same_currency(other, "compare")
        return self.amount_minor >= other.amount_minor

    def __str__(self) -> str:
        return format_money(self)

    def is_positive(self) -> bool:
        """True for amounts a payment may move (zero and negatives may not)."""
        return self.amount_minor > 0

    def _require_same_currency(self, other: Money, verb: str) -> None:
        """Refuse mixed currencies: there is no exchange rate here, so a mix is always a bug."""
        if self.currency != other.currency:
            raise CurrencyMismatch(f"cannot {verb} {self.currency} and {other.currency}")


def _checked(amount_minor: int, currency_alpha: str) -> Money:
    """Money from arithmetic: out of range is the data's fault (an error), not the code's."""
    if abs(amount_minor) > MAX_AMOUNT_MINOR:
        raise AmountInvalid(f"result exceeds the maximum amount of {MAX_AMOUNT_MINOR} minor units")
    return Money(amount_minor, currency_alpha)


def _grammar(minor_digits: int) -> re.Pattern[str]:
    """The amount grammar for a currency, used to assert what the step-by-step checks proved."""
    fraction = rf"(\.[0-9]{{1,{minor_digits}}})?" if minor_digits else ""
    return re.compile(rf"[0-9]{{1,{INTEGER_DIGITS_MAX}}}{fraction}")


_GRAMMARS: Final[Mapping[int, re.Pattern[str]]] = MappingProxyType(
    {digits: _grammar(digits) for digits in range(4)}
)


def parse_amount(text: str, currency_code: str, *, allow_zero: bool = False) -> Money:
    """Money from an API decimal string such as "12.50"; raises AmountInvalid naming the rule.

    Strict on purpose: `[0-9]{1,16}(\\.[0-9]{1,d})?` with d the currency's minor digits. No
    signs, spaces, exponents, separators or non-ASCII digits, so one amount has few spellings and
    nothing is rounded: "1.234 CNY" is refused, not silently turned into 1.23.
    """
    _check_shape(text)
    found = currency(currency_code)
    whole, fraction = _split_decimal(text, found)
    assert _GRAMMARS[found.minor_digits].fullmatch(text)
    amount_minor = int(whole) * 10**found.minor_digits
    if fraction:
        amount_minor += int(fraction.ljust(found.minor_digits, "0"))
    _check_range(amount_minor, text, allow_zero=allow_zero)
    return Money(amount_minor, found.alpha)


def _check_shape(text: object) -> None:
    """Type, length and character rules: everything that does not depend on the currency."""
    if not isinstance(text, str):
        raise AmountInvalid(f"amount must be a decimal string, got {_echo(text)}")
    if len(text) > AMOUNT_TEXT_CHARS_MAX:
        raise AmountInvalid(f"amount is longer than {AMOUNT_TEXT_CHARS_MAX} characters")
    if not text:
        raise AmountInvalid("amount is empty")
    if text != text.strip():
        raise AmountInvalid(f"amount has leading or trailing whitespace: {_echo(text)}")
    if text[0] in "+-":
        raise AmountInvalid(f"amount must not carry a sign: {_echo(text)}")
    for char in text:
        if char not in _ASCII_DIGITS and char != ".":
            raise AmountInvalid(f"{_character_rule(char)}, found {char!r} in {_echo(text)}")


def _character_rule(char: str) -> str:
    """Which rule a character outside [0-9.] breaks, so the message tells the caller what to fix."""
    if char in "eE":
        return "amount must not use an exponent"
    if char in ",_'":
        return "amount must not contain digit separators"
    if char.isdigit() or char.isnumeric():
        return "amount must use ASCII digits 0-9 only"
    return "amount may contain only ASCII digits and one '.'"


def _split_decimal(text: str, found: Currency) -> tuple[str, str]:
    """Whole and fractional digit strings of `text`, which holds only ASCII digits and dots."""
    whole, dot, fraction = text.partition(".")
    if "." in fraction:
        raise AmountInvalid(f"amount has more than one '.': {_echo(text)}")
    if not whole:
        raise AmountInvalid(f"amount needs a digit before the '.': {_echo(text)}")
    if len(whole) > INTEGER_DIGITS_MAX:
        raise AmountInvalid(f"amount has more than {INTEGER_DIGITS_MAX} digits before the '.'")
    if dot and found.minor_digits == 0:
        raise AmountInvalid(f"{found.alpha} has no minor unit; amount must be a whole number")
    if dot and not fraction:
        raise AmountInvalid(f"amount needs a digit after the '.': {_echo(text)}")
    if len(fraction) > found.minor_digits:
        raise AmountInvalid(
            f"{found.alpha} allows at most {found.minor_digits} decimal places: {_echo(text)}"
        )
    return whole, fraction


def _check_range(amount_minor: int, text: str, *, allow_zero: bool) -> None:
    """Zero only when the caller allows it; never above MAX_AMOUNT_MINOR."""
    if amount_minor == 0 and not allow_zero:
        raise AmountInvalid(f"amount must be greater than zero: {_echo(text)}")
    if amount_minor > MAX_AMOUNT_MINOR:
        raise AmountInvalid(
            f"amount exceeds the maximum of {MAX_AMOUNT_MINOR} minor units: {_echo(text)}"
        )


def format_amount(money: Money) -> str:
    """The API decimal string for `money`, with every minor digit ("12.50", "5", "-1.234").

    The inverse of `parse_amount` for positive amounts; negatives get a leading '-' (ledger
    reports), which `parse_amount` refuses by design.
    """
    minor_digits = _BY_ALPHA[money.currency].minor_digits
    sign = "-" if money.amount_minor < 0 else ""
    magnitude_minor = abs(money.amount_minor)
    if minor_digits == 0:
        return f"{sign}{magnitude_minor}"
    whole, fraction = divmod(magnitude_minor, 10**minor_digits)
    return f"{sign}{whole}.{fraction:0{minor_digits}d}"


def format_money(money: Money) -> str:
    """Amount and currency for people and logs: "12.50 CNY"."""
    return f"{format_amount(money)} {money.currency}"
