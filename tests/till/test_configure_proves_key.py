"""`paycode-pos configure` proves the terminal key with one signed call before saving (issue 20,
item 4): a wrong key id or secret is refused with the server's code and nothing is saved, so the
mistake shows at the counter's set-up, not at the first sale. An unreachable server is refused
too, unless `--offline` says to save without checking.

The command runs in this process (its output and the file it writes are the subject) over real
HTTP to a live server, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from paycode.merchant_pos import settings
from tests.support.servers import Server, free_port, run_in_process
from tests.support.shop import POS_MODULE, Merchant, new_merchant, new_terminal, person_env


def _configure(
    home: Path, url: str, key_id: str, secret: bytes, *extra: str, json_: bool = True
) -> subprocess.CompletedProcess[str]:
    env = person_env() | {"PAYCODE_POS_HOME": str(home)}
    output = ["--json"] if json_ else []
    return run_in_process(
        POS_MODULE,
        env,
        *(*output, "configure", "--server", url, "--key-id", key_id, "--secret-stdin", *extra),
        stdin=base64.b64encode(secret).decode() + "\n",
    )


def _refused(done: subprocess.CompletedProcess[str], code: str, home: Path) -> dict[str, Any]:
    """The command failed with `code`, saved nothing and showed no secret."""
    assert done.returncode == 1, done.stdout + done.stderr
    error: dict[str, Any] = json.loads(done.stdout)["error"]
    assert error["code"] == code, error
    assert "nothing was saved" in error["message"]
    assert not (home / settings.SETTINGS_FILE).exists()
    return error


@pytest.fixture
def merchant(live_server: Server) -> Merchant:
    return new_merchant(live_server, "Keyed Cafe")


def test_the_right_key_is_checked_with_the_server_and_saved(
    live_server: Server, merchant: Merchant, tmp_path: Path
) -> None:
    done = _configure(tmp_path, live_server.url, merchant.key_id, merchant.secret)
    assert done.returncode == 0, done.stdout + done.stderr
    reply = json.loads(done.stdout)
    assert reply["checked"] is True and reply["currency"] == "CNY"
    assert reply["merchant"]["merchant_id"] == merchant.merchant_id
    assert reply["merchant"]["name"] == merchant.name
    saved = settings.load(tmp_path)
    assert (saved.key_id, saved.secret) == (merchant.key_id, merchant.secret)
    assert base64.b64encode(merchant.secret).decode() not in done.stdout + done.stderr
    human = _configure(tmp_path, live_server.url, merchant.key_id, merchant.secret, json_=False)
    assert human.returncode == 0, human.stderr
    assert f"key checked: it collects for {merchant.name} in CNY" in human.stdout


def test_a_wrong_secret_is_refused_with_the_servers_code_and_nothing_is_saved(
    live_server: Server, merchant: Merchant, tmp_path: Path
) -> None:
    other = new_terminal(live_server, merchant)  # a real secret, of another key
    done = _configure(tmp_path, live_server.url, merchant.key_id, other.secret)
    error = _refused(done, "unauthorized", tmp_path)
    assert "signature" in error["message"]
    for secret in (merchant.secret, other.secret):
        assert base64.b64encode(secret).decode() not in done.stdout + done.stderr


def test_an_unknown_key_id_is_refused_with_the_servers_code_and_nothing_is_saved(
    live_server: Server, merchant: Merchant, tmp_path: Path
) -> None:
    done = _configure(tmp_path, live_server.url, "term_does_not_exist", merchant.secret)
    _refused(done, "unauthorized", tmp_path)


def test_a_till_outside_the_merchants_allowed_addresses_is_refused_forbidden_at_set_up(
    live_server: Server, tmp_path: Path
) -> None:
    fenced = new_merchant(live_server, "Fenced Cafe", allow_ips=["203.0.113.0/24"])
    done = _configure(tmp_path, live_server.url, fenced.key_id, fenced.secret)
    _refused(done, "forbidden", tmp_path)


def test_a_currency_other_than_the_merchants_is_refused_and_nothing_is_saved(
    live_server: Server, merchant: Merchant, tmp_path: Path
) -> None:
    done = _configure(
        tmp_path, live_server.url, merchant.key_id, merchant.secret, "--currency", "USD"
    )
    error = _refused(done, "currency_mismatch", tmp_path)
    assert "USD" in error["message"] and "CNY" in error["message"]


def test_an_unreachable_server_is_refused_unless_offline_is_asked(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    secret = os.urandom(32)
    error = _refused(_configure(tmp_path, nobody, "term_x", secret), "server_unreachable", tmp_path)
    assert "--offline" in error["message"]
    done = _configure(tmp_path, nobody, "term_x", secret, "--offline", "--currency", "EUR")
    assert done.returncode == 0, done.stdout + done.stderr
    reply = json.loads(done.stdout)
    assert reply["checked"] is False and reply["merchant"] is None and reply["currency"] == "EUR"
    assert settings.load(tmp_path).secret == secret


def test_offline_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "pos.md").read_text(encoding="utf-8")
    assert "--offline" in doc and "GET /v1/merchant" in doc
