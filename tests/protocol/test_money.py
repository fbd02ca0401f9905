"""Money: integer minor units, strict decimal strings, same-currency arithmetic (docs/api.md)."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycode.shared.errors import AmountInvalid, CurrencyMismatch, CurrencyUnknown
from paycode.shared.money import (
    AMOUNT_TEXT_CHARS_MAX,
    MAX_AMOUNT_MINOR,
    SUPPORTED_CURRENCIES,
    Currency,
    Money,
    currency,
    format_amount,
    format_money,
    parse_amount,
)

# Written out independently of the module, from the ISO 4217 list: alpha, numeric, minor digits.
ISO_4217_EXPECTED = [
    ("CNY", "156", 2),
    ("USD", "840", 2),
    ("EUR", "978", 2),
    ("GBP", "826", 2),
    ("JPY", "392", 0),
    ("KRW", "410", 0),
    ("HKD", "344", 2),
    ("SGD", "702", 2),
    ("THB", "764", 2),
    ("INR", "356", 2),
    ("BRL", "986", 2),
    ("IDR", "360", 2),
    ("MYR", "458", 2),
    ("VND", "704", 0),
    ("PHP", "608", 2),
    ("AUD", "036", 2),
    ("CAD", "124", 2),
    ("CHF", "756", 2),
    ("TWD", "901", 2),
    ("MOP", "446", 2),
    ("KWD", "414", 3),
    ("BHD", "048", 3),
    ("JOD", "400", 3),
    ("CLP", "152", 0),
    ("ISK", "352", 0),
]

MESSAGE_CHARS_MAX = 160
"""Generous bound on an error message: the rule plus at most ~32 quoted characters of input."""

currencies = st.sampled_from(SUPPORTED_CURRENCIES)
amounts_minor = st.integers(min_value=-MAX_AMOUNT_MINOR, max_value=MAX_AMOUNT_MINOR)


def cny(amount_minor: int) -> Money:
    return Money(amount_minor, "CNY")


# --- currencies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "numeric", "minor_digits"), ISO_4217_EXPECTED)
def test_currency_table_matches_iso_4217(alpha: str, numeric: str, minor_digits: int) -> None:
    expected = Currency(alpha, numeric, minor_digits)
    assert currency(alpha) == expected
    assert currency(numeric) == expected


def test_supported_currencies_are_exactly_the_expected_table() -> None:
    supported = {(c.alpha, c.numeric, c.minor_digits) for c in SUPPORTED_CURRENCIES}
    assert supported == set(ISO_4217_EXPECTED)


@pytest.mark.parametrize(
    "code", ["cny", "Cny", "XXX", "", " CNY", "CNY ", "36", "0156", "\uff11\uff15\uff16", "C N Y"]
)
def test_unknown_currency_codes_are_refused(code: str) -> None:
    with pytest.raises(CurrencyUnknown) as caught:
        currency(code)
    assert caught.value.code == "amount_invalid"
    assert repr(code) in caught.value.message


def test_unknown_currency_message_truncates_huge_input() -> None:
    code = "Z" * 10_000
    with pytest.raises(CurrencyUnknown) as caught:
        currency(code)
    assert len(str(caught.value)) < MESSAGE_CHARS_MAX
    assert "Z" * 33 not in caught.value.message


@pytest.mark.parametrize("code", [None, 156, b"CNY", ["CNY"]])
def test_non_string_currency_code_is_refused(code: object) -> None:
    with pytest.raises(CurrencyUnknown) as caught:
        currency(code)  # type: ignore[arg-type]
    assert caught.value.code == "amount_invalid"


def test_currency_unknown_is_an_amount_invalid() -> None:
    assert issubclass(CurrencyUnknown, AmountInvalid)


# --- Money invariants ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "currency_code"),
    [
        (True, "CNY"),
        (False, "CNY"),
        (12.5, "CNY"),
        ("1250", "CNY"),
        (1250, "cny"),
        (1250, "156"),
        (1250, "XXX"),
        (MAX_AMOUNT_MINOR + 1, "CNY"),
        (-MAX_AMOUNT_MINOR - 1, "CNY"),
    ],
)
def test_money_refuses_broken_invariants(amount_minor: object, currency_code: str) -> None:
    with pytest.raises(AssertionError):
        Money(amount_minor, currency_code)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount_minor", [MAX_AMOUNT_MINOR, -MAX_AMOUNT_MINOR, 0])
def test_money_accepts_the_bounds(amount_minor: int) -> None:
    assert Money(amount_minor, "JPY").amount_minor == amount_minor


def test_money_is_immutable_and_hashable() -> None:
    money = cny(1250)
    with pytest.raises(AttributeError):
        money.amount_minor = 1  # type: ignore[misc]
    assert {money, cny(1250)} == {cny(1250)}


@pytest.mark.parametrize(("amount_minor", "expected"), [(1, True), (0, False), (-1, False)])
def test_is_positive(amount_minor: int, expected: bool) -> None:
    assert cny(amount_minor).is_positive() is expected


# --- arithmetic and comparison ------------------------------------------------------------------


@given(a_minor=amounts_minor, b_minor=amounts_minor, found=currencies)
def test_add_then_subtract_is_identity(a_minor: int, b_minor: int, found: Currency) -> None:
    a = Money(a_minor, found.alpha)
    b = Money(b_minor, found.alpha)
    try:
        total = a + b
    except AmountInvalid:
        assert abs(a_minor + b_minor) > MAX_AMOUNT_MINOR
        return
    assert total.amount_minor == a_minor + b_minor
    assert total.currency == found.alpha
    assert total - b == a


def test_add_and_subtract_examples() -> None:
    assert cny(1250) + cny(50) == cny(1300)
    assert cny(1250) - cny(1300) == cny(-50)


@pytest.mark.parametrize(
    "operation",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a > b,
        lambda a, b: a >= b,
    ],
)
def test_mixed_currencies_raise_currency_mismatch(
    operation: Callable[[Money, Money], object],
) -> None:
    with pytest.raises(CurrencyMismatch) as caught:
        operation(cny(100), Money(100, "USD"))
    assert caught.value.code == "currency_mismatch"
    assert "CNY" in caught.value.message
    assert "USD" in caught.value.message


def test_equality_across_currencies_is_false_not_an_error() -> None:
    assert cny(100) != Money(100, "USD")


def test_arithmetic_beyond_the_maximum_is_amount_invalid() -> None:
    with pytest.raises(AmountInvalid) as caught:
        cny(MAX_AMOUNT_MINOR) + cny(1)
    assert caught.value.code == "amount_invalid"
    with pytest.raises(AmountInvalid):
        cny(-MAX_AMOUNT_MINOR) - cny(1)


def test_arithmetic_with_a_plain_int_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        cny(100) + 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        cny(100) < 1  # type: ignore[operator]  # noqa: B015


@given(a_minor=amounts_minor, b_minor=amounts_minor)
def test_comparison_follows_amount_minor(a_minor: int, b_minor: int) -> None:
    a, b = cny(a_minor), cny(b_minor)
    assert (a < b) == (a_minor < b_minor)
    assert (a <= b) == (a_minor <= b_minor)
    assert (a > b) == (a_minor > b_minor)
    assert (a >= b) == (a_minor >= b_minor)


# --- formatting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("money", "expected"),
    [
        (Money(1250, "CNY"), "12.50"),
        (Money(1200, "CNY"), "12.00"),
        (Money(5, "CNY"), "0.05"),
        (Money(0, "CNY"), "0.00"),
        (Money(-1250, "CNY"), "-12.50"),
        (Money(-5, "CNY"), "-0.05"),
        (Money(5, "JPY"), "5"),
        (Money(-5, "JPY"), "-5"),
        (Money(1234, "KWD"), "1.234"),
        (Money(7, "BHD"), "0.007"),
        (Money(MAX_AMOUNT_MINOR, "CNY"), "10000000000000.00"),
        (Money(MAX_AMOUNT_MINOR, "ISK"), "1000000000000000"),
    ],
)
def test_format_amount(money: Money, expected: str) -> None:
    assert format_amount(money) == expected


def test_format_money_and_str() -> None:
    assert format_money(cny(1250)) == "12.50 CNY"
    assert str(cny(1250)) == "12.50 CNY"
    assert str(Money(-1234, "JOD")) == "-1.234 JOD"


@given(found=currencies, amount_minor=st.integers(min_value=1, max_value=MAX_AMOUNT_MINOR))
def test_format_then_parse_round_trips(found: Currency, amount_minor: int) -> None:
    money = Money(amount_minor, found.alpha)
    assert parse_amount(format_amount(money), found.alpha) == money
    assert parse_amount(format_amount(money), found.numeric) == money


@pytest.mark.parametrize("found", SUPPORTED_CURRENCIES, ids=lambda c: c.alpha)
def test_zero_round_trips_when_allowed(found: Currency) -> None:
    zero = Money(0, found.alpha)
    assert parse_amount(format_amount(zero), found.alpha, allow_zero=True) == zero


# --- parsing: accepted --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency_code", "expected"),
    [
        ("12.50", "CNY", Money(1250, "CNY")),
        ("12.5", "CNY", Money(1250, "CNY")),
        ("12", "CNY", Money(1200, "CNY")),
        ("0.01", "CNY", Money(1, "CNY")),
        ("007.50", "CNY", Money(750, "CNY")),
        ("12.50", "156", Money(1250, "CNY")),
        ("5", "JPY", Money(5, "JPY")),
        ("0005", "JPY", Money(5, "JPY")),
        ("1.234", "KWD", Money(1234, "KWD")),
        ("1.2", "KWD", Money(1200, "KWD")),
        ("10000000000000.00", "CNY", Money(MAX_AMOUNT_MINOR, "CNY")),
        ("1000000000000000", "JPY", Money(MAX_AMOUNT_MINOR, "JPY")),
        ("0000000000000001", "JPY", Money(1, "JPY")),
    ],
)
def test_parse_amount_accepts(text: str, currency_code: str, expected: Money) -> None:
    assert parse_amount(text, currency_code) == expected


@pytest.mark.parametrize("text", ["0", "0.00", "000", "0.0"])
def test_parse_amount_allows_zero_on_request(text: str) -> None:
    assert parse_amount(text, "CNY", allow_zero=True) == cny(0)


# --- parsing: refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency_code", "rule"),
    [
        (None, "CNY", "must be a decimal string"),
        (1250, "CNY", "must be a decimal string"),
        (12.5, "CNY", "must be a decimal string"),
        (b"12.50", "CNY", "must be a decimal string"),
        ("", "CNY", "empty"),
        ("+12.50", "CNY", "sign"),
        ("-12.50", "CNY", "sign"),
        ("-0", "CNY", "sign"),
        (" 12.50", "CNY", "whitespace"),
        ("12.50 ", "CNY", "whitespace"),
        ("12.50\n", "CNY", "whitespace"),
        ("\t12", "CNY", "whitespace"),
        ("\u00a012", "CNY", "whitespace"),
        ("1e3", "CNY", "exponent"),
        ("1E3", "CNY", "exponent"),
        ("1.5e2", "CNY", "exponent"),
        ("1,000", "CNY", "separators"),
        ("1_000", "CNY", "separators"),
        ("1'000", "CNY", "separators"),
        ("12,50", "CNY", "separators"),
        ("\u0661", "CNY", "ASCII digits"),  # ARABIC-INDIC DIGIT ONE
        ("\u0661\u0662.\u0665\u0660", "CNY", "ASCII digits"),  # Arabic-Indic 12.50
        ("\uff11\uff12", "CNY", "ASCII digits"),  # FULLWIDTH 12
        ("\u0968", "CNY", "ASCII digits"),  # DEVANAGARI DIGIT TWO
        ("\u00b2", "CNY", "ASCII digits"),  # SUPERSCRIPT TWO
        ("\u00bd", "CNY", "ASCII digits"),  # VULGAR FRACTION ONE HALF
        ("12 50", "CNY", "only ASCII digits and one '.'"),
        ("NaN", "CNY", "only ASCII digits and one '.'"),
        ("inf", "CNY", "only ASCII digits and one '.'"),
        ("0x10", "CNY", "only ASCII digits and one '.'"),
        ("12.50CNY", "CNY", "only ASCII digits and one '.'"),
        ("1\x002", "CNY", "only ASCII digits and one '.'"),
        ("1.", "CNY", "digit after the '.'"),
        (".5", "CNY", "digit before the '.'"),
        (".", "CNY", "digit before the '.'"),
        ("1..5", "CNY", "more than one '.'"),
        ("1.2.3", "CNY", "more than one '.'"),
        ("1.234", "CNY", "at most 2 decimal places"),
        ("1.000", "CNY", "at most 2 decimal places"),
        ("1.2345", "KWD", "at most 3 decimal places"),
        ("1.5", "JPY", "no minor unit"),
        ("1.0", "JPY", "no minor unit"),
        ("1.", "JPY", "no minor unit"),
        ("0", "CNY", "greater than zero"),
        ("0.00", "CNY", "greater than zero"),
        ("000", "JPY", "greater than zero"),
        ("10000000000000.01", "CNY", "exceeds the maximum"),
        ("1000000000000001", "JPY", "exceeds the maximum"),
        ("9999999999999999", "JPY", "exceeds the maximum"),
        ("10000000000000000", "JPY", "more than 16 digits"),
        ("00000000000000001", "JPY", "more than 16 digits"),
        ("1" * (AMOUNT_TEXT_CHARS_MAX + 1), "CNY", "longer than 40 characters"),
        ("\u0661" * 10_000, "CNY", "longer than 40 characters"),
    ],
)
def test_parse_amount_refuses(text: object, currency_code: str, rule: str) -> None:
    with pytest.raises(AmountInvalid) as caught:
        parse_amount(text, currency_code)  # type: ignore[arg-type]
    assert type(caught.value) is AmountInvalid
    assert caught.value.code == "amount_invalid"
    assert rule in caught.value.message
    assert len(str(caught.value)) < MESSAGE_CHARS_MAX


def test_parse_amount_refuses_unknown_currency() -> None:
    with pytest.raises(CurrencyUnknown) as caught:
        parse_amount("12.50", "XXX")
    assert caught.value.code == "amount_invalid"
    with pytest.raises(CurrencyUnknown):
        parse_amount("12.50", "cny")


def test_length_is_checked_before_anything_else() -> None:
    # An over-long amount with an unknown currency fails on length, not on the currency lookup.
    with pytest.raises(AmountInvalid) as caught:
        parse_amount("9" * 10_000, "XXX")
    assert type(caught.value) is AmountInvalid
    assert "longer than" in caught.value.message


def test_messages_quote_at_most_32_characters_of_input() -> None:
    text = "1" * 32 + "x" * 8  # 40 chars: within the length limit, refused for the 'x'
    with pytest.raises(AmountInvalid) as caught:
        parse_amount(text, "CNY")
    assert "found 'x'" in caught.value.message
    assert "'" + "1" * 32 + "... (40 chars)" in caught.value.message
    assert "1" * 33 not in caught.value.message


def test_messages_bound_escaped_input() -> None:
    text = "0" * 8 + "\x1f" * 31  # repr turns each \x1f into four characters
    with pytest.raises(AmountInvalid) as caught:
        parse_amount(text, "CNY")
    assert caught.value.message.endswith("... (39 chars)")
    assert len(str(caught.value)) < MESSAGE_CHARS_MAX


# --- parsing: properties ------------------------------------------------------------------------

amount_like_text = st.text(alphabet="0123456789.,+-eE _\u0661\u00a0\n", max_size=45)


@given(text=st.one_of(st.text(max_size=60), amount_like_text), found=currencies)
def test_parse_amount_raises_only_amount_invalid(text: str, found: Currency) -> None:
    try:
        money = parse_amount(text, found.alpha, allow_zero=True)
    except AmountInvalid as error:
        assert error.code == "amount_invalid"
        assert len(str(error)) < MESSAGE_CHARS_MAX
        return
    assert 0 <= money.amount_minor <= MAX_AMOUNT_MINOR
    assert money.currency == found.alpha


@given(data=st.data(), found=currencies)
def test_grammar_conforming_text_parses_to_its_exact_value(
    data: st.DataObject, found: Currency
) -> None:
    digits = found.minor_digits
    pattern = r"[0-9]{1,16}" + (rf"(\.[0-9]{{1,{digits}}})?" if digits else "")
    text = data.draw(st.from_regex(pattern, fullmatch=True))
    expected_minor = Fraction(text) * 10**digits  # exact rational oracle, independent of the parser
    assert expected_minor.denominator == 1
    if expected_minor == 0 or expected_minor > MAX_AMOUNT_MINOR:
        with pytest.raises(AmountInvalid):
            parse_amount(text, found.alpha)
        return
    assert parse_amount(text, found.alpha) == Money(int(expected_minor), found.alpha)
