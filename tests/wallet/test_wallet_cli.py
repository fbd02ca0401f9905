"""The `paycode-wallet` console script, run as a person would type it, against the real server.

One wallet is enrolled per module (password piped on stdin) on the app in this process; each
test then runs the script and checks what it prints, writes and exits with. The script's
main(argv) runs in this process (tests/support/servers.py, run_in_process): that is the only
way to reach the in-process server, and what it prints is the subject. Its codes are judged on
the server's own rows (tests/support/wallet_server.py). The console script as a process of its
own, over real HTTP to live servers on SQLite and on PostgreSQL, is
test_console_script_over_real_http (the wallet's wire) and
test_read_only_command_on_empty_home_creates_nothing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from paycode.appkit import rendering as render
from paycode.appkit.decoding import decode_image_file
from paycode.client.keystore import KEYSTORE_NAME, PASSPHRASE_ENV, SCRYPT_N, Keystore
from paycode.client.wallet import Wallet
from paycode.server.database.models import Device, User
from paycode.shared.binding import charging_point_bindings
from paycode.shared.emv.collection import CollectionCode, build_collection_payload
from paycode.shared.versions.base import (
    Accepted,
    Flags,
    Reason,
    Rejected,
    Verification,
)
from tests.support.servers import (
    Server,
    run_command,
    run_in_process,
    start_server,
)
from tests.support.shop import PASSWORD, charge, new_till, new_user
from tests.support.wallet_server import Verifier, closed_port_url, intercepted, json_edit

PASSPHRASE = "cli test passphrase 7f3a"
TOP_UP = "100.00"
SUBCOMMANDS = [
    "enroll", "code", "balance", "history", "pay", "status", "devices", "revoke", "rotate",
    "reenroll",
]  # fmt: skip
SERVER_ENV = {"PAYCODE_VERSION_STATUSES_TTL_S": "0"}
"""The app in this process reads the code-version statuses on every request: a lifecycle
change (test_reenroll_advice_...) shows in the next answer."""


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        data = json.loads(self.stdout)
        assert isinstance(data, dict)
        return data


OUTPUTS: list[Run] = []
"""Every run of this module, so the last test can check that no secret was ever printed."""


def wallet_env(passphrase: str = PASSPHRASE) -> dict[str, str]:
    """A clean PAYCODE_* environment with the wallet's passphrase."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    env[PASSPHRASE_ENV] = passphrase
    return env


def kept(args: tuple[str, ...], done: subprocess.CompletedProcess[str]) -> Run:
    run = Run(args, done.returncode, done.stdout, done.stderr)
    OUTPUTS.append(run)
    return run


def wallet_cli(
    home: Path, *args: str, stdin: str | None = None, passphrase: str = PASSPHRASE
) -> Run:
    """`paycode-wallet --home HOME ARGS`, its main(argv) in this process; never raises on
    failure."""
    env = wallet_env(passphrase)
    done = run_in_process("paycode.client.cli", env, "--home", str(home), *args, stdin=stdin)
    return kept(args, done)


def wallet_process(home: Path, *args: str, stdin: str | None = None) -> Run:
    """The same command, the console script as a process of its own."""
    command = [sys.executable, "-m", "paycode.client.cli", "--home", str(home), *args]
    return kept(args, run_command(command, wallet_env(), stdin))


def assert_error(run: Run, code: str) -> None:
    assert run.returncode == 1, run
    assert f"error [{code}]" in run.stderr, run
    assert "Traceback" not in run.stderr + run.stdout
    assert run.stdout == ""


@pytest.fixture(scope="module")
def app_sqlite() -> Iterator[Server]:
    """tests.support.servers's app_sqlite, reading the version statuses on every request."""
    with start_server("sqlite", where="in_process", extra_env=SERVER_ENV) as server:
        yield server


@pytest.fixture(scope="module")
def verifier(app_sqlite: Server) -> Verifier:
    return Verifier(app_sqlite)


