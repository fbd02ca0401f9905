"""The charge targets of docs/bars.md, measured by bench/bench_charges.py after its closed-loop
rounds: open-loop latency at 50% and 70% of the same run's closed-loop maximum, the one-client
sequential p99, the books of every such run, and the verdicts (printed, and as JSON for
bench/report.py).

The closed-loop maximum is the median charge rate of the rounds at 32 clients and 8 merchants
(the median, not the best round: one lucky round would set the open-loop rates too high). The
open-loop runs use bench/openloop.py as its own process, so its CPU is its own and is reported.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench import REPO_ROOT
from bench.load import CLIENTS, SUBPROCESS_SLACK_S, Fixture, Run, ledger_sum, payment_counts, settle
from paycode.server.charge.batch_settings import BatchSettings
from paycode.server.cli import KEEPALIVE_S, THREADS_DEFAULT, THREADS_ENV
from paycode.server.database.models import Payment
from paycode.server.testing import LiveServer

TARGET_RATIO = 0.8
"""charges/s >= 0.8 x C at 32 clients, 8 merchants."""
ONE_MERCHANT_RATIO = 0.9
"""One merchant alone >= 0.9 x eight merchants (same round)."""
TARGET_P99_MS = 25.0
"""Open-loop p99 at 50% of the closed-loop maximum."""
OPEN_SHARES = (0.5, 0.7)
BAR_SHARE = 0.5
OPEN_MERCHANTS = 8
OPEN_CONNECTIONS = CLIENTS
OPEN_OUTSTANDING = 4096
OPEN_DRAIN_S = 10.0
POISSON_SLACK_SD = 5
"""Requests generated beyond rate x duration, in standard deviations of the Poisson count."""
SEQUENTIAL_REQUESTS_MIN = 2000
IDS_PER_QUERY = 5000


@dataclass
class OpenRun:
    """One open-loop or sequential run: the generator's RESULT (less the payment ids) and what
    the books said."""

    workers: int
    label: str
    share: float | None
    result: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        r = self.result
        clean = r["bad"] == 0 and r["errors"] == 0 and r["unsent"] == 0 and r["unfinished"] == 0
        return clean and r["exhausted"] == 0 and not self.notes

    def line(self) -> str:
        r = self.result
        rate = (
            f"scheduled {r['scheduled_rate_per_s']:>5.0f}/s achieved "
            f"{r['achieved_rate_per_s']:>5.0f}/s"
            if self.share is not None
            else f"one client {r['achieved_rate_per_s']:>5.0f}/s"
        )
        return (
            f"  w={self.workers} {self.label:<10} {rate}  p50 {_ms(r['p50_ms'])} p90 "
            f"{_ms(r['p90_ms'])} p99 {_ms(r['p99_ms'])} max {_ms(r['max_ms'])} ms  ok={r['ok']}"
            f" bad={r['bad']} errors={r['errors']} unsent={r['unsent']} "
            f"unfinished={r['unfinished']}; generator CPU {r['cpu_per_request_ms']:.3f} ms/req"
            + "".join(f"\n      ! {note}" for note in self.notes)
        )


def _ms(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.1f}"


# -- running the generator -----------------------------------------------------------------------


def run_openloop(url: str, requests: Path, duration_s: float, rate_per_s: float | None) -> Any:
    """bench/openloop.py as its own process (None rate: sequential); its RESULT json."""
    mode = ["--sequential"] if rate_per_s is None else ["--rate-per-s", f"{rate_per_s:.1f}"]
    command = [sys.executable, "-m", "bench.openloop", url, str(requests), *mode]
    command += ["--duration-s", f"{duration_s:g}", "--connections", str(OPEN_CONNECTIONS)]
    command += ["--outstanding", str(OPEN_OUTSTANDING)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=duration_s + OPEN_DRAIN_S + SUBPROCESS_SLACK_S,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(f"openloop failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def requests_for(rate_per_s: float, duration_s: float) -> int:
    expected = rate_per_s * duration_s
    return int(expected + POISSON_SLACK_SD * expected**0.5) + 100


def open_loop_runs(
    server: LiveServer,
    fixture: Fixture,
    workdir: Path,
    workers: int,
    max_rate_per_s: float,
    durations_s: tuple[float, float],
) -> list[OpenRun]:
    """Open loop at each share of `max_rate_per_s`, then one client sequential; each run's
    requests are signed just before it (codes expire after 30 s)."""
    open_s, sequential_s = durations_s
    merchants = min(OPEN_MERCHANTS, len(fixture.terminals))  # fewer when --merchants says so
    runs = []
    path = workdir / "openloop.tsv"
    for share in OPEN_SHARES:
        rate = share * max_rate_per_s
        fixture.write_requests(path, requests_for(rate, open_s), merchants)
        runs.append(_checked(server, workers, f"{share:.0%}", share, path, open_s, rate))
    count = max(SEQUENTIAL_REQUESTS_MIN, requests_for(1.5 * max_rate_per_s, sequential_s))
    fixture.write_requests(path, count, merchants)
    run = _checked(server, workers, "sequential", None, path, sequential_s, None)
    if run.result["sent"] >= count:
        run.result["exhausted"] = 1  # it ran out of requests before its time was up
    runs.append(run)
    return runs


def _checked(
    server: LiveServer,
    workers: int,
    label: str,
    share: float | None,
    path: Path,
    duration_s: float,
    rate_per_s: float | None,
) -> OpenRun:
    before = payment_counts(server)
    result = run_openloop(server.url, path, duration_s, rate_per_s)
    ids = result.pop("payment_ids")
    run = OpenRun(workers, label, share, result)
    in_flight = int(result["unfinished"]) + int(result["errors"])
    run.notes += check_acknowledged(server, ids, before, settle(server), in_flight)
    if result["first_bad"]:
        run.notes.append(f"first unexpected answer: {result['first_bad'][:200]}")
    print(run.line(), flush=True)
    return run


def check_acknowledged(
    server: LiveServer, ids: list[str], before: Counter[str], after: Counter[str], in_flight: int
) -> list[str]:
    """The books after one run: the ledger sums to zero; every acknowledged payment id exists
    exactly once, as a succeeded payment; the succeeded payments grew by the acknowledged count,
    plus at most what was sent but unanswered when the run stopped."""
    notes = []
    total = ledger_sum(server)
    if total != 0:
        notes.append(f"LEDGER DOES NOT SUM TO ZERO: {total}")
    unique = set(ids)
    if len(unique) != len(ids):
        notes.append(f"{len(ids) - len(unique)} payment ids acknowledged twice")
    found: Counter[str] = Counter()
    chosen = sorted(unique)
    with server.session() as session:
        for start in range(0, len(chosen), IDS_PER_QUERY):
            part = chosen[start : start + IDS_PER_QUERY]
            query = select(Payment.status, func.count()).where(Payment.id.in_(part))
            for status, count in session.execute(query.group_by(Payment.status)):
                found[str(status)] += int(count)
    if found["succeeded"] != len(unique) or sum(found.values()) != len(unique):
        notes.append(f"acknowledged {len(unique)} payments; in the database: {dict(found)}")
    made = after["succeeded"] - before["succeeded"]
    if not len(ids) <= made <= len(ids) + in_flight:
        notes.append(
            f"server made {made} payments, {len(ids)} acknowledged, {in_flight} unanswered"
        )
    return notes


# -- verdicts ------------------------------------------------------------------------------------


def closed_loop_max(runs: list[Run], workers: int) -> float:
    """The median rate of the rounds' charge runs at 8 merchants (or the most measured)."""
    charges = [r for r in runs if r.kind == "charge" and r.workers == workers and r.round > 0]
    if not charges:
        return 0.0
    merchants = OPEN_MERCHANTS if any(r.merchants == OPEN_MERCHANTS for r in charges) else None
    merchants = merchants or max(r.merchants for r in charges)
    return float(statistics.median(r.rate_per_s for r in charges if r.merchants == merchants))


