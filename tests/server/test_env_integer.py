"""Whole-number settings (paycode.server.safety.limits.env_integer): what an operator types
into an environment file, read strictly."""

from __future__ import annotations

import pytest

from paycode.server.safety.limits import env_integer
from paycode.shared.errors import ConfigError

NAME = "PAYCODE_TEST_SETTING"


def test_a_setting_is_read_within_its_bounds_and_defaults_when_unset() -> None:
    assert env_integer({}, NAME, 7, low=1, high=64) == 7
    assert env_integer({NAME: ""}, NAME, 7, low=1, high=64) == 7
    assert env_integer({NAME: "12"}, NAME, 7, low=1, high=64) == 12
    assert env_integer({NAME: " 12\n"}, NAME, 7, low=1, high=64) == 12  # a file's line end


@pytest.mark.parametrize("raw", ["0", "65", "-3"])
def test_a_setting_out_of_bounds_is_refused_naming_it(raw: str) -> None:
    with pytest.raises(ConfigError, match=NAME):
        env_integer({NAME: raw}, NAME, 7, low=1, high=64)


@pytest.mark.parametrize("raw", ["eight", "8.5", "1e3", "0x10"])
def test_a_setting_that_is_no_whole_number_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match=f"{NAME} must be a whole number"):
        env_integer({NAME: raw}, NAME, 7, low=1, high=64)


@pytest.mark.parametrize("raw", ["1_0", "\u0663", "\uff18", "+8"])
def test_regression_digits_python_reads_but_an_operator_never_wrote_are_refused(raw: str) -> None:
    """int() reads "1_0" as 10, Arabic-Indic and full-width digits as numbers, and "+8": a
    setting written that way is a typo or pasted text, not the number it happens to parse to."""
    with pytest.raises(ConfigError, match=f"{NAME} must be a whole number"):
        env_integer({NAME: raw}, NAME, 7, low=1, high=64)
