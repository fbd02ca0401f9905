"""Password-free limits: what an offline payment code may pay without the customer's PIN.

A code charged at a POS pays at once while the payment stays inside three per-user limits
(each per currency): the amount of one payment, and today's count and amount of password-free
payments. Past any of them the charge answers `confirmation_required` with a payment in
`pending_confirmation`: the code is burned, nothing moves, and the customer confirms with the
PIN in the wallet (or declines); the POS polls and cancels after its wait. Above the hard
ceiling an offline code pays nothing at all (`limit_exceeded`).

The numbers are settings (environment variables in brackets, amounts in major units of each
currency); a user's own limits (admin CLI `users limits`) override the first three. The day
count lives on the payer's account row, which the charge locks anyway, so two charges racing
over the daily limit are serialised there and cannot both pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from paycode.server.database.models import Account
from paycode.shared.errors import ConfigError
from paycode.shared.money import MAX_AMOUNT_MINOR, Money, currency, format_amount

DAY_S = 86_400


@dataclass(frozen=True)
class LimitSettings:
    """Server defaults, sized after the common wallet norm (about 1,000 per payment). Amounts
    are whole major units and mean the same number in every currency (1000 CNY, 1000 USD)."""

    payment_max: int = 1000  # PAYCODE_PINLESS_PAYMENT_MAX: one payment without the PIN
    daily_max: int = 3000  # PAYCODE_PINLESS_DAILY_MAX: today's password-free total
    daily_count_max: int = 5  # PAYCODE_PINLESS_DAILY_COUNT: today's password-free payments
    code_payment_max: int = 50_000  # PAYCODE_CODE_PAYMENT_MAX: no offline code pays more
    confirm_window_s: int = 120  # PAYCODE_CONFIRM_WINDOW_S: how long a pending payment lives
    day_offset_minutes: int = 480  # PAYCODE_LIMIT_DAY_OFFSET_MINUTES: days start at 00:00 UTC+8

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> LimitSettings:
        """From the environment variables in `env` (ServerConfig.from_env hands them in)."""
        base = cls()
        return cls(
            payment_max=env_integer(env, "PAYCODE_PINLESS_PAYMENT_MAX", base.payment_max),
            daily_max=env_integer(env, "PAYCODE_PINLESS_DAILY_MAX", base.daily_max),
            daily_count_max=env_integer(env, "PAYCODE_PINLESS_DAILY_COUNT", base.daily_count_max),
            code_payment_max=env_integer(env, "PAYCODE_CODE_PAYMENT_MAX", base.code_payment_max),
            confirm_window_s=env_integer(
                env, "PAYCODE_CONFIRM_WINDOW_S", base.confirm_window_s, low=10, high=3600
            ),
            day_offset_minutes=env_integer(
                env,
                "PAYCODE_LIMIT_DAY_OFFSET_MINUTES",
                base.day_offset_minutes,
                low=-720,
                high=840,
            ),
        )

    def day(self, now_s: float) -> int:
        """Today's number (days since 1970-01-01 in the configured time zone)."""
        return math.floor((now_s + self.day_offset_minutes * 60) / DAY_S)

    def defaults_minor(self, currency_code: str) -> DefaultLimits:
        return _defaults_minor(self, currency_code)


@dataclass(frozen=True, slots=True)
class DefaultLimits:
    """LimitSettings in one currency's minor units."""

    payment_max_minor: int
    daily_max_minor: int
    daily_count_max: int
    code_payment_max_minor: int


@lru_cache(maxsize=64)
def _defaults_minor(settings: LimitSettings, currency_code: str) -> DefaultLimits:
    scale = 10 ** currency(currency_code).minor_digits
    return DefaultLimits(
        payment_max_minor=settings.payment_max * scale,
        daily_max_minor=settings.daily_max * scale,
        daily_count_max=settings.daily_count_max,
        code_payment_max_minor=min(settings.code_payment_max * scale, MAX_AMOUNT_MINOR),
    )


def env_integer(
    env: Mapping[str, str], name: str, default: int, *, low: int = 0, high: int = 10**12
) -> int:
    """The whole number setting `name` within low..high, `default` when unset; ConfigError
    naming the setting otherwise (every server setting is read through it)."""
    raw = env.get(name)
    if not raw:
        return default
    text = raw.strip()
    # ASCII digits only: int() also reads "1_0", "+8" and other scripts' digits.
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(f"{name} must be a whole number")
    value = int(text)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return value


@dataclass(frozen=True, slots=True)
class UserLimits:
    """One account's effective limits and today's password-free use."""

    currency: str
    payment_max_minor: int
    daily_max_minor: int
    daily_count_max: int
    today_count: int
    today_minor: int
    custom: bool
    """Whether any limit is the user's own rather than the server default."""


