"""Where a notification may be sent: public addresses only, unless the operator says otherwise.

A notify URL is the one place a merchant (or whoever holds its settings) makes this server send
requests. Pointed at 127.0.0.1, at a private network or at 169.254.169.254 (a cloud's metadata
service), the worker would carry signed POSTs into the operator's own network. So a URL whose
host is such an address is refused when it is set (admin.check_notify_url), and at delivery
the name is resolved once, every address it resolves to is checked, and the connection goes to
an address that passed: a name that resolves to a public address when set and to a private
one later (DNS rebinding) is refused then. PAYCODE_NOTIFY_ALLOW_PRIVATE=1 is the operator's
override for receivers on a private network (docs/operations.md).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from collections.abc import Mapping
from typing import Any, Final

ALLOW_PRIVATE_ENV: Final = "PAYCODE_NOTIFY_ALLOW_PRIVATE"
ADDRESSES_MAX: Final = 16
"""Addresses of one name looked at: a name with more is refused, not walked."""
REFUSED: Final = (
    f"the notify URL's host is a loopback, private, link-local or otherwise non-public "
    f"address; set {ALLOW_PRIVATE_ENV}=1 if notifications go to a private network"
)
LOCAL_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def allow_private(env: Mapping[str, str]) -> bool:
    """The override, read the way every setting is (ServerConfig.from_env hands `env` in)."""
    return env.get(ALLOW_PRIVATE_ENV, "").strip().lower() in {"1", "true", "yes"}


def non_public(address: Address) -> bool:
    """Loopback, private, link-local, multicast, reserved, unspecified or shared (CGNAT), also
    when written as an IPv4-mapped IPv6 address (::ffff:127.0.0.1)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        not address.is_global
        or address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def literal_refused(host: str) -> bool:
    """At configuration time: a host that is such an address written out, or a local name.
    Other names are resolved at delivery (their addresses may change; nothing is resolved
    now, when the receiver may not even exist yet)."""
    name = host.strip("[]").rstrip(".").lower()
    if name in LOCAL_NAMES or name.endswith(".localhost"):
        return True
    try:
        return non_public(ipaddress.ip_address(name.split("%", 1)[0]))
    except ValueError:
        return False


class PrivateDestination(OSError):
    """The name resolved to an address notifications may not go to: no connection was made."""

    def __init__(self) -> None:
        super().__init__(REFUSED)
        self.strerror = REFUSED


def checked_connection(
    address: tuple[str, int], timeout: Any = None, source_address: Any = None
) -> socket.socket:
    """socket.create_connection, but every address the host resolves to must be public, and
    the socket is connected to one of those same addresses (never resolved twice)."""
    host, port = address
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[: ADDRESSES_MAX + 1]
    if not found or len(found) > ADDRESSES_MAX:
        raise PrivateDestination
    if any(non_public(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])) for info in found):
        raise PrivateDestination
    failure: OSError | None = None
    for family, kind, protocol, _name, target in found:
        sock = socket.socket(family, kind, protocol)
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            if source_address is not None:
                sock.bind(source_address)
            sock.connect(target)
        except OSError as error:
            sock.close()
            failure = error
            continue
        return sock
    assert failure is not None
    raise failure


class _CheckedHTTP(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = checked_connection


class _CheckedHTTPS(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = checked_connection


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_CheckedHTTP, req)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        # As urllib's own: Python 3.11 still hands its check_hostname on, 3.12 has none
        options: dict[str, Any] = {"context": getattr(self, "_context", None)}
        if hasattr(self, "_check_hostname"):
            options["check_hostname"] = self._check_hostname
        return self.do_open(_CheckedHTTPS, req, **options)


def public_only_handlers() -> list[urllib.request.BaseHandler]:
    """urllib handlers that connect to public addresses only (they replace its own), and no
    proxy: through a proxy the address checked would be the proxy's, not the receiver's."""
    return [urllib.request.ProxyHandler({}), _CheckedHTTPHandler(), _CheckedHTTPSHandler()]
