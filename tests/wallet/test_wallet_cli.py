"""The `paycode-wallet` console script, run as a real subprocess against the stub server.

One wallet is enrolled per module (over real HTTP, password piped on stdin); each test then
runs the script the way a user would and checks what it prints, writes and exits with.
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

from paycode.appkit import rendering as render
from paycode.appkit.decoding import decode_image_file
from paycode.client.keystore import KEYSTORE_NAME, PASSPHRASE_ENV, SCRYPT_N, Keystore
from paycode.client.wallet import Wallet
from paycode.shared.binding import charging_point_bindings
from paycode.shared.emv.collection import CollectionCode, build_collection_payload
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import (
    Accepted,
    Flags,
    Reason,
    Rejected,
    Verification,
    VerifyContext,
)
from tests.support.wallet_stub import DEFAULT_USERS, WalletStub, closed_port_url, running_stub

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "cli test passphrase 7f3a"
USER = "alice"
PASSWORD = DEFAULT_USERS[USER]
SUBCOMMANDS = [
    "enroll", "code", "balance", "history", "pay", "status", "devices", "revoke", "rotate",
    "reenroll",
]  # fmt: skip
CLI_TIMEOUT_S = 30


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


def wallet_cli(
    home: Path, *args: str, stdin: str | None = None, passphrase: str = PASSPHRASE
) -> Run:
    """Run the console script with a clean PAYCODE_* environment; never raises on failure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    env[PASSPHRASE_ENV] = passphrase
    completed = subprocess.run(
        [sys.executable, "-m", "paycode.client.cli", "--home", str(home), *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    run = Run(tuple(args), completed.returncode, completed.stdout, completed.stderr)
    OUTPUTS.append(run)
    return run


def assert_error(run: Run, code: str) -> None:
    assert run.returncode == 1, run
    assert f"error [{code}]" in run.stderr, run
    assert "Traceback" not in run.stderr + run.stdout
    assert run.stdout == ""


@pytest.fixture(scope="module")
def stub() -> Iterator[WalletStub]:
    with running_stub() as server:
        yield server


@dataclass(frozen=True)
class Enrolled:
    home: Path
    run: Run


@pytest.fixture(scope="module")
def enrolled(stub: WalletStub, tmp_path_factory: pytest.TempPathFactory) -> Enrolled:
    home = tmp_path_factory.mktemp("cli") / "wallet"
    run = wallet_cli(
        home,
        "enroll",
        "--server",
        stub.url,
        "--user",
        USER,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert run.returncode == 0, run
    return Enrolled(home, run)


def open_wallet(home: Path) -> Wallet:
    """The subprocess's wallet, opened here with the same passphrase (no env needed)."""
    store, document = Keystore.open(home / KEYSTORE_NAME, PASSPHRASE.encode())
    return Wallet(home, store, document)


def verified(stub: WalletStub, text: str, version: str, home: Path) -> Accepted:
    result = stub.verify(text)
    assert isinstance(result, Accepted), result
    assert result.version == version
    assert result.device.device_id == open_wallet(home).enrollment(version).device_id
    return result


# --- enroll and status ----------------------------------------------------------------------


def test_enroll_prints_every_version(enrolled: Enrolled, stub: WalletStub) -> None:
    line = enrolled.run.stdout.strip()
    assert line.startswith(f"enrolled {USER} at {stub.url}: ")
    device_ids = re.findall(r"(v[123]) \((dev_[0-9a-f]+)\)", line)
    assert [version for version, _ in device_ids] == ["v1", "v2", "v3"]
    for _, device_id in device_ids:
        assert device_id in stub.device_index
    assert re.search(r"clock offset [+-]\d+\.\d s$", line)
    assert enrolled.run.stderr == ""
    envelope = json.loads((enrolled.home / KEYSTORE_NAME).read_bytes())
    assert envelope["kdf"]["n"] == SCRYPT_N  # the console script writes the real cost


def test_status_human_and_json(enrolled: Enrolled, stub: WalletStub) -> None:
    human = wallet_cli(enrolled.home, "status")
    assert human.returncode == 0, human
    assert f"server: {stub.url}  user: {USER}" in human.stdout
    for version in ("v1", "v2", "v3"):
        assert re.search(rf"^{version}: device dev_[0-9a-f]+$", human.stdout, re.MULTILINE)
    data = wallet_cli(enrolled.home, "status", "--json").json()
    assert data["ok"] is True
    assert (data["server"], data["user"]) == (stub.url, USER)
    assert sorted(data["enrolled"]) == ["v1", "v2", "v3"]
    assert set(data["enrolled"].values()) <= set(stub.device_index)


# --- code -----------------------------------------------------------------------------------


def test_code_human_output_groups_digits_in_fours(enrolled: Enrolled, stub: WalletStub) -> None:
    run = wallet_cli(enrolled.home, "code")
    assert run.returncode == 0, run
    shown = run.stdout.strip()
    assert re.fullmatch(r"87\d\d( \d{4}){5}", shown), shown
    verified(stub, shown.replace(" ", ""), "v1", enrolled.home)


@pytest.mark.parametrize(
    "args",
    [
        ("code", "--json"),
        ("--json", "code", "--version", "v2"),
        ("code", "--version", "v3", "--json"),
    ],
)
def test_code_json_verifies_with_the_server_keys(
    enrolled: Enrolled, stub: WalletStub, args: tuple[str, ...]
) -> None:
    version = args[args.index("--version") + 1] if "--version" in args else "v1"
    data = wallet_cli(enrolled.home, *args).json()
    assert data["ok"] is True
    assert (data["version"], data["files"]) == (version, [])
    assert data["symbology"] == ("numeric" if version == "v1" else "qr")
    assert 0 < data["refresh_in_s"] <= 30
    verified(stub, data["code"], version, enrolled.home)


def test_consecutive_cli_codes_are_distinct(enrolled: Enrolled, stub: WalletStub) -> None:
    texts = [wallet_cli(enrolled.home, "--json", "code").json()["code"] for _ in range(2)]
    assert texts[0] != texts[1]
    claims = {verified(stub, text, "v1", enrolled.home).claim_key for text in texts}
    assert len(claims) == 2


def test_code_png_v3_decodes_to_the_same_text(
    enrolled: Enrolled, stub: WalletStub, tmp_path: Path
) -> None:
    png = tmp_path / "v3.png"
    data = wallet_cli(enrolled.home, "code", "--version", "v3", "--png", str(png), "--json").json()
    assert data["files"] == [str(png)]
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    decoded = decode_image_file(png)
    assert [(d.format, d.text) for d in decoded] == [("qr", data["code"])]
    assert data["code"].startswith("hQVDUFY")
    verified(stub, data["code"], "v3", enrolled.home)


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


def test_balance_and_history(enrolled: Enrolled, stub: WalletStub) -> None:
    item = {"created_at": "2027-01-15T08:00:00Z", "amount": "3.20", "currency": "CNY"}
    stub.history_items = [{**item, "status": "paid", "merchant": "Corner Cafe"}]
    data = wallet_cli(enrolled.home, "balance", "--json").json()
    assert data == {"ok": True, "accounts": stub.accounts}
    assert wallet_cli(enrolled.home, "balance").stdout == "12.50 CNY\n"
    history = wallet_cli(enrolled.home, "history", "--limit", "5")
    assert history.stdout == "2027-01-15T08:00:00Z  3.20  CNY  paid  Corner Cafe\n"
    assert wallet_cli(enrolled.home, "--json", "history").json()["items"] == stub.history_items
    signed = [seen for seen in stub.seen if seen.method == "GET" and seen.status == 200]
    assert "/v1/wallet/history?limit=5" in [seen.path for seen in signed]
    v1_device = open_wallet(enrolled.home).enrollment("v1").device_id
    assert {seen.headers["Paycode-Device"] for seen in signed} == {v1_device}


def test_reenroll_advice_is_shown_on_stderr_and_in_json(
    enrolled: Enrolled, stub: WalletStub
) -> None:
    advice = {"version": "v3", "reason": "code version v1 is deprecated"}
    stub.reenroll = advice
    try:
        human = wallet_cli(enrolled.home, "balance")
        as_json = wallet_cli(enrolled.home, "balance", "--json")
        history = wallet_cli(enrolled.home, "--json", "history")
        hostile = dict(advice, reason="deprecated\x1b[2J")
        stub.reenroll = hostile
        ignored = wallet_cli(enrolled.home, "balance")
    finally:
        stub.reenroll = None
    assert human.returncode == 0 and human.stdout == "12.50 CNY\n"  # the answer is unchanged
    assert human.stderr == (
        "notice: code version v1 is deprecated; re-enroll on v3: paycode-wallet reenroll\n"
    )
    assert as_json.json() == {"ok": True, "accounts": stub.accounts, "reenroll": advice}
    assert as_json.stderr == ""
    assert history.json()["reenroll"] == advice
    assert ignored.returncode == 0 and ignored.stderr == ""  # no escape codes reach a terminal
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


def charged_at(stub: WalletStub, text: str, merchant_id: str, terminal_id: str) -> Verification:
    bindings = charging_point_bindings(merchant_id, terminal_id)
    return verify_code(text, VerifyContext(stub.now_s(), stub.lookup, stub.keys, bindings=bindings))


def assert_bound_to_cafe_till(stub: WalletStub, text: str) -> None:
    result = charged_at(stub, text, "mer_cafe", "term_1")
    assert isinstance(result, Accepted) and result.flags & Flags.MERCHANT_BOUND
    for merchant_id, terminal_id in (("mer_cafe", "term_2"), ("mer_shop", "term_1")):
        elsewhere = charged_at(stub, text, merchant_id, terminal_id)
        assert isinstance(elsewhere, Rejected) and elsewhere.reason is Reason.MERCHANT_MISMATCH


def test_code_bound_by_payload(enrolled: Enrolled, stub: WalletStub) -> None:
    payload = build_collection_payload(CAFE)
    data = wallet_cli(enrolled.home, "code", "--bind-payload", payload, "--json").json()
    assert data["version"] == "v3"  # the default for a bound code: v1 cannot be bound
    assert data["bound_to"] == {
        "merchant_id": "mer_cafe",
        "merchant_name": "Corner Cafe",
        "terminal_id": "term_1",
    }
    assert_bound_to_cafe_till(stub, data["code"])
    human = wallet_cli(enrolled.home, "code", "--version", "v2", "--bind-payload", payload)
    assert human.returncode == 0, human
    text, bound_line = human.stdout.strip().splitlines()
    assert bound_line == "bound to Corner Cafe (mer_cafe, terminal term_1): pays nowhere else"
    assert_bound_to_cafe_till(stub, text)


def test_code_bound_by_poster_image(enrolled: Enrolled, stub: WalletStub, tmp_path: Path) -> None:
    poster = tmp_path / "collection.png"
    render.save_png(render.qr_image(build_collection_payload(CAFE)), poster)
    data = wallet_cli(enrolled.home, "--json", "code", "--bind-qr", str(poster)).json()
    assert data["bound_to"]["merchant_id"] == "mer_cafe"
    assert_bound_to_cafe_till(stub, data["code"])


def test_merchant_only_collection_binds_to_every_till(enrolled: Enrolled, stub: WalletStub) -> None:
    payload = build_collection_payload(CollectionCode("mer_cafe", "Corner Cafe", "Shanghai", "CNY"))
    data = wallet_cli(enrolled.home, "code", "--bind-payload", payload, "--json").json()
    assert data["bound_to"]["terminal_id"] is None
    for terminal_id in ("term_1", "term_2"):
        assert isinstance(charged_at(stub, data["code"], "mer_cafe", terminal_id), Accepted)
    shop = charged_at(stub, data["code"], "mer_shop", "term_1")
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
        USER,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert_error(run, "server_unreachable")


def test_enroll_with_a_wrong_password_is_unauthorized(stub: WalletStub, tmp_path: Path) -> None:
    run = wallet_cli(
        tmp_path / "w",
        "enroll",
        "--server",
        stub.url,
        "--user",
        USER,
        "--password-stdin",
        stdin="not the password\n",
    )
    assert_error(run, "unauthorized")


def test_enroll_without_a_password_source_asks_for_one(stub: WalletStub, tmp_path: Path) -> None:
    run = wallet_cli(tmp_path / "w", "enroll", "--server", stub.url, "--user", USER)
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