OwnLimits = tuple[int | None, int | None, int | None]
"""An account's own (payment, daily amount, daily count) limits; None: the server default."""


def maxima(defaults: DefaultLimits, own: OwnLimits) -> tuple[int, int, int]:
    """(payment, daily amount, daily count) in force: the account's own where it has them."""
    return (
        defaults.payment_max_minor if own[0] is None else int(own[0]),
        defaults.daily_max_minor if own[1] is None else int(own[1]),
        defaults.daily_count_max if own[2] is None else int(own[2]),
    )


def used_on(day: int, counted: tuple[int, int, int]) -> tuple[int, int]:
    """(count, amount) of password-free payments on `day`, from the account's stored
    (day, count, amount): a count kept for an earlier day is zero today."""
    counted_day, count, spent_minor = counted
    return (count, spent_minor) if counted_day == day else (0, 0)


def needs_confirmation(
    amount_minor: int, in_force: tuple[int, int, int], used: tuple[int, int]
) -> bool:
    """Whether this payment is above a password-free limit (the PostgreSQL charge function
    makes the same comparison in SQL)."""
    payment_max_minor, daily_max_minor, count_max = in_force
    count, spent_minor = used
    return (
        amount_minor > payment_max_minor
        or count + 1 > count_max
        or spent_minor + amount_minor > daily_max_minor
    )


def effective(
    settings: LimitSettings,
    *,
    currency_code: str,
    own: OwnLimits,
    counted: tuple[int, int, int],
    now_s: float,
) -> UserLimits:
    """`own`: the account's overrides; `counted`: its stored (day, count, amount) of
    password-free payments."""
    payment_max_minor, daily_max_minor, count_max = maxima(
        settings.defaults_minor(currency_code), own
    )
    today_count, today_minor = used_on(settings.day(now_s), counted)
    return UserLimits(
        currency=currency_code,
        payment_max_minor=payment_max_minor,
        daily_max_minor=daily_max_minor,
        daily_count_max=count_max,
        today_count=today_count,
        today_minor=today_minor,
        custom=any(value is not None for value in own),
    )


def limits_of(
    session: Session, user_id: str, settings: LimitSettings, now_s: float
) -> list[UserLimits]:
    """The user's effective limits and today's use, one per account (currency)."""
    accounts = session.scalars(
        select(Account)
        .where(Account.owner_kind == "user", Account.owner_id == user_id)
        .order_by(Account.currency)
    ).all()
    return [account_limits(settings, row, now_s) for row in accounts]


def account_limits(settings: LimitSettings, row: Account, now_s: float) -> UserLimits:
    """One account row's effective limits and today's password-free use."""
    return effective(
        settings,
        currency_code=row.currency,
        own=(
            row.pinless_payment_max_minor,
            row.pinless_daily_max_minor,
            row.pinless_daily_count_max,
        ),
        counted=(row.pinless_day, row.pinless_day_count, row.pinless_day_minor),
        now_s=now_s,
    )


def within_pinless(limits: UserLimits, amount_minor: int) -> bool:
    """Whether `amount_minor` may be paid without the PIN under `limits` (needs_confirmation)."""
    in_force = (limits.payment_max_minor, limits.daily_max_minor, limits.daily_count_max)
    return not needs_confirmation(amount_minor, in_force, (limits.today_count, limits.today_minor))


def pinless_reason(limits: UserLimits, amount_minor: int) -> str | None:
    """Which password-free limit `amount_minor` passes, in words for the payer (None: within
    them all). Sent with `pin_required`, so a new user learns the rule where it meets them."""

    def amount(minor: int) -> str:
        return f"{format_amount(Money(minor, limits.currency))} {limits.currency}"

    if amount_minor > limits.payment_max_minor:
        return (
            f"{amount(amount_minor)} is above the {amount(limits.payment_max_minor)} one payment "
            "may be without the PIN"
        )
    if limits.today_count + 1 > limits.daily_count_max:
        return (
            f"{limits.daily_count_max} payments a day are password-free and "
            f"{limits.today_count} were made today"
        )
    if limits.today_minor + amount_minor > limits.daily_max_minor:
        return (
            f"today's password-free total would pass {amount(limits.daily_max_minor)} "
            f"({amount(limits.today_minor)} so far)"
        )
    return None


def limits_json(limits: UserLimits) -> dict[str, object]:
    def amount(minor: int) -> str:
        return format_amount(Money(minor, limits.currency))

    return {
        "currency": limits.currency,
        "payment_max": amount(limits.payment_max_minor),
        "daily_max": amount(limits.daily_max_minor),
        "daily_count_max": limits.daily_count_max,
        "today_count": limits.today_count,
        "today": amount(limits.today_minor),
        "custom": limits.custom,
    }