@dataclass(frozen=True)
class Enrolled:
    home: Path
    user: str
    run: Run


@pytest.fixture(scope="module")
def enrolled(app_sqlite: Server, tmp_path_factory: pytest.TempPathFactory) -> Enrolled:
    home = tmp_path_factory.mktemp("cli") / "wallet"
    user = new_user(app_sqlite, "alice", TOP_UP)
    run = wallet_cli(
        home,
        "enroll",
        "--server",
        app_sqlite.url,
        "--user",
        user,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert run.returncode == 0, run
    return Enrolled(home, user, run)


def device_ids_of(server: Server, user: str) -> set[str]:
    """The ids of every device the server enrolled for `user`."""
    with server.session() as session:
        ids = session.scalars(select(Device.id).join(User).where(User.name == user))
        return set(ids)


def open_wallet(home: Path) -> Wallet:
    """The script's wallet, opened here with the same passphrase (no env needed)."""
    store, document = Keystore.open(home / KEYSTORE_NAME, PASSPHRASE.encode())
    return Wallet(home, store, document)


def verified(verifier: Verifier, text: str, version: str, home: Path) -> Accepted:
    result = verifier.verify(text)
    assert isinstance(result, Accepted), result
    assert result.version == version
    assert result.device.device_id == open_wallet(home).enrollment(version).device_id
    return result


# --- enroll and status ----------------------------------------------------------------------


def test_enroll_prints_every_version(enrolled: Enrolled, app_sqlite: Server) -> None:
    line = enrolled.run.stdout.strip()
    assert line.startswith(f"enrolled {enrolled.user} at {app_sqlite.url}: ")
    device_ids = re.findall(r"(v[123]) \((dev_[0-9a-f]+)\)", line)
    assert [version for version, _ in device_ids] == ["v1", "v2", "v3"]
    assert {device_id for _, device_id in device_ids} == device_ids_of(app_sqlite, enrolled.user)
    assert re.search(r"clock offset [+-]\d+\.\d s$", line)
    assert enrolled.run.stderr == ""
    envelope = json.loads((enrolled.home / KEYSTORE_NAME).read_bytes())
    assert envelope["kdf"]["n"] == SCRYPT_N  # the console script writes the real cost


def test_enroll_again_asks_and_replace_revokes_what_it_replaces(
    app_sqlite: Server, tmp_path: Path
) -> None:
    """Re-running enroll replaced the keys silently and left the old devices live."""
    user = new_user(app_sqlite, "again", TOP_UP)
    home = tmp_path / "wallet"
    enroll = ("enroll", "--server", app_sqlite.url, "--user", user, "--password-stdin")
    first = wallet_cli(home, *enroll, stdin=PASSWORD + "\n")
    assert first.returncode == 0, first
    old_ids = device_ids_of(app_sqlite, user)
    again = wallet_cli(home, *enroll, stdin=PASSWORD + "\n")
    assert_error(again, "already_enrolled")
    assert "enroll --replace" in again.stderr and device_ids_of(app_sqlite, user) == old_ids
    replaced = wallet_cli(home, "--json", *enroll, "--replace", stdin=PASSWORD + "\n")
    assert replaced.returncode == 0, replaced
    assert set(replaced.json()["revoked"]) == old_ids
    with app_sqlite.session() as session:
        rows = session.scalars(select(Device).join(User).where(User.name == user)).all()
        live = {row.id for row in rows if row.revoked_at_s is None}
    assert live == {item["device_id"] for item in replaced.json()["enrolled"]}
    assert not live & old_ids and len(live) == 3


def test_status_human_and_json(enrolled: Enrolled, app_sqlite: Server) -> None:
    human = wallet_cli(enrolled.home, "status")
    assert human.returncode == 0, human
    assert f"server: {app_sqlite.url}  user: {enrolled.user}" in human.stdout
    for version in ("v1", "v2", "v3"):
        assert re.search(rf"^{version}: device dev_[0-9a-f]+$", human.stdout, re.MULTILINE)
    data = wallet_cli(enrolled.home, "status", "--json").json()
    assert data["ok"] is True
    assert (data["server"], data["user"]) == (app_sqlite.url, enrolled.user)
    assert sorted(data["enrolled"]) == ["v1", "v2", "v3"]
    assert set(data["enrolled"].values()) <= device_ids_of(app_sqlite, enrolled.user)


# --- code -----------------------------------------------------------------------------------


def test_code_human_output_groups_digits_in_fours(enrolled: Enrolled, verifier: Verifier) -> None:
    run = wallet_cli(enrolled.home, "code")
    assert run.returncode == 0, run
    shown = run.stdout.strip()
    assert re.fullmatch(r"87\d\d( \d{4}){5}", shown), shown
    verified(verifier, shown.replace(" ", ""), "v1", enrolled.home)


@pytest.mark.parametrize(
    "args",
    [
        ("code", "--json"),
        ("--json", "code", "--version", "v2"),
        ("code", "--version", "v3", "--json"),
    ],
)
def test_code_json_verifies_with_the_server_keys(
    enrolled: Enrolled, verifier: Verifier, args: tuple[str, ...]
) -> None:
    version = args[args.index("--version") + 1] if "--version" in args else "v1"
    data = wallet_cli(enrolled.home, *args).json()
    assert data["ok"] is True
    assert (data["version"], data["files"]) == (version, [])
    assert data["symbology"] == ("numeric" if version == "v1" else "qr")
    assert 0 < data["refresh_in_s"] <= 30
    verified(verifier, data["code"], version, enrolled.home)


def test_consecutive_cli_codes_are_distinct(enrolled: Enrolled, verifier: Verifier) -> None:
    texts = [wallet_cli(enrolled.home, "--json", "code").json()["code"] for _ in range(2)]
    assert texts[0] != texts[1]
    claims = {verified(verifier, text, "v1", enrolled.home).claim_key for text in texts}
    assert len(claims) == 2


def test_code_png_v3_decodes_to_the_same_text(
    enrolled: Enrolled, verifier: Verifier, tmp_path: Path
) -> None:
    png = tmp_path / "v3.png"
    data = wallet_cli(enrolled.home, "code", "--version", "v3", "--png", str(png), "--json").json()
    assert data["files"] == [str(png)]
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    decoded = decode_image_file(png)
    assert [(d.format, d.text) for d in decoded] == [("qr", data["code"])]
    assert data["code"].startswith("hQVDUFY")
    verified(verifier, data["code"], "v3", enrolled.home)


def test_code_png_v1_also_writes_a_code128_barcode(enrolled: Enrolled, tmp_path: Path) -> None:
    png = tmp_path / "numeric.png"
    run = wallet_cli(enrolled.home, "code", "--png", str(png))
    assert run.returncode == 0, run
    barcode = tmp_path / "numeric.code128.png"
    lines = run.stdout.strip().splitlines()
    assert lines[1:] == [f"wrote {png}", f"wrote {barcode}"]
    digits = lines[0].replace(" ", "")
    assert len(digits) == 24 and digits.isdigit()
    assert [(d.format, d.text) for d in decode_image_file(png)] == [("qr", digits)]
    assert [(d.format, d.text) for d in decode_image_file(barcode)] == [("code128", digits)]


# --- online ---------------------------------------------------------------------------------


def test_balance_and_history(enrolled: Enrolled, app_sqlite: Server) -> None:
    till = new_till(app_sqlite)
    code = wallet_cli(enrolled.home, "--json", "code").json()["code"]
    paid = charge(till, code, "3.20")
    before = wallet_cli(enrolled.home, "balance", "--json").json()
    accounts = before["accounts"]
    assert before == {"ok": True, "accounts": accounts}
    assert [(a["currency"], a["balance"]) for a in accounts] == [("CNY", "96.80")]
    assert wallet_cli(enrolled.home, "balance").stdout == "96.80 CNY\n"
    with intercepted(app_sqlite) as exchanges:
        history = wallet_cli(enrolled.home, "history", "--limit", "5")
        items = wallet_cli(enrolled.home, "--json", "history").json()["items"]
    assert [(i["payment_id"], i["amount"], i["status"]) for i in items] == [
        (paid["payment_id"], "3.20", "succeeded")
    ]
    merchant = items[0]["merchant"]
    assert merchant.startswith("Cafe_")
    assert history.stdout == f"{items[0]['created_at']}  3.20  CNY  succeeded  {merchant}\n"
    signed = [seen for seen in exchanges if seen.method == "GET" and seen.status == 200]
    assert "/v1/wallet/history?limit=5" in [seen.path for seen in signed]
    v1_device = open_wallet(enrolled.home).enrollment("v1").device_id
    assert {seen.headers["Paycode-Device"] for seen in signed} == {v1_device}


def set_version(server: Server, action: str, version: str) -> None:
    done = server.cli_in_process("versions", action, version)
    assert done.returncode == 0, done.stdout + done.stderr


def test_reenroll_advice_is_shown_on_stderr_and_in_json(
    enrolled: Enrolled, app_sqlite: Server
) -> None:
    """The server's advice once v1 (the device this wallet signs with) is deprecated; and the
    same answer with escape codes in its reason, edited in on its way back (no honest server
    sends one), which must never reach a terminal."""
    balance = wallet_cli(enrolled.home, "balance", "--json").json()["accounts"]
    advice = {"version": "v3", "reason": "code version v1 is deprecated"}

    def hostile(body: dict[str, Any]) -> None:
        body["reenroll"] = dict(advice, reason="deprecated\x1b[2J")

    set_version(app_sqlite, "deprecate", "v1")
    try:
        human = wallet_cli(enrolled.home, "balance")
        as_json = wallet_cli(enrolled.home, "balance", "--json")
        history = wallet_cli(enrolled.home, "--json", "history")
        with intercepted(app_sqlite, json_edit("GET", "/v1/wallet/balance", hostile)):
            ignored = wallet_cli(enrolled.home, "balance")
    finally:
        set_version(app_sqlite, "activate", "v1")
    shown = f"{balance[0]['balance']} CNY\n"
    assert human.returncode == 0 and human.stdout == shown  # the answer is unchanged
    assert human.stderr == (
        "notice: code version v1 is deprecated; re-enroll on v3: paycode-wallet reenroll\n"
    )
    assert as_json.json() == {"ok": True, "accounts": balance, "reenroll": advice}
    assert as_json.stderr == ""
    assert history.json()["reenroll"] == advice
    assert ignored.returncode == 0 and ignored.stdout == shown
    assert ignored.stderr == ""  # no escape codes reach a terminal
    quiet = wallet_cli(enrolled.home, "balance", "--json")
    assert "reenroll" not in quiet.json()


# --- merchant-bound codes -------------------------------------------------------------------

CAFE = CollectionCode(
    merchant_id="mer_cafe",
    merchant_name="Corner Cafe",
    merchant_city="Shanghai",
    currency="CNY",
    terminal_id="term_1",
)


def charged_at(verifier: Verifier, text: str, merchant_id: str, terminal_id: str) -> Verification:
    """The server's verdict on `text` from terminal `terminal_id` of `merchant_id`, now."""
    return verifier.verify(text, bindings=charging_point_bindings(merchant_id, terminal_id))


def assert_bound_to_cafe_till(verifier: Verifier, text: str) -> None:
    result = charged_at(verifier, text, "mer_cafe", "term_1")
    assert isinstance(result, Accepted) and result.flags & Flags.MERCHANT_BOUND
    for merchant_id, terminal_id in (("mer_cafe", "term_2"), ("mer_shop", "term_1")):
        elsewhere = charged_at(verifier, text, merchant_id, terminal_id)
        assert isinstance(elsewhere, Rejected) and elsewhere.reason is Reason.MERCHANT_MISMATCH


def test_code_bound_by_payload(enrolled: Enrolled, verifier: Verifier) -> None:
    payload = build_collection_payload(CAFE)
    data = wallet_cli(enrolled.home, "code", "--bind-payload", payload, "--json").json()
    assert data["version"] == "v3"  # the default for a bound code: v1 cannot be bound
    assert data["bound_to"] == {
        "merchant_id": "mer_cafe",
        "merchant_name": "Corner Cafe",
        "terminal_id": "term_1",
    }
    assert_bound_to_cafe_till(verifier, data["code"])
    human = wallet_cli(enrolled.home, "code", "--version", "v2", "--bind-payload", payload)
    assert human.returncode == 0, human
    text, bound_line = human.stdout.strip().splitlines()
    assert bound_line == "bound to Corner Cafe (mer_cafe, terminal term_1): pays nowhere else"
    assert_bound_to_cafe_till(verifier, text)


def test_code_bound_by_poster_image(enrolled: Enrolled, verifier: Verifier, tmp_path: Path) -> None:
    poster = tmp_path / "collection.png"
    render.save_png(render.qr_image(build_collection_payload(CAFE)), poster)
    data = wallet_cli(enrolled.home, "--json", "code", "--bind-qr", str(poster)).json()
    assert data["bound_to"]["merchant_id"] == "mer_cafe"
    assert_bound_to_cafe_till(verifier, data["code"])


def test_merchant_only_collection_binds_to_every_till(
    enrolled: Enrolled, verifier: Verifier
) -> None:
    payload = build_collection_payload(CollectionCode("mer_cafe", "Corner Cafe", "Shanghai", "CNY"))
    data = wallet_cli(enrolled.home, "code", "--bind-payload", payload, "--json").json()
    assert data["bound_to"]["terminal_id"] is None
    for terminal_id in ("term_1", "term_2"):
        assert isinstance(charged_at(verifier, data["code"], "mer_cafe", terminal_id), Accepted)
    shop = charged_at(verifier, data["code"], "mer_shop", "term_1")
    assert isinstance(shop, Rejected) and shop.reason is Reason.MERCHANT_MISMATCH


def test_binding_errors(enrolled: Enrolled, tmp_path: Path) -> None:
    payload = build_collection_payload(CAFE)
    v1 = wallet_cli(enrolled.home, "code", "--version", "v1", "--bind-payload", payload)
    assert_error(v1, "binding_unsupported")
    assert "v2 or v3" in v1.stderr
    assert_error(wallet_cli(enrolled.home, "code", "--bind-payload", "hello"), "code_malformed")
    blank = tmp_path / "blank.png"
    render.save_png(render.qr_image("x").point(lambda _v: 255), blank)
    assert_error(wallet_cli(enrolled.home, "code", "--bind-qr", str(blank)), "qr_not_found")
    both = wallet_cli(enrolled.home, "code", "--bind-qr", str(blank), "--bind-payload", payload)
    assert both.returncode == 2 and "not allowed with" in both.stderr


# --- errors ---------------------------------------------------------------------------------


def test_code_on_an_empty_home_is_not_enrolled(tmp_path: Path) -> None:
    assert_error(wallet_cli(tmp_path / "empty", "code"), "not_enrolled")
    for args in (("--json", "code"), ("code", "--json")):
        run = wallet_cli(tmp_path / "empty", *args)
        assert run.returncode == 1
        data = run.json()
        assert data["ok"] is False
        assert data["error"]["code"] == "not_enrolled"
        assert "enroll" in data["error"]["message"]
        assert "Traceback" not in run.stderr


def test_enroll_against_a_closed_port_is_unreachable(tmp_path: Path) -> None:
    run = wallet_cli(
        tmp_path / "w",
        "enroll",
        "--server",
        closed_port_url(),
        "--user",
        "alice",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert_error(run, "server_unreachable")


def test_enroll_with_a_wrong_password_is_unauthorized(
    enrolled: Enrolled, app_sqlite: Server, tmp_path: Path
) -> None:
    run = wallet_cli(
        tmp_path / "w",
        "enroll",
        "--server",
        app_sqlite.url,
        "--user",
        enrolled.user,
        "--password-stdin",
        stdin="not the password\n",
    )
    assert_error(run, "unauthorized")


def test_enroll_without_a_password_source_asks_for_one(
    enrolled: Enrolled, app_sqlite: Server, tmp_path: Path
) -> None:
    run = wallet_cli(tmp_path / "w", "enroll", "--server", app_sqlite.url, "--user", enrolled.user)
    assert_error(run, "password_required")


def test_wrong_passphrase_is_wallet_locked(enrolled: Enrolled) -> None:
    run = wallet_cli(enrolled.home, "code", passphrase=PASSPHRASE + "x")
    assert_error(run, "wallet_locked")


@pytest.mark.parametrize("subcommand", [None, *SUBCOMMANDS])
def test_help_exits_zero(tmp_path: Path, subcommand: str | None) -> None:
    args = ("--help",) if subcommand is None else (subcommand, "--help")
    run = wallet_cli(tmp_path, *args)
    assert run.returncode == 0, run
    usage = "usage: paycode-wallet" + ("" if subcommand is None else f" {subcommand}")
    assert run.stdout.startswith(usage)
    assert "--json" in run.stdout


# --- the console script as a process, over real HTTP ------------------------------------------


def test_console_script_over_real_http(live_server: Server, tmp_path: Path) -> None:
    """The wallet's wire, on each backend, against a live server (`run` on SQLite, gunicorn on
    PostgreSQL): paycode-wallet as a process of its own enrolls with the password piped in
    and, once the till (over HTTP too) charged one of its codes, prints the balance that
    follows, with nothing on stderr; its history, run in this process, comes over HTTP too."""
    user = new_user(live_server, "alice", TOP_UP)
    home = tmp_path / "wallet"
    enroll = ("enroll", "--server", live_server.url, "--user", user, "--password-stdin")
    enrolled = wallet_process(home, "--json", *enroll, stdin=PASSWORD + "\n")
    assert (enrolled.returncode, enrolled.stderr) == (0, ""), enrolled
    assert [d["version"] for d in enrolled.json()["enrolled"]] == ["v1", "v2", "v3"]
    code = wallet_cli(home, "--json", "code", "--version", "v3").json()["code"]
    paid = charge(new_till(live_server), code, "2.50")
    assert paid["status"] == "succeeded"
    balance = wallet_process(home, "balance")
    assert (balance.returncode, balance.stdout, balance.stderr) == (0, "97.50 CNY\n", "")
    history = wallet_cli(home, "--json", "history")
    assert [i["payment_id"] for i in history.json()["items"]] == [paid["payment_id"]]


# --- secrets --------------------------------------------------------------------------------


def test_no_secret_ever_appears_in_cli_output(enrolled: Enrolled) -> None:
    """Runs last in this module: checks the output of every run above (about 30)."""
    secrets = [PASSPHRASE, PASSWORD]
    for enrollment in open_wallet(enrolled.home).enrollments().values():
        credential = enrollment.credential
        secrets.append(credential.handle.hex())
        for key in (credential.secret, credential.hiding_key):
            if key:
                secrets += [key.hex(), base64.b64encode(key).decode()]
    assert len(OUTPUTS) > 20
    for run in OUTPUTS:
        for secret in secrets:
            assert secret not in run.stdout + run.stderr, (run.args, "leaks a secret")


def test_read_only_command_on_empty_home_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "never-enrolled"
    env = {k: v for k, v in os.environ.items() if k != "PAYCODE_WALLET_PASSPHRASE"}
    done = subprocess.run(
        [sys.executable, "-m", "paycode.client.cli", "--home", str(home), "code"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 1 and "[not_enrolled]" in done.stderr
    assert not home.exists()
