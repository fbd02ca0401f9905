"""What a password and a payment PIN must be, one policy for the server, its commands and the
wallets (README, "Running a shop"). Pure: each check returns the reason a secret is refused, or
None; callers raise their own typed error with it.

A payment PIN guards payments above the password-free limits: five wrong tries lock it
(docs/operations.md), so what matters is that the first few guesses an attacker would make
miss. Those are one digit repeated, runs up or down (123456, 654321, 135790 is fine), a short
pattern repeated (121212, 123123) and a few common keypad shapes."""

from __future__ import annotations

import itertools
from typing import Final

PASSWORD_CHARS_MIN: Final = 10
PASSWORD_CHARS_MAX: Final = 1024
PIN_DIGITS: Final = 6
COMMON_PINS: Final = frozenset(
    {"112233", "123321", "147258", "159753", "258369", "369258", "147852", "520520", "131420"}
)
POLICY_TEXT: Final = (
    f"a password has {PASSWORD_CHARS_MIN} to {PASSWORD_CHARS_MAX} characters; a payment PIN "
    f"is {PIN_DIGITS} digits, not one repeated, a run (123456) or a repeated pattern (121212)"
)


def password_problem(password: str) -> str | None:
    if len(password) < PASSWORD_CHARS_MIN:
        return f"a password has at least {PASSWORD_CHARS_MIN} characters"
    if len(password) > PASSWORD_CHARS_MAX:
        return f"a password has at most {PASSWORD_CHARS_MAX} characters"
    return None


def pin_problem(pin: str) -> str | None:
    if len(pin) != PIN_DIGITS or not (pin.isascii() and pin.isdigit()):
        return f"a payment PIN is {PIN_DIGITS} digits"
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(pin)}
    if steps in ({0}, {1}, {9}):
        return "a payment PIN may not be one digit repeated or a run such as 123456"
    if pin[:2] * 3 == pin or pin[:3] * 2 == pin or pin in COMMON_PINS:
        return "this payment PIN is among the first an attacker would try: choose another"
    return None
