"""The operator's offline settings (docs/offline.md §2.1, §2.3, §4.1; environment variables in
brackets). Amounts are minor units and mean the same number in every currency.

They bound what one allowance, one certificate, one payment and one till can risk; the threat
model (docs/offline.md §7) turns them into the maximum loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from paycode.server.safety.limits import env_integer
from paycode.shared.errors import ConfigError
from paycode.shared.money import MAX_AMOUNT_MINOR
from paycode.shared.offline import COUNT_MAX_LIMIT

CERTIFICATES_PER_ALLOWANCE = 4
"""c: one observer links at most a quarter of a wallet's offline payments (§2.3)."""
LADDER_STEPS_MAX = 16
LIFETIME_S_MIN = 3_600
LIFETIME_S_MAX = 259_200
"""The till's log keeps every code of a certificate this long (its rotation rule)."""


@dataclass(frozen=True)
class OfflineSettings:
    allowances_minor: tuple[int, ...] = (4000, 10000, 20000, 50000)
    """[PAYCODE_OFFLINE_ALLOWANCES_MINOR] the amounts a wallet may set aside: a fixed ladder, so
    a certificate's caps say little about who holds it. Each divisible by 4."""
    per_day: int = 2  # [PAYCODE_OFFLINE_PER_DAY] allowances per user per limit day
    payment_max_minor: int = 10_000  # [PAYCODE_OFFLINE_PAYMENT_MAX_MINOR] p at most
    count: int = 16  # [PAYCODE_OFFLINE_COUNT] n: codes per certificate
    lifetime_s: int = 86_400  # [PAYCODE_OFFLINE_LIFETIME_S] L: a certificate's lifetime
    grace_s: int = 259_200  # [PAYCODE_OFFLINE_GRACE_S] G: sync deadline, then escrow returns
    floor_minor: int = 10_000  # [PAYCODE_OFFLINE_FLOOR_MINOR] F for merchants without their own
    till_total_minor: int = 100_000  # [PAYCODE_OFFLINE_TILL_TOTAL_MINOR] Q: a till's unsynced sum
    till_count_max: int = 200  # [PAYCODE_OFFLINE_TILL_COUNT_MAX] a till's unsynced acceptances
    unsynced_age_max_s: int = 86_400  # [PAYCODE_OFFLINE_UNSYNCED_AGE_MAX_S]
    key_publish_s: int = 172_800
    """[PAYCODE_OFFLINE_KEY_PUBLISH_S] M: a new offline key is published this long before it
    signs, so every till that may sell offline holds it first (§4.1)."""

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> OfflineSettings:
        base = cls()
        settings = cls(
            allowances_minor=_ladder(env, base.allowances_minor),
            per_day=env_integer(env, "PAYCODE_OFFLINE_PER_DAY", base.per_day, high=100),
            payment_max_minor=env_integer(
                env,
                "PAYCODE_OFFLINE_PAYMENT_MAX_MINOR",
                base.payment_max_minor,
                low=1,
                high=MAX_AMOUNT_MINOR,
            ),
            count=env_integer(
                env, "PAYCODE_OFFLINE_COUNT", base.count, low=1, high=COUNT_MAX_LIMIT
            ),
            lifetime_s=env_integer(
                env,
                "PAYCODE_OFFLINE_LIFETIME_S",
                base.lifetime_s,
                low=LIFETIME_S_MIN,
                high=LIFETIME_S_MAX,
            ),
            grace_s=env_integer(
                env, "PAYCODE_OFFLINE_GRACE_S", base.grace_s, low=600, high=2_592_000
            ),
            floor_minor=env_integer(
                env, "PAYCODE_OFFLINE_FLOOR_MINOR", base.floor_minor, high=MAX_AMOUNT_MINOR
            ),
            till_total_minor=env_integer(
                env,
                "PAYCODE_OFFLINE_TILL_TOTAL_MINOR",
                base.till_total_minor,
                high=MAX_AMOUNT_MINOR,
            ),
            till_count_max=env_integer(
                env, "PAYCODE_OFFLINE_TILL_COUNT_MAX", base.till_count_max, high=20_000
            ),
            unsynced_age_max_s=env_integer(
                env,
                "PAYCODE_OFFLINE_UNSYNCED_AGE_MAX_S",
                base.unsynced_age_max_s,
                low=60,
                high=LIFETIME_S_MAX,
            ),
            key_publish_s=env_integer(
                env, "PAYCODE_OFFLINE_KEY_PUBLISH_S", base.key_publish_s, high=2_592_000
            ),
        )
        return settings

    def caps_minor(self, amount_minor: int) -> tuple[int, int]:
        """(per-payment cap p, total cap T) of each certificate of an allowance of this amount."""
        total_cap_minor = amount_minor // CERTIFICATES_PER_ALLOWANCE
        assert total_cap_minor * CERTIFICATES_PER_ALLOWANCE == amount_minor
        return min(total_cap_minor, self.payment_max_minor), total_cap_minor


def _ladder(env: Mapping[str, str], default: tuple[int, ...]) -> tuple[int, ...]:
    name = "PAYCODE_OFFLINE_ALLOWANCES_MINOR"
    raw = env.get(name)
    if not raw:
        return default
    parts = [part.strip() for part in raw.split(",")]
    if not 1 <= len(parts) <= LADDER_STEPS_MAX or not all(part.isdigit() for part in parts):
        raise ConfigError(f"{name} is 1-{LADDER_STEPS_MAX} whole numbers, comma-separated")
    amounts = tuple(sorted({int(part) for part in parts}))
    for amount in amounts:
        if amount <= 0 or amount % CERTIFICATES_PER_ALLOWANCE or amount > 4 * (2**32 - 1):
            raise ConfigError(
                f"{name}: {amount} must be positive and divisible by {CERTIFICATES_PER_ALLOWANCE}"
            )
    return amounts
