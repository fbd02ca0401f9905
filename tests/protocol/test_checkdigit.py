"""Damm check digit: every single-digit error and every adjacent swap is caught."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from paycode.shared.checkdigit import damm_digit, damm_interim, damm_valid

digit_strings = st.text(alphabet="0123456789", min_size=1, max_size=30)


def test_published_example() -> None:
    # Damm's worked example: 572 -> check digit 4.
    assert damm_digit("572") == "4"
    assert damm_valid("5724")
    assert not damm_valid("5723")


@given(digit_strings)
def test_appended_digit_validates(digits: str) -> None:
    assert damm_valid(digits + damm_digit(digits))


@given(digit_strings)
def test_chunked_validation_equals_plain_loop(digits: str) -> None:
    assert damm_valid(digits) == (damm_interim(digits) == 0)


@given(digit_strings, st.data())
def test_every_single_digit_error_is_caught(digits: str, data: st.DataObject) -> None:
    code = digits + damm_digit(digits)
    position = data.draw(st.integers(0, len(code) - 1))
    wrong = data.draw(st.sampled_from([d for d in "0123456789" if d != code[position]]))
    assert not damm_valid(code[:position] + wrong + code[position + 1 :])


@given(st.text(alphabet="0123456789", min_size=2, max_size=30), st.data())
def test_every_adjacent_swap_is_caught(digits: str, data: st.DataObject) -> None:
    code = digits + damm_digit(digits)
    position = data.draw(st.integers(0, len(code) - 2))
    a, b = code[position], code[position + 1]
    if a == b:
        return  # swapping equal digits changes nothing
    swapped = code[:position] + b + a + code[position + 2 :]
    assert not damm_valid(swapped)


def test_exhaustive_single_errors_on_24_digit_codes() -> None:
    body = "87123456789012345678901"
    code = body + damm_digit(body)
    caught = 0
    for position in range(len(code)):
        for digit in "0123456789":
            if digit != code[position]:
                assert not damm_valid(code[:position] + digit + code[position + 1 :])
                caught += 1
    assert caught == 24 * 9
