"""A merchant with a dashboard password and a till (the one shop builder's new_merchant), and a
cookie-keeping HTTP client for the dashboard pages of any server, in this process or live
(tests/dashboard/test_dashboard.py; test_dashboard_browser.py drives chromium instead).
"""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import Message

from paycode.server.dashboard import access
from tests.support.in_process import opener
from tests.support.servers import Server
from tests.support.shop import Merchant, new_merchant

DASHBOARD_PASSWORD = "dashboard password 1"
HTTP_TIMEOUT_S = 10.0


def dashboard_merchant(server: Server, prefix: str = "Shop") -> Merchant:
    """A fresh merchant with DASHBOARD_PASSWORD and one terminal (new_merchant)."""
    return new_merchant(server, prefix, dashboard_password=DASHBOARD_PASSWORD)


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
    """Just enough of a browser: cookies, forms, and redirects seen one by one, on `server`
    wherever it runs (tests.support.in_process.opener)."""

    server: Server
    cookies: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def _open(self, path: str, form: dict[str, str] | None) -> Page:
        browser = opener(
            self.server, urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect()
        )
        data = None if form is None else urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(self.server.url + path, data=data)
        try:
            with browser.open(request, timeout=HTTP_TIMEOUT_S) as reply:
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
