"""A merchant with a dashboard password and a till, and a cookie-keeping HTTP client for the
dashboard pages (tests/test_dashboard.py over HTTP, tests/test_dashboard_browser.py in chromium).
"""

from __future__ import annotations

import http.cookiejar
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import Message

from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.config import ServerConfig
from paycode.server.dashboard import access
from paycode.server.operations import admin
from paycode.server.safety.secretbox import SecretBox
from tests.support.servers import LiveServer
from tests.support.shop import unique

DASHBOARD_PASSWORD = "dashboard password 1"
HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Shop:
    name: str
    merchant_id: str
    till: TerminalClient


def open_shop(server: LiveServer, prefix: str = "Shop") -> Shop:
    """A fresh merchant with DASHBOARD_PASSWORD and one terminal, made in-process as
    `merchants create`, `merchants set-password` and `terminals create` make them."""
    name = unique(prefix)
    box = SecretBox.from_config(ServerConfig.from_env(server.env))
    with server.session() as session:
        merchant = admin.create_merchant(session, name, "CNY", now_s=time.time())
        access.set_password(session, merchant.id, DASHBOARD_PASSWORD)
        terminal, secret = admin.create_terminal(session, box, name, time.time())
        merchant_id, key_id = merchant.id, terminal.id
    return Shop(name, merchant_id, TerminalClient(server.url, key_id, secret, sleep=lambda _s: 0))


@dataclass(frozen=True)
class Page:
    status: int
    body: str
    headers: Message
    url: str

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([0-9a-f]{64})"', self.body)
        assert found is not None, "no CSRF token on the page"
        return found.group(1)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


@dataclass
class Browser:
    """Just enough of a browser: cookies, forms, and redirects seen one by one."""

    base_url: str
    cookies: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def _open(self, path: str, form: dict[str, str] | None) -> Page:
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect
        )
        data = None if form is None else urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(self.base_url + path, data=data)
        try:
            with opener.open(request, timeout=HTTP_TIMEOUT_S) as reply:
                return Page(reply.status, reply.read().decode(), reply.headers, path)
        except urllib.error.HTTPError as error:
            body = error.read().decode()
            return Page(error.code, body, error.headers, path)

    def get(self, path: str) -> Page:
        return self._open(path, None)

    def post(self, path: str, form: dict[str, str]) -> Page:
        return self._open(path, form)

    def follow(self, page: Page) -> Page:
        """The page a 302/303 points at (GET), as a browser would load it."""
        assert page.status in (302, 303), (page.status, page.body[:300])
        location = page.headers["Location"]
        return self.get(urllib.parse.urlsplit(location).path + _query(location))

    def log_in(self, name: str, password: str = DASHBOARD_PASSWORD) -> Page:
        return self.post("/dashboard/login", {"name": name, "password": password})

    def session_cookie(self) -> http.cookiejar.Cookie | None:
        for cookie in self.cookies:
            if cookie.name == access.COOKIE_NAME:
                return cookie
        return None


def _query(url: str) -> str:
    query = urllib.parse.urlsplit(url).query
    return f"?{query}" if query else ""
