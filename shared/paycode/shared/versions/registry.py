"""The live code versions, routed by their leading characters.

Adding a version is adding a module and one line to `VERSIONS`; no other version changes.
The offline version v4 (docs/offline.md §3) routes like the others but names no device: it is
paid from an allowance's escrow (the server's offline settlement), so it is in `ROUTED` and
`OFFLINE_VERSIONS`, not in `VERSIONS` (what a wallet enrolls a device for).
"""

from __future__ import annotations

from collections.abc import Sequence

from paycode.shared.errors import CodeMalformed
from paycode.shared.versions import v1_numeric, v2_qr, v3_ed25519, v4_offline
from paycode.shared.versions.base import CodeVersion, RoutedVersion, VersionStatus

VERSIONS: tuple[CodeVersion, ...] = (
    v1_numeric.CODEC,
    v2_qr.CODEC,
    v3_ed25519.CODEC,
)

OFFLINE_VERSIONS: tuple[RoutedVersion, ...] = (v4_offline.CODEC,)
"""Versions a till may accept with no line to the server: no device, no enrollment."""
ROUTED: tuple[RoutedVersion, ...] = (*VERSIONS, *OFFLINE_VERSIONS)

DEFAULT_STATUS: dict[str, VersionStatus] = {
    codec.version: VersionStatus.ACTIVE for codec in VERSIONS
}
PREFERRED_VERSION = "v3"
"""What a wallet enrolls when the user does not choose: no secret shared by all phones."""

TEXT_CHARS_MAX = 512
"""No live version is longer; anything longer is refused before any work."""

_BY_NAME = {codec.version: codec for codec in VERSIONS}


def prefixes_disjoint(prefixes: Sequence[str]) -> bool:
    """Whether routing by these prefixes is unambiguous: none starts another."""
    for i, first in enumerate(prefixes):
        for second in prefixes[i + 1 :]:
            if first.startswith(second) or second.startswith(first):
                return False
    return True


def _check_prefixes() -> None:
    """Routing is unambiguous: no version's prefix starts another's."""
    assert prefixes_disjoint([codec.prefix for codec in ROUTED])
    assert len(_BY_NAME) == len(VERSIONS)
    assert len({codec.version for codec in ROUTED}) == len(ROUTED)


_check_prefixes()


def route(text: str) -> RoutedVersion:
    """The version a scanned string belongs to, offline ones included; raises CodeMalformed
    when it is none of ours."""
    if not isinstance(text, str):
        raise CodeMalformed("a payment code is text")
    if len(text) > TEXT_CHARS_MAX:
        raise CodeMalformed(f"a payment code is at most {TEXT_CHARS_MAX} characters")
    for codec in ROUTED:
        if codec.matches(text):
            return codec
    raise CodeMalformed("not a payment code of any live version")


def is_offline(text: str) -> bool:
    """Whether `text` routes to an offline version (whether or not it is well formed)."""
    return isinstance(text, str) and any(codec.matches(text) for codec in OFFLINE_VERSIONS)


def route_device(text: str) -> CodeVersion:
    """The device version a scanned string belongs to; CodeMalformed for an offline code
    (nothing of it names a device) and for what is none of ours."""
    routed = route(text)
    codec = _BY_NAME.get(routed.version)
    if codec is None:
        raise CodeMalformed(
            f"a {routed.version} code is an offline code: it pays from its allowance, "
            "not from a device"
        )
    return codec


def by_name(version: str) -> CodeVersion:
    """The codec called `version` ("v1", "v2", "v3"); raises KeyError naming the choices."""
    codec = _BY_NAME.get(version)
    if codec is None:
        raise KeyError(f"unknown code version {version!r}; live: {', '.join(_BY_NAME)}")
    return codec
