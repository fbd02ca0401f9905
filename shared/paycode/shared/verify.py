"""The one verification entry point the server calls for any scanned string."""

from __future__ import annotations

from collections.abc import Mapping

from paycode.shared.versions.base import (
    Accepted,
    Reason,
    Rejected,
    Verification,
    VerifyContext,
    VersionStatus,
)
from paycode.shared.versions.registry import DEFAULT_STATUS, route_device


def verify_code(
    text: str,
    ctx: VerifyContext,
    statuses: Mapping[str, VersionStatus] = DEFAULT_STATUS,
) -> Verification:
    """Route `text` to its version and verify it at `ctx.now_s`.

    Raises CodeMalformed for a string that is not a code; returns Rejected for a code that
    does not pay (invalid, expired, ambiguous, revoked device, retired version).
    """
    codec = route_device(text)
    status = statuses.get(codec.version, VersionStatus.RETIRED)
    if status is VersionStatus.RETIRED:
        detail = f"code version {codec.version} is retired; re-enroll the wallet"
        return Rejected(codec.version, Reason.VERSION_RETIRED, detail)
    result = codec.verify(text, ctx)
    if status is VersionStatus.DEPRECATED and isinstance(result, Accepted):
        return result._replace(deprecated=True)
    return result
