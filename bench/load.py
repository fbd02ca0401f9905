"""What every HTTP benchmark shares: the machine line, a bank of customers and terminals with
pre-signed charge requests, the bare Flask server, and the load tools (wrk with
bench/charges.lua, pgbench) with their results as `Run`s.

Used by bench/bench_charges.py (charges vs ceilings, with a profile) and bench/bench_matrix.py
(the workers x clients x database matrix and the scale-out run of `make bench`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, make_url, select

from bench import REPO_ROOT
from paycode.server.books import ledger
from paycode.server.config import ServerConfig
from paycode.server.database.models import Device, Payment, User, new_id
from paycode.server.operations import admin
from paycode.server.safety import keyring
from paycode.server.safety.passwords import hash_password
from paycode.server.safety.secretbox import SecretBox
from paycode.server.testing import POSTGRES_ADMIN_URL, LiveServer, server_env
from paycode.shared.terminal_auth import sign_headers
from paycode.shared.timestep import step_at
from paycode.shared.versions.base import DeviceCredential
from paycode.shared.versions.registry import by_name

CLIENTS = 32
"""Concurrent connections (wrk -c, pgbench -c) unless a run says otherwise."""
WRK_THREADS = 2
PGBENCH_SCALE = 10
CURRENCY = "CNY"
TOP_UP_AMOUNT = "1000000.00"
CHARGE_AMOUNT = "1.00"
BENCH_PASSWORD = "bench-password"
"""Every bench user shares one scrypt hash of it: logins are not what is measured."""
CHARGE_PATH = "/v1/charges"
LUA_SCRIPT = Path(__file__).with_name("charges.lua")
WRK_REQUEST_TIMEOUT_S = 10
SUBPROCESS_SLACK_S = 60
DRAIN_TIMEOUT_S = 15.0
DRAIN_POLL_S = 0.3
COUNTER_MAX = 65535

Kind = str  # "bare", "pgbench", "charge"


# -- machine ------------------------------------------------------------------------------------


def machine_line() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        pg_version = str(row[0]) if row else "?"
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    wrk_version = _first_line(["wrk", "--version"])
    load = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} cores ({model or platform.machine()}), "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; python {platform.python_version()}; "
        f"PostgreSQL {pg_version} (synchronous_commit={sync[0] if sync else '?'}); "
        f"{wrk_version.split(' Copyright')[0]}; {_first_line(['pgbench', '--version'])}"
    )


def _first_line(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else ""
    )


def preflight() -> str | None:
    """Why the bench cannot run here, or None."""
    for tool in ("wrk", "pgbench"):
        if shutil.which(tool) is None:
            hint = "apt-get install -y wrk" if tool == "wrk" else "install postgresql-client"
            return f"{tool} not found ({hint}; `make bench-charges` installs wrk when root)"
    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except psycopg.Error as error:
        return f"PostgreSQL at {make_url(POSTGRES_ADMIN_URL).render_as_string()}: {error}"
    return None


# -- the bank the charges run against ------------------------------------------------------------


@dataclass(frozen=True)
class TerminalKey:
    merchant_id: str
    key_id: str
    secret: bytes = field(repr=False)


@dataclass
class Fixture:
    """Customers (one v2 device each, ample balance) and merchants (one terminal each)."""

    credentials: list[DeviceCredential]
    terminals: list[TerminalKey]
    counters: dict[tuple[int, int], int] = field(default_factory=dict)
    serial: int = 0
    run_tag: str = field(default_factory=lambda: secrets.token_hex(3))

    def next_counter(self, customer: int, step: int) -> int:
        counter = self.counters.get((customer, step), 0)
        assert counter <= COUNTER_MAX, "out of v2 counters for this step"
        self.counters[(customer, step)] = counter + 1
        return counter

    def request_lines(self, count: int, merchants: int) -> Iterator[str]:
        """`count` signed charges, round-robin over customers and the first `merchants`
        terminals, as TSV lines for bench/charges.lua."""
        assert 1 <= merchants <= len(self.terminals)
        codec = by_name("v2")
        now_s = time.time()
        step, timestamp_s = step_at(now_s), int(now_s)
        for index in range(count):
            customer = index % len(self.credentials)
            code = codec.generate(
                self.credentials[customer], step=step, counter=self.next_counter(customer, step)
            )
            self.serial += 1
            order_id = f"bench-{self.run_tag}-{self.serial}"
            body = json.dumps(
                {
                    "code": code,
                    "amount": CHARGE_AMOUNT,
                    "currency": CURRENCY,
                    "merchant_order_id": order_id,
                },
                separators=(",", ":"),
            )
            terminal = self.terminals[index % merchants]
            headers = sign_headers(
                terminal.key_id,
                terminal.secret,
                "POST",
                CHARGE_PATH,
                body.encode(),
                timestamp_s=timestamp_s,
            )
            yield "\t".join(
                (
                    headers["Paycode-Key-Id"],
                    headers["Paycode-Timestamp"],
                    headers["Paycode-Nonce"],
                    headers["Paycode-Signature"],
                    order_id,  # unique: doubles as the Idempotency-Key
                    body,
                )
            )

    def write_requests(self, path: Path, count: int, merchants: int) -> None:
        with path.open("w") as out:
            for line in self.request_lines(count, merchants):
                out.write(line + "\n")


def populate(server: LiveServer, customers: int, merchants: int) -> Fixture:
    """Users and top-ups through server.admin (what `paycode-server users ...` runs), v2 devices
    inserted and sealed as tests/support/shop.py::bank_devices does, merchants and terminals
    through server.admin (what `merchants create` / `terminals create` run)."""
    box = SecretBox.from_config(ServerConfig.from_env(server.env))
    password_hash = hash_password(BENCH_PASSWORD)
    codec = by_name("v2")
    now_s = time.time()
    credentials: list[DeviceCredential] = []
    terminals: list[TerminalKey] = []
    with server.session() as session:
        _, current = keyring.load_keys(session, box)
        for index in range(customers):
            user = User(
                id=new_id("usr"),
                name=f"bench-{index}",
                password_hash=password_hash,
                created_at_s=now_s,
            )
            session.add(user)
            session.flush()
            admin.top_up(session, user.name, TOP_UP_AMOUNT, now_s, CURRENCY)
            # A bench customer pays thousands of times a day: lift the password-free limits
            # (they are still checked on every charge, so their cost is measured).
            admin.set_limits(
                session,
                user.name,
                CURRENCY,
                payment_max=None,
                daily_max=TOP_UP_AMOUNT,
                daily_count_max=admin.DAILY_COUNT_MAX,
                reset=False,
            )
            device_id, handle, device_key = new_id("dev"), codec.new_handle(), os.urandom(32)
            key_id, sealed = box.seal(device_key, row_id=device_id)
            session.add(
                Device(
                    id=device_id,
                    user_id=user.id,
                    version="v2",
                    handle=handle,
                    key_id=key_id,
                    key_sealed=sealed,
                    drift_steps=0,
                    label="bench",
                    created_at_s=now_s,
                )
            )
            credentials.append(DeviceCredential("v2", handle, device_key, hiding_key=current["v2"]))
        for index in range(merchants):
            merchant = admin.create_merchant(session, f"bench-shop-{index}", CURRENCY, now_s=now_s)
            terminal, secret = admin.create_terminal(session, box, merchant.id, now_s)
            terminals.append(TerminalKey(merchant.id, terminal.id, secret))
    return Fixture(credentials, terminals)


def payment_counts(server: LiveServer) -> Counter[str]:
    with server.session() as session:
        rows = session.execute(select(Payment.status, func.count()).group_by(Payment.status))
        return Counter({str(status): int(count) for status, count in rows})


def settle(server: LiveServer) -> Counter[str]:
    """Wait (bounded) until the server has finished what wrk left in flight."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    previous = payment_counts(server)
    while time.monotonic() < deadline:
        time.sleep(DRAIN_POLL_S)
        current = payment_counts(server)
        if current == previous:
            return current
        previous = current
    return previous


