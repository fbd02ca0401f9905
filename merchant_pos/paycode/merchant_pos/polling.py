"""A bounded wait for something the server decides (a customer's PIN, an order's payment):
poll it until it ends, the wait runs out, or the cashier stops it (merchant_pos.till,
merchant_pos.present).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from paycode.shared.errors import ServerRejected, ServerUnreachable


class PollWait(Protocol):
    """What a bounded poll needs: ConfirmWait and present.PresentWait both are one."""

    @property
    def wait_s(self) -> float: ...
    @property
    def poll_s(self) -> float: ...
    @property
    def on_waiting(self) -> Callable[[float], None]: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def sleep(self) -> Callable[[float], None]: ...


def poll_until_ended(
    wait: PollWait,
    fetch: Callable[[], dict[str, Any]],
    waiting: Callable[[dict[str, Any]], bool],
    stopped: Callable[[], bool] = lambda: False,
) -> dict[str, Any] | None:
    """`fetch()` every `wait.poll_s` until an answer is no longer `waiting` (returned), or None
    when `wait.wait_s` passes, on Ctrl-C, or once `stopped()`. A poll the server does not
    answer, or refuses, is not an answer: the next poll (or the caller's cancel) is. Bounded:
    ceil(wait/poll) + 1."""
    deadline_s = wait.clock() + wait.wait_s
    try:
        for _poll in range(math.ceil(wait.wait_s / wait.poll_s) + 1):
            remaining_s = deadline_s - wait.clock()
            if remaining_s <= 0 or stopped():
                break
            wait.on_waiting(remaining_s)
            wait.sleep(min(wait.poll_s, remaining_s))
            if stopped():
                break
            try:
                current = fetch()
            except (ServerUnreachable, ServerRejected):
                continue
            if not waiting(current):
                return current
    except KeyboardInterrupt:
        pass
    return None
