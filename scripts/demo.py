"""`make demo`: the whole flow on the embedded SQLite default, with real processes.

1. paycode-server: init-db, a customer with money, a merchant with a terminal, then `run`
2. paycode-wallet: enroll (online, once), then make a code of each version (offline) as PNGs
3. the till: read each PNG with zxing-cpp and charge it through the signed HTTP API
4. a replayed code is refused; 5. balances and history
6. a charge above the password-free limit waits for the customer's PIN
7. the merchant logs in to its dashboard and reads the day's volume; the server is stopped
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from paycode.appkit import rendering
from paycode.appkit.decoding import decode_image_file
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.shared.errors import ServerRejected

OUT = Path("demo-out").resolve()
PASSWORD = "correct horse battery staple"
AMOUNTS = {"v1": "12.50", "v2": "8.00", "v3": "3.20"}
START_TIMEOUT_S = 30.0


DEMO_PIN = "246810"
WALLET_URL = "http://127.0.0.1:8000/wallet/"
DASHBOARD_PASSWORD = "corner cafe dashboard"


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    return base | {
        "PAYCODE_INSTANCE": str(OUT / "instance"),
        "PAYCODE_WALLET_PASSPHRASE": "demo passphrase (a phone uses its OS keystore)",
        "PYTHONUNBUFFERED": "1",
    }


def run_raw(tool: str, *args: str, stdin: str | None = None) -> dict[str, Any]:
    """Run a console script with --json: its JSON answer, a refusal included."""
    module = {"server": "paycode.server.cli", "wallet": "paycode.client.cli"}[tool]
    command = [sys.executable, "-m", module, "--json", *args]
    done = subprocess.run(
        command, input=stdin, env=env(), capture_output=True, text=True, timeout=120, check=False
    )
    reply: dict[str, Any] = json.loads(done.stdout or "{}")
    reply.setdefault("ok", done.returncode == 0)
    return reply


def run(tool: str, *args: str, stdin: str | None = None) -> dict[str, Any]:
    """Run a console script with --json; stop the demo with its error if it fails."""
    reply = run_raw(tool, *args, stdin=stdin)
    if not reply["ok"]:
        raise SystemExit(f"paycode-{tool} {' '.join(args)} failed: {reply.get('error') or reply}")
    return reply


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    log = (OUT / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "paycode.server.cli", "run", "--port", str(port)],
        env=env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    stop_server(process)
    raise SystemExit(f"the server did not start; see {OUT / 'server.log'}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=15)


def set_up_bank() -> TerminalClient:
    print("1. operator: paycode-server init-db, users, merchants, terminals")
    run("server", "init-db")
    run(
        "server",
        "users",
        "create",
        "alice",
        "--password-stdin",
        "--currency",
        "CNY",
        stdin=PASSWORD + "\n",
    )
    run("server", "users", "top-up", "alice", "100.00")
    run("server", "merchants", "create", "Corner Cafe", "--currency", "CNY")
    terminal = run("server", "terminals", "create", "Corner Cafe")
    print(f"   alice has 100.00 CNY; Corner Cafe's till is terminal {terminal['key_id']}")
    return TerminalClient("http://unset", terminal["key_id"], base64.b64decode(terminal["secret"]))


def charge_each_version(till: TerminalClient) -> str:
    wallet = str(OUT / "wallet")
    print("3. wallet makes a code of each version (offline); the till scans and charges it")
    first_code = ""
    for version, amount in AMOUNTS.items():
        png = OUT / f"{version}.png"
        made = run("wallet", "--home", wallet, "code", "--version", version, "--png", str(png))
        scanned = [d.text for d in decode_image_file(png)]
        assert scanned == [made["code"]], "zxing-cpp read something else"
        paid = till.charge(
            code=scanned[0], amount=amount, currency="CNY", merchant_order_id=f"demo-{version}"
        )
        first_code = first_code or scanned[0]
        shown = f"{scanned[0][:28]:<28}  {paid['status']:<9} {paid['amount']} CNY"
        print(f"   {version}: {shown}  {paid['payment_id']}")
    return first_code


def show_replay(till: TerminalClient, code: str) -> None:
    print("4. the same v1 code presented again")
    try:
        till.charge(code=code, amount="12.50", currency="CNY")
    except ServerRejected as error:
        print(f"   refused: {error.code} ({error.message})")
    else:
        raise SystemExit("a replayed code was accepted")


def show_step_up(till: TerminalClient, wallet: str) -> None:
    """Above alice's password-free limit the charge waits; her PIN moves the money."""
    print("6. operator lowers alice's password-free limit to 5.00; alice sets a payment PIN")
    run("server", "users", "limits", "alice", "--payment-max", "5.00")
    run("wallet", "--home", wallet, "set-pin", "--stdin", stdin=f"{PASSWORD}\n{DEMO_PIN}\n")
    code = run("wallet", "--home", wallet, "code", "--version", "v1")["code"]
    waiting = till.charge(code=code, amount="6.00", currency="CNY")
    print(f"   a 6.00 CNY charge answers {waiting['status']}: the till waits for her phone")
    listed = run("wallet", "--home", wallet, "pending")["items"]
    assert [item["payment_id"] for item in listed] == [waiting["payment_id"]]
    run("wallet", "--home", wallet, "confirm", waiting["payment_id"], "--stdin", stdin=DEMO_PIN)
    final = till.payment(waiting["payment_id"])
    print(f"   alice confirms with her PIN: the till polls and sees {final['status']}")


