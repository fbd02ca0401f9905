"""GET /wallet/: the built web wallet, served from the API's origin with a policy that lets the
page reach this server and nothing else; a clear 404 problem where the app was not built, or
for a name outside it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from paycode.server.http import web_wallet
from tests.support.servers import Server

BUILT = web_wallet.app_dir()


@pytest.fixture
def client(app_sqlite: Server):  # type: ignore[no-untyped-def]
    assert app_sqlite.app is not None  # type: ignore[attr-defined]
    return app_sqlite.app.test_client()  # type: ignore[attr-defined]


def test_the_app_is_served_with_a_strict_content_security_policy(client) -> None:  # type: ignore[no-untyped-def]
    assert (BUILT / "index.html").is_file(), "make webwallet builds the app before the tests"
    page = client.get("/wallet/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert b'<script type="module" src="app.js">' in page.data
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self' 'wasm-unsafe-eval';" in policy
    assert "connect-src 'self'" in policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    wasm = client.get("/wallet/zxing_reader.wasm")
    assert wasm.status_code == 200 and wasm.mimetype == "application/wasm"
    assert page.headers["Cache-Control"] == "no-cache"
    worker = client.get("/wallet/sw.js")
    assert worker.status_code == 200 and worker.mimetype == "text/javascript"
    manifest = client.get("/wallet/manifest.webmanifest")
    assert manifest.mimetype == "application/manifest+json"
    assert json.loads(manifest.data)["start_url"] == "./"


def test_the_service_worker_caches_every_built_file_and_no_api(client) -> None:  # type: ignore[no-untyped-def]
    built = json.loads((BUILT / "build.json").read_text())
    worker = client.get("/wallet/sw.js").get_data(as_text=True)
    assert f"paycode-wallet-{built['version']}" in worker
    listed = re.search(r"^const ASSETS = (\[.*\]);$", worker, re.MULTILINE)
    assert listed is not None
    cached = set(json.loads(listed.group(1)))
    assert cached == {"./"} | set(built["assets"]) - {"index.html", "sw.js"}
    assert not [name for name in cached if "v1" in name or name.startswith("/")]


@pytest.mark.parametrize(
    "name", ["../app.py", "..%2fapp.py", "%2e%2e/app.py", ".hidden", "nope.js"]
)
def test_a_name_outside_the_app_is_a_404_problem(client, name: str) -> None:  # type: ignore[no-untyped-def]
    answer = client.get(f"/wallet/{name}")
    assert answer.status_code == 404
    assert answer.mimetype == "application/problem+json"
    assert answer.get_json()["code"] == "not_found"


def test_an_unbuilt_app_says_how_to_build_it(
    client,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setattr(web_wallet, "app_dir", lambda: tmp_path)
    answer = client.get("/wallet/")
    assert answer.status_code == 404
    assert "make webwallet" in answer.get_json()["detail"]
