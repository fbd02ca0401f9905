"""How Paycode writes a moment: UTC, whole seconds, ISO 8601 with a `Z` (2026-12-03T21:00:00Z).

Every time the API, the notifications, the settlement files and the CLIs show is written by
`iso_time`; the moment is a parameter (Unix seconds), never read from a clock here.
"""

from __future__ import annotations

import datetime as dt

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso_time(unix_s: float) -> str:
    """`unix_s` in UTC to the second (the fraction is dropped, as the API has always shown)."""
    return dt.datetime.fromtimestamp(int(unix_s // 1), dt.UTC).strftime(ISO_FORMAT)
