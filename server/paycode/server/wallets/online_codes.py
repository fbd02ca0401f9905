"""Codes issued online (docs/spec.md §14): a phone that cannot make a code itself asks the
server for one over the signed wallet API.

The server never makes a code with the phone's own K_dev: the phone could make the same
(step, counter) and one of the two would be refused as replayed. Each requesting device gets,
per version, an *issuer*: an ordinary v1/v2 device row of the same user, with its own random
handle (in the same UNIQUE (version, handle) space) and its own key, sealed under the master
key like any device key and never sent anywhere. Its codes are ordinary codes, so tills,
verification and the claim treat them as any other; the issuer row names the device that
asked (devices.online_for_device_id), so revoking that device revokes its issuers with it
(paycode.server.wallets.devices.revoke) and the charge records the payment under it.

Each code holds a row of online_codes: its primary key (issuer, step, counter) allocates the
counter, so two racing requests never get the same code, and its bound on the counter bounds
how many codes a device can be issued per step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database.models import Device, new_id
from paycode.server.database.online_models import ONLINE_CODES_PER_STEP, OnlineCode
from paycode.server.safety.secretbox import SecretBox
from paycode.server.wallets.devices import HANDLE_ATTEMPTS_MAX
from paycode.shared.codes import ErrorCode
from paycode.shared.enrollment import SYMMETRIC_KEY_BYTES
from paycode.shared.errors import ApiError
from paycode.shared.timestamps import iso_time
from paycode.shared.timestep import STEP_SECONDS, step_at
from paycode.shared.versions.base import DeviceCredential, Flags, VersionStatus, Window
from paycode.shared.versions.registry import by_name

ONLINE_VERSIONS = ("v2", "v1")
"""What the server can issue: the versions whose device key is symmetric (a v3 key is the
phone's own Ed25519 key, which the server never holds). v2 is the default."""
ISSUER_LABEL = "issued online"
LIFETIME_STEPS = 1 + Window().steps_back
"""A code issued at step s pays until the end of step s + 1, as a phone's code made then does
on a clock the server follows (docs/spec.md §2): 30 to 60 s."""


@dataclass(frozen=True, slots=True)
class OnlineRequest:
    version: str
    user_verified: bool


def parse_request(
    body: Mapping[str, Any], statuses: Mapping[str, VersionStatus], *, pin_given: bool
) -> OnlineRequest:
    """The body of POST /v1/wallet/codes without its `pin`: `invalid_request` or
    `version_retired` otherwise. A PIN asks for USER_VERIFIED, which v1 has no room for."""
    unknown = sorted(set(body) - {"version"})
    if unknown:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"unknown field {unknown[0][:32]!r}")
    version = body.get("version", ONLINE_VERSIONS[0])
    if not isinstance(version, str) or version not in ONLINE_VERSIONS:
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"'version' must be one of {', '.join(ONLINE_VERSIONS)}"
        )
    if statuses.get(version, VersionStatus.RETIRED) is VersionStatus.RETIRED:
        raise ApiError(ErrorCode.VERSION_RETIRED, f"code version {version} is retired")
    if pin_given and version == "v1":
        raise ApiError(
            ErrorCode.INVALID_REQUEST, "'pin' needs a v2 code: a v1 code carries no flags"
        )
    return OnlineRequest(version, user_verified=pin_given)


def issuer_for(
    session: Session, caller: Device, version: str, box: SecretBox, now_s: float
) -> Device:
    """The caller's issuer for `version`, made on first use. The UNIQUE indexes decide both a
    handle collision and two first requests racing; the loop is bounded as enrollment's."""
    for _ in range(HANDLE_ATTEMPTS_MAX):
        found = session.scalars(
            select(Device).where(
                Device.online_for_device_id == caller.id, Device.version == version
            )
        ).one_or_none()
        if found is not None:
            return found
        issuer = Device(
            id=new_id("dev"),
            user_id=caller.user_id,
            version=version,
            handle=by_name(version).new_handle(),
            drift_steps=0,
            label=ISSUER_LABEL,
            created_at_s=now_s,
            online_for_device_id=caller.id,
        )
        issuer.key_id, issuer.key_sealed = box.seal(
            os.urandom(SYMMETRIC_KEY_BYTES), row_id=issuer.id
        )
        try:
            with session.begin_nested():
                session.add(issuer)
        except IntegrityError:
            continue
        return issuer
    raise RuntimeError(f"no {version} issuer after {HANDLE_ATTEMPTS_MAX} attempts")