def one_merchant_ratio(runs: list[Run], workers: int) -> float | None:
    """Median over rounds of (1 merchant / 8 merchants) within the same round."""
    ratios = []
    for rnd in sorted({r.round for r in runs if r.round > 0}):
        rate = {
            r.merchants: r.rate_per_s
            for r in runs
            if r.kind == "charge" and r.workers == workers and r.round == rnd
        }
        if rate.get(1) and rate.get(OPEN_MERCHANTS):
            ratios.append(rate[1] / rate[OPEN_MERCHANTS])
    return float(statistics.median(ratios)) if ratios else None


def server_settings(env: dict[str, str], workers: list[int], threads: int | None) -> dict[str, Any]:
    """What `paycode-server serve` ran with: the shipped settings unless the run set them."""
    if threads is None:
        threads = int(env.get(THREADS_ENV) or THREADS_DEFAULT)
    return {
        "server": "gunicorn (paycode-server serve)",
        "worker_class": "gthread",
        "workers": workers,
        "threads": threads,
        "keepalive_s": KEEPALIVE_S,
        "charge_batch": BatchSettings.parse(env).batch_max,
    }


def settings_line(settings: dict[str, Any]) -> str:
    workers = ", ".join(str(w) for w in settings["workers"])
    return (
        f"{settings['server']}: {settings['worker_class']} workers ({workers}) x "
        f"{settings['threads']} threads, keep-alive {settings['keepalive_s']} s, charges committed "
        f"in groups of up to {settings.get('charge_batch', '?')}; the bare Flask endpoint runs "
        "under the same code path and settings"
    )