def ledger_sum(server: LiveServer) -> int:
    with server.session() as session:
        return ledger.ledger_sum_minor(session)


# -- servers ------------------------------------------------------------------------------------


class BareServer(LiveServer):
    """bench/bare_server.py under the same `serve` code path, the same way LiveServer runs it."""

    def _spawn(self, mode: str, port: int, workers: int) -> subprocess.Popen[bytes]:
        assert mode == "serve"
        args = ["serve", "--workers", str(workers), "--bind", f"127.0.0.1:{port}"]
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "bench.bare_server", *args],
                env=self.env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


@contextlib.contextmanager
def bare_server() -> Iterator[BareServer]:
    instance = Path(tempfile.mkdtemp(prefix="paycode-bench-bare-"))
    unused = instance / "unused.db"
    unused.touch()  # `serve` refuses a bank file that does not exist; the bare app never opens it
    url = f"sqlite:///{unused}"
    server = BareServer("bare", url, instance, server_env(instance, url))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(instance, ignore_errors=True)


def restart(server: LiveServer, workers: int) -> None:
    server.stop()
    server.start(mode="serve", workers=workers)


def worker_pids(server: LiveServer) -> list[int]:
    """The gunicorn workers: children of the arbiter LiveServer started."""
    process = server._process  # the bench reads the pid, never signals it
    if process is None:
        return []
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == process.pid:
                pids.append(int(stat.parent.name))
    return sorted(pids)


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Run:
    kind: Kind
    workers: int
    merchants: int
    round: int
    rate_per_s: float
    p50_ms: float
    p99_ms: float
    ok: int
    bad: int = 0
    exhausted: int = 0
    socket_errors: int = 0
    notes: list[str] = field(default_factory=list)
    p95_ms: float = float("nan")
    clients: int = CLIENTS

    @property
    def valid(self) -> bool:
        return self.bad == 0 and self.exhausted == 0 and not self.notes


