"""Time steps. Time is always a parameter (seconds since the Unix epoch), never read here."""

from __future__ import annotations

STEP_SECONDS = 30
"""Every live version uses 30 s steps: a code shows for one step and is accepted for one more."""


def step_at(unix_s: float, step_seconds: int = STEP_SECONDS) -> int:
    """The step that contains `unix_s`."""
    assert step_seconds > 0
    return int(unix_s // step_seconds)


def step_start_s(step: int, step_seconds: int = STEP_SECONDS) -> int:
    """First second of `step`."""
    return step * step_seconds


def seconds_left_in_step(unix_s: float, step_seconds: int = STEP_SECONDS) -> float:
    """How long the code made at `unix_s` keeps showing before the wallet refreshes it."""
    return step_seconds - (unix_s % step_seconds)
