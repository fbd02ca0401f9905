"""Scan to answer: from the first camera frame that shows a code to the server's answer.

    python -m bench.bench_pos [--sales 30] [--backend postgres|sqlite]

docs/bars.md. A live server on loopback (`serve --workers 2` on a fresh PostgreSQL
database, or the SQLite default), a wallet enrolled over HTTP, and for each sale: a fresh
code of each version composed into synthetic 720p frames (random distortion), handed to the
till's Scanner frame by frame as a camera would, then charged through the till's own code
path (merchant_pos.till.charge_code). The clock starts when the first frame with the code is
handed over, and stops at the server's answer. In the same run it times the scan alone and the
charge alone, so the split is visible. Target: scan-to-answer <= 150 ms.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from paycode.appkit.http_client import ServerClient
from paycode.client.online import enroll
from paycode.client.wallet import Wallet
from paycode.merchant_pos.scanloop import Scanner
from paycode.merchant_pos.synthetic_frames import DISTORTIONS, Subject, compose_frame, empty_frame
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.merchant_pos.till import Sale, charge_code
from paycode.server.testing import LiveServer, postgres_database, start_server

TARGET_MS = 150.0
PASSWORD = "bench pos password"
VERSIONS = ("v1", "v2", "v3")
EMPTY_FRAMES = 3
CODE_FRAMES = 6
DEFAULT_SALES = 30


@dataclass
class Timings:
    scan_to_answer_ms: list[float] = field(default_factory=list)
    scan_ms: list[float] = field(default_factory=list)
    charge_ms: list[float] = field(default_factory=list)


def _cli_json(server: LiveServer, *args: str, stdin: str | None = None) -> dict[str, object]:
    done = server.cli("--json", *args, stdin=stdin)
    if done.returncode != 0:
        raise SystemExit(f"paycode-server {' '.join(args)} failed: {done.stdout}{done.stderr}")
    reply: dict[str, object] = json.loads(done.stdout)
    return reply


def set_up(server: LiveServer, wallet_home: Path) -> tuple[TerminalClient, Wallet]:
    _cli_json(
        server,
        "users",
        "create",
        "bench",
        "--password-stdin",
        "--currency",
        "CNY",
        stdin=PASSWORD + "\n",
    )
    _cli_json(server, "users", "top-up", "bench", "100000.00")
    _cli_json(server, "merchants", "create", "Bench Till", "--currency", "CNY")
    terminal = _cli_json(server, "terminals", "create", "Bench Till")
    os.environ.setdefault("PAYCODE_WALLET_PASSPHRASE", "bench pos wallet")
    wallet = Wallet.open_or_create(wallet_home)
    enroll(
        wallet, ServerClient(server.url), user="bench", password=PASSWORD, versions=list(VERSIONS)
    )
    secret = base64.b64decode(str(terminal["secret"]))
    return TerminalClient(server.url, str(terminal["key_id"]), secret), wallet


def frames_for(text: str, version: str, rng: np.random.Generator) -> list[np.ndarray]:
    symbology = "code128" if version == "v1" and rng.random() < 0.5 else "qr"
    subject = Subject(text, symbology, version)
    lead = [empty_frame(rng).image for _ in range(EMPTY_FRAMES)]
    distortion = str(rng.choice(DISTORTIONS))
    return lead + [compose_frame(subject, distortion, rng).image for _ in range(CODE_FRAMES)]


def one_sale(
    till: TerminalClient, wallet: Wallet, version: str, rng: np.random.Generator
) -> tuple[float, float, float] | None:
    code = wallet.next_code(version, local_now_s=time.time()).text
    frames = frames_for(code, version, rng)
    scanner = Scanner()
    for frame in frames[:EMPTY_FRAMES]:
        assert not scanner.scan_frame(frame)
    started = time.perf_counter()
    found = None
    for frame in frames[EMPTY_FRAMES:]:
        detections = scanner.scan_frame(frame)
        if detections:
            found = detections[0]
            break
    if found is None:
        return None
    scanned = time.perf_counter()
    outcome = charge_code(till, found.text, Sale("0.01", "CNY"))
    answered = time.perf_counter()
    assert outcome.paid, outcome.message
    return (answered - started) * 1000, (scanned - started) * 1000, (answered - scanned) * 1000


@contextmanager
def live_server(backend: str) -> Iterator[LiveServer]:
    if backend == "sqlite":
        with start_server("sqlite", mode="serve", workers=2) as server:
            yield server
    else:
        with postgres_database() as url, start_server("postgres", database_url=url) as server:
            yield server


def _row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"| {name} | {statistics.median(ordered):.1f} | {p95:.1f} | {ordered[-1]:.1f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sales", type=int, default=DEFAULT_SALES, help="sales per version")
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(20261123)
    timings = {version: Timings() for version in VERSIONS}
    missed = 0
    with live_server(args.backend) as server, tempfile.TemporaryDirectory() as home:
        till, wallet = set_up(server, Path(home) / "wallet")
        for _ in range(args.sales):
            for version in VERSIONS:
                measured = one_sale(till, wallet, version, rng)
                if measured is None:
                    missed += 1
                    continue
                total, scan, charge = measured
                timings[version].scan_to_answer_ms.append(total)
                timings[version].scan_ms.append(scan)
                timings[version].charge_ms.append(charge)
    report(timings, missed, args)
    return 0


def report(timings: dict[str, Timings], missed: int, args: argparse.Namespace) -> None:
    every = [ms for t in timings.values() for ms in t.scan_to_answer_ms]
    median = statistics.median(every)
    verdict = "meets" if median <= TARGET_MS else "MISSES"
    lines = [
        f"scan to answer over loopback ({args.backend}, `serve --workers 2`), {len(every)} sales, "
        f"{missed} not read within {CODE_FRAMES} frames:",
        "",
        "| what (ms) | median | p95 | max |",
        "| --- | ---: | ---: | ---: |",
    ]
    for version, measured in timings.items():
        lines.append(_row(f"{version} scan to answer", measured.scan_to_answer_ms))
        lines.append(_row(f"{version} of which scanning", measured.scan_ms))
        lines.append(_row(f"{version} of which charging", measured.charge_ms))
    lines += [
        "",
        f"all versions: median {median:.1f} ms ({verdict} the <= {TARGET_MS:g} ms target)",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