def run_wrk(
    url: str,
    requests: Path,
    expected_status: int,
    mode: str,
    duration_s: float,
    clients: int = CLIENTS,
) -> dict[str, Any]:
    threads = min(WRK_THREADS, clients)
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(clients),
        "-d",
        f"{duration_s:g}s",
        "--timeout",
        f"{WRK_REQUEST_TIMEOUT_S}s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(requests),
        str(expected_status),
        mode,
        str(threads),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=duration_s + SUBPROCESS_SLACK_S,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            return result
    raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def wrk_run(
    kind: Kind,
    result: dict[str, Any],
    workers: int,
    merchants: int,
    rnd: int,
    clients: int = CLIENTS,
) -> Run:
    duration_s = result["duration_us"] / 1e6
    errors = sum(
        int(result[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    run = Run(
        kind,
        workers,
        merchants,
        rnd,
        rate_per_s=result["good"] / duration_s,
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        ok=int(result["good"]),
        bad=int(result["bad"]) - int(result["exhausted"]),
        exhausted=int(result["exhausted"]),
        socket_errors=errors,
        p95_ms=result["p95_us"] / 1000,
        clients=clients,
    )
    if result["bad"]:
        run.notes.append(f"first unexpected answer: {result['first_bad'][:200]}")
    if errors:
        run.notes.append(f"{errors} socket errors/timeouts")
    return run


def run_pgbench(
    dbname: str, duration_s: float, log_dir: Path, rnd: int, workers: int, clients: int = CLIENTS
) -> Run:
    url = make_url(POSTGRES_ADMIN_URL)
    prefix = log_dir / f"pgbench-{rnd}-{workers}-{clients}"
    command = [
        *_pg_args(url),
        "-c",
        str(clients),
        "-j",
        str(min(WRK_THREADS, clients)),
        "-T",
        str(round(duration_s)),
        "-l",
        "--log-prefix",
        str(prefix),
        dbname,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=duration_s + SUBPROCESS_SLACK_S,
        check=False,
        env=_pg_env(url),
    )
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    if done.returncode != 0 or tps is None:
        raise RuntimeError(f"pgbench failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    latencies_us: list[int] = []
    for log in log_dir.glob(f"{prefix.name}.*"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                latencies_us.append(int(parts[2]))
        log.unlink()
    latencies_us.sort()
    run = Run(
        "pgbench",
        workers,
        0,
        rnd,
        rate_per_s=float(tps.group(1)),
        p50_ms=_percentile(latencies_us, 50) / 1000,
        p99_ms=_percentile(latencies_us, 99) / 1000,
        ok=len(latencies_us),
        bad=int(failed.group(1)) if failed else 0,
        p95_ms=_percentile(latencies_us, 95) / 1000,
        clients=clients,
    )
    return run


def pgbench_init(dbname: str) -> None:
    url = make_url(POSTGRES_ADMIN_URL)
    command = [*_pg_args(url), "-i", "-q", "-s", str(PGBENCH_SCALE), dbname]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, env=_pg_env(url)
    )
    if done.returncode != 0:
        raise RuntimeError(f"pgbench -i failed:\n{done.stdout}\n{done.stderr}")


def _pg_args(url: Any) -> list[str]:
    return [
        "pgbench",
        "-h",
        str(url.host or "127.0.0.1"),
        "-p",
        str(url.port or 5432),
        "-U",
        str(url.username or "postgres"),
    ]


def _pg_env(url: Any) -> dict[str, str]:
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return env


def _percentile(sorted_values: list[int], percent: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(percent / 100 * (len(sorted_values) - 1)))
    return float(sorted_values[index])