def issue(
    session: Session, caller: Device, wanted: OnlineRequest, box: SecretBox, now_s: float
) -> dict[str, Any]:
    """Allocate one code for the caller: what the idempotency record keeps (no secret: the
    code is rebuilt from it by `render`). `device_revoked` when the caller's issuer was
    revoked; IssueBoundReached past ONLINE_CODES_PER_STEP codes in this step."""
    issuer = issuer_for(session, caller, wanted.version, box, now_s)
    if issuer.revoked_at_s is not None:
        raise ApiError(ErrorCode.DEVICE_REVOKED, "codes issued online to this device are revoked")
    step = step_at(now_s)
    expires_at_s = float((step + LIFETIME_STEPS) * STEP_SECONDS)
    used = session.scalar(
        select(func.max(OnlineCode.counter)).where(
            OnlineCode.issuer_id == issuer.id, OnlineCode.step == step
        )
    )
    first = 0 if used is None else int(used) + 1
    # The primary key decides a race: a counter taken meanwhile is skipped, never shared.
    for counter in range(first, ONLINE_CODES_PER_STEP):
        inserted = session.execute(
            text(
                "INSERT INTO online_codes (issuer_id, step, counter, issued_at_s, expires_at_s)"
                " VALUES (:id, :step, :counter, :now, :expires) ON CONFLICT DO NOTHING"
            ),
            {
                "id": issuer.id,
                "step": step,
                "counter": counter,
                "now": now_s,
                "expires": expires_at_s,
            },
        )
        if inserted.rowcount == 1:  # type: ignore[attr-defined]
            flags = int(Flags.USER_VERIFIED) if wanted.user_verified else 0
            return {
                "issuer_id": issuer.id,
                "step": step,
                "counter": counter,
                "flags": flags,
                "expires_at_s": expires_at_s,
            }
    raise IssueBoundReached((step + 1) * STEP_SECONDS - now_s)


class IssueBoundReached(Exception):
    """Past ONLINE_CODES_PER_STEP codes in this step: a 429 with Retry-After, like every
    rate_limited (docs/api.md), and not an ApiError, so that nothing is stored under the
    Idempotency-Key and the same request is answered once the step has turned."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"at most {ONLINE_CODES_PER_STEP} codes issued online per step")
        self.wait_s = wait_s
        self.detail = f"at most {ONLINE_CODES_PER_STEP} codes issued online per {STEP_SECONDS} s"


def render(
    session: Session,
    issued: Mapping[str, Any],
    box: SecretBox,
    hiding_keys: Mapping[str, bytes],
    now_s: float,
) -> dict[str, object]:
    """The reply to an issued code (first answer or idempotent retry): the code rebuilt from
    the issuer's sealed key, the version's current hiding key and the stored (step, counter)."""
    issuer = session.get(Device, str(issued["issuer_id"]))
    if issuer is None or issuer.revoked_at_s is not None:
        raise ApiError(ErrorCode.DEVICE_REVOKED, "codes issued online to this device are revoked")
    assert issuer.key_id is not None and issuer.key_sealed is not None
    credential = DeviceCredential(
        issuer.version,
        issuer.handle,
        box.open(issuer.key_id, issuer.key_sealed, row_id=issuer.id),
        hiding_keys[issuer.version],
    )
    code = by_name(issuer.version).generate(
        credential,
        step=int(issued["step"]),
        counter=int(issued["counter"]),
        flags=int(issued["flags"]),
    )
    expires_at_s = float(issued["expires_at_s"])
    return {
        "code": code,
        "version": issuer.version,
        "issued_online": True,
        "user_verified": bool(int(issued["flags"]) & Flags.USER_VERIFIED),
        "expires_at": iso_time(expires_at_s),
        "expires_in_s": max(0, int(expires_at_s - now_s)),
    }