def print_verdicts(verdicts: list[dict[str, Any]]) -> None:
    print(
        f"\nverdicts (docs/bars.md): charges >= {TARGET_RATIO:g} x C (8 merchants); 1 merchant "
        f">= {ONE_MERCHANT_RATIO:g} x 8 merchants; open-loop p99 <= {TARGET_P99_MS:g} ms at "
        f"{BAR_SHARE:.0%} of the closed-loop maximum. (The p99 at {CLIENTS} closed-loop clients "
        "is no bar: by Little's law it is a throughput bar in disguise.)"
    )
    for v in verdicts:
        print(f"  workers={v['workers']}:")
        for name in ("throughput", "one_merchant", "latency"):
            print(f"    {name:<12} {'meets' if v[name]['ok'] else 'MISSES'}: {v[name]['text']}")


def verdicts_for(
    workers: int, ratio: float | None, ceiling: float, charge: float, one: float | None,
    open_runs: list[OpenRun],
) -> dict[str, Any]:  # fmt: skip
    bar = next((r for r in open_runs if r.share == BAR_SHARE), None)
    p99 = bar.result["p99_ms"] if bar else None
    return {
        "workers": workers,
        "throughput": {
            "value": ratio,
            "ok": ratio is not None and ratio >= TARGET_RATIO,
            "text": f"{charge:.0f}/s = {ratio or 0:.2f} x C of {ceiling:.0f}/s; "
            f"{TARGET_RATIO:g} x C = {TARGET_RATIO * ceiling:.0f}/s",
        },
        "one_merchant": {
            "value": one,
            "ok": one is not None and one >= ONE_MERCHANT_RATIO,
            "text": "not measured" if one is None else f"1 merchant = {one:.2f} x 8 merchants",
        },
        "latency": {
            "value": p99,
            "ok": bar is not None and bar.valid and p99 is not None and p99 <= TARGET_P99_MS,
            "text": "not measured"
            if bar is None
            else f"p99 {_ms(p99).strip()} ms at {bar.result['achieved_rate_per_s']:.0f}/s "
            f"achieved, {bar.result['scheduled_rate_per_s']:.0f}/s scheduled"
            + ("" if bar.valid else "; the run was not clean: " + "; ".join(bar.notes)),
        },
    }