def show_order_scanned(till: TerminalClient, wallet: str) -> None:
    """The customer scans the till: a server-owned order, its signed QR, paid once."""
    print("7. the till creates an order (paycode-pos charge --present shows its QR full screen)")
    order = till.create_order("4.50", "CNY", merchant_order_id="demo-order-1")
    png = OUT / "order.png"
    rendering.save_png(rendering.qr_image(order["qr_payload"]), png)
    paid = run("wallet", "--home", wallet, "pay", "--qr-image", str(png), "--yes")
    payee = paid["payee"]
    print(f"   alice's phone reads it: {payee['name']}, {payee['city']}, {payee['verdict']}")
    final = till.order(order["order_id"])
    print(
        f"   paid {paid['payment']['amount']} CNY; the till sees the order {final['status']} "
        f"({final['payment']['amount']} CNY, {final['merchant_order_id']})"
    )
    again = run_raw("wallet", "--home", wallet, "pay", "--qr-image", str(png), "--yes")
    print(f"   the same QR again: {again['error']['code']}")


def show_dashboard(base_url: str) -> None:
    """The merchant's own log-in (no terminal key) opens /dashboard; read today's volume."""
    print("8. operator sets Corner Cafe's dashboard password; the merchant logs in")
    run(
        "server",
        "merchants",
        "set-password",
        "Corner Cafe",
        "--password-stdin",
        stdin=DASHBOARD_PASSWORD + "\n",
    )
    browser = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    form = urllib.parse.urlencode({"name": "Corner Cafe", "password": DASHBOARD_PASSWORD})
    with browser.open(f"{base_url}/dashboard/login", data=form.encode(), timeout=10) as page:
        body = page.read().decode()
    volume = re.search(r'id="volume-CNY">([0-9.]+)<', body)
    count = re.search(r'id="paid-count">(\d+)<', body)
    if volume is None or count is None:
        raise SystemExit("the dashboard did not show today's volume")
    print(f"   {base_url}/dashboard/: today {volume.group(1)} CNY in {count.group(1)} payments")


def show_web_wallet(base_url: str) -> None:
    """The web wallet is served by the same server (docs/webwallet.md)."""
    print("9. the web wallet (a phone's browser: sign in once, then codes work offline)")
    with urllib.request.urlopen(f"{base_url}/wallet/", timeout=10) as page:
        policy = page.headers["Content-Security-Policy"]
        if page.status != 200 or "script-src 'self'" not in policy:
            raise SystemExit("the server did not serve the web wallet")
    with urllib.request.urlopen(f"{base_url}/wallet/build.json", timeout=10) as built:
        files = json.loads(built.read())["assets"]
    print(f"   {base_url}/wallet/ serves {len(files)} files, no third-party origin")


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    till = set_up_bank()
    port = free_port()
    server = start_server(port)
    try:
        till.base_url = f"http://127.0.0.1:{port}"
        print(f"2. server running at {till.base_url}; the wallet enrolls all three versions")
        wallet = str(OUT / "wallet")
        enrolled = run(
            "wallet",
            "--home",
            wallet,
            "enroll",
            "--server",
            till.base_url,
            "--user",
            "alice",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        print(f"   enrolled: {', '.join(d['version'] for d in enrolled['enrolled'])}")
        show_replay(till, charge_each_version(till))
        balance = run("wallet", "--home", wallet, "balance")["accounts"][0]
        history = run("wallet", "--home", wallet, "history")["items"]
        print(
            f"5. alice's balance: {balance['balance']} {balance['currency']} "
            f"(100.00 - 12.50 - 8.00 - 3.20); {len(history)} payments in her history"
        )
        show_step_up(till, wallet)
        balance = run("wallet", "--home", wallet, "balance")["accounts"][0]
        print(f"   her balance: {balance['balance']} {balance['currency']}")
        show_order_scanned(till, wallet)
        show_dashboard(till.base_url)
        show_web_wallet(till.base_url)
    finally:
        stop_server(server)
    print(f"done: server stopped; images, wallet and database in {OUT}/")
    print("the web wallet for alice, in this machine's browser (README: on a phone):")
    print(f"  PAYCODE_INSTANCE={OUT / 'instance'} .venv/bin/paycode-server run --port 8000")
    print(f"  then open {WALLET_URL} (user alice, password {PASSWORD!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
