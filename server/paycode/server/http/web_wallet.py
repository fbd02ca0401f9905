"""/wallet/: the installable web wallet, served from the API's own origin.

The app is built from webwallet/ (`make webwallet`: esbuild bundles it and our npm
dependencies into paycode/server/wallet_app/). This blueprint only serves those files, with a
Content-Security-Policy that lets the page talk to this server and nothing else: no CDN, no
font service, no inline script or style, no eval ('wasm-unsafe-eval' admits only compiling
WebAssembly: the QR reader, ZXing, served from here). The service worker (sw.js) caches the
app so it starts in airplane mode; it never caches an API answer, and a code is never in a URL.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

bp = Blueprint("web_wallet", __name__, url_prefix="/wallet")

APP_PACKAGE_DIR = "wallet_app"
INDEX = "index.html"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
    "img-src 'self' data: blob:; "
    "connect-src 'self'; manifest-src 'self'; worker-src 'self'; media-src 'self' blob:; "
    "font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # The camera is used to scan a merchant's QR; nothing else is granted.
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=(), payment=()",
    # Always revalidated: a new build reaches the page at its next online start. The
    # service worker, not the HTTP cache, keeps the app for offline starts.
    "Cache-Control": "no-cache",
}
MEDIA_TYPES = {
    ".webmanifest": "application/manifest+json",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".html": "text/html",
    ".json": "application/json",
    ".wasm": "application/wasm",
}


def app_dir() -> Path:
    """Where the built app lies: package data beside this server (absent until built)."""
    return Path(str(resources.files("paycode.server").joinpath(APP_PACKAGE_DIR)))


@bp.after_request
def _harden(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/")
def index() -> Response:
    return _send(INDEX)


@bp.get("/<path:name>")
def asset(name: str) -> Response:
    return _send(name)


def _send(name: str) -> Response:
    folder = app_dir()
    if not (folder / INDEX).is_file():
        raise ApiError(
            ErrorCode.NOT_FOUND,
            "the web wallet is not built on this server: run `make webwallet` in the source tree",
        )
    if not (folder / name).is_file() or name.startswith("."):
        raise ApiError(ErrorCode.NOT_FOUND, "no such file in the web wallet")
    media_type = MEDIA_TYPES.get(Path(name).suffix, "application/octet-stream")
    # send_from_directory refuses any name that leaves the folder (../, absolute paths).
    return send_from_directory(folder, name, mimetype=media_type, max_age=0)
