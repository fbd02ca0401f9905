"""An open-loop HTTP load generator: requests sent at Poisson arrival times, latency from the
scheduled send time (wrk2 is not in Debian; wrk is closed-loop).

    python -m bench.openloop URL FILE --rate-per-s 400 --duration-s 10 [--connections 32]
                             [--outstanding 512] [--expected-status 201] [--seed 1]
    python -m bench.openloop URL FILE --sequential --duration-s 5

FILE is the request file of bench/charges.lua: one signed POST /v1/charges per line,
tab-separated key_id, timestamp, nonce, signature, idempotency_key, body; each line is sent at
most once. A closed-loop client only sends when its previous answer came back, so a slow server
slows the clients and its queueing never shows in their latency (coordinated omission). Here
each request has its scheduled time and its latency runs from that time: when no keep-alive
connection is free, or `--outstanding` requests are already waiting, the request waits and its
clock keeps running. `--sequential` is the other extreme: one connection, one request at a time.

Prints one line `RESULT {json}` (as charges.lua's done() does): scheduled and achieved rate,
ok/bad counts, p50/p90/p99/max ms, this process's own CPU seconds and CPU per request
(getrusage), and the payment ids of the acknowledged (expected-status) replies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.keepalive import HttpError, Pool, Reply

CHARGE_PATH = "/v1/charges"
HEADER_NAMES = ("Paycode-Key-Id", "Paycode-Timestamp", "Paycode-Nonce", "Paycode-Signature")
FIELDS = 6
REQUEST_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 10.0
"""After the schedule ends, how long answers still in flight are awaited."""
PERCENTILES = (50, 90, 99)
PAYMENT_ID = re.compile(rb'"payment_id"\s*:\s*"([^"]{1,100})"')
FIRST_BAD_CHARS = 300


# -- the requests and their schedule -------------------------------------------------------------


def load_requests(path: Path, host: str) -> list[bytes]:
    """Each line of a charges.lua request file as the raw bytes of its HTTP/1.1 request."""
    requests = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split("\t", FIELDS - 1)
        if len(fields) != FIELDS:
            raise ValueError(f"{path}:{number}: expected {FIELDS} tab-separated fields")
        *signature, idempotency_key, body = fields
        payload = body.encode()
        headers = [f"POST {CHARGE_PATH} HTTP/1.1", f"Host: {host}"]
        headers += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        headers += [f"{name}: {value}" for name, value in zip(HEADER_NAMES, signature, strict=True)]
        headers.append(f"Idempotency-Key: {idempotency_key}")
        requests.append(("\r\n".join(headers) + "\r\n\r\n").encode() + payload)
    return requests


def poisson_schedule(rate_per_s: float, duration_s: float, rng: random.Random) -> list[float]:
    """Send times in [0, duration_s) of a Poisson process at `rate_per_s`: exponential gaps."""
    if rate_per_s <= 0 or duration_s <= 0:
        return []
    times, now_s = [], rng.expovariate(rate_per_s)
    while now_s < duration_s:
        times.append(now_s)
        now_s += rng.expovariate(rate_per_s)
    return times


def percentile(sorted_values: list[float], percent: float) -> float:
    """Nearest rank: the smallest value with at least `percent` % of the values at or below it
    (p99 of 1..100 is 99, p100 the maximum); NaN when there are none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# -- the runs ------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What came back. Latencies (seconds) of every answer, in the order they came."""

    expected_status: int
    latencies_s: list[float] = field(default_factory=list)
    ok: int = 0
    bad: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    payment_ids: list[str] = field(default_factory=list)
    first_bad: str = ""
    first_answer_s: float = math.inf
    last_answer_s: float = 0.0

    def answer(self, reply: Reply, latency_s: float, now_s: float) -> None:
        self.latencies_s.append(latency_s)
        self.first_answer_s = min(self.first_answer_s, now_s)
        self.last_answer_s = max(self.last_answer_s, now_s)
        if reply.status != self.expected_status:
            self.bad += 1
            if not self.first_bad:
                text = reply.body[:FIRST_BAD_CHARS].decode("utf-8", "replace")
                self.first_bad = f"{reply.status} {text}"
            return
        self.ok += 1
        found = PAYMENT_ID.search(reply.body)
        if found:
            self.payment_ids.append(found.group(1).decode("ascii", "replace"))

    def error(self, error: BaseException) -> None:
        kind = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
        self.errors[kind] = self.errors.get(kind, 0) + 1


@dataclass
class Outcome:
    mode: str
    tally: Tally
    scheduled: int
    sent: int
    unsent: int
    unfinished: int
    """Sent, but no answer when the run stopped (the server may still have done them)."""
    elapsed_s: float
    dispatch_lag_max_s: float
    cpu_s: float
    scheduled_rate_per_s: float
    connections_opened: int
    reconnects: int


@dataclass(frozen=True)
class Limits:
    connections: int = 32
    outstanding: int = 512
    timeout_s: float = REQUEST_TIMEOUT_S
    drain_s: float = DRAIN_TIMEOUT_S


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _send(pool: Pool, request: bytes, due_s: float, tally: Tally, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):  # no extra task per request, unlike wait_for
            reply = await pool.exchange(request)
    except (TimeoutError, HttpError, OSError, EOFError, ValueError) as error:
        tally.error(error)  # IncompleteReadError is an EOFError, LimitOverrunError a ValueError
        return
    now_s = loop.time()
    tally.answer(reply, now_s - due_s, now_s)


async def open_loop(
    host: str,
    port: int,
    requests: list[bytes],
    schedule_s: list[float],
    expected_status: int,
    limits: Limits,
    rate_per_s: float = 0.0,
) -> Outcome:
    """Request i is due at start + schedule_s[i]; its latency runs from then, whatever it waits
    for (the outstanding bound, a free connection, the server). Requests still unsent when the
    schedule's end + drain_s passes count as `unsent`, answers not back by then `unfinished`."""
    loop = asyncio.get_running_loop()
    pool, tally = Pool(host, port, limits.connections), Tally(expected_status)
    slots = asyncio.Semaphore(limits.outstanding)
    scheduled = len(schedule_s)
    schedule_s = schedule_s[: len(requests)]
    cpu_before, start_s = _cpu_s(), loop.time()
    stop_s = start_s + (schedule_s[-1] if schedule_s else 0.0) + limits.drain_s
    tasks: set[asyncio.Task[None]] = set()
    sent, lag_max_s = 0, 0.0

    async def send(request: bytes, due_s: float) -> None:
        try:
            await _send(pool, request, due_s, tally, limits.timeout_s)
        finally:
            slots.release()

    for request, offset_s in zip(requests, schedule_s, strict=False):
        due_s = start_s + offset_s
        await asyncio.sleep(max(0.0, due_s - loop.time()))
        if slots.locked():  # the outstanding bound: wait, but not past the stop
            try:
                await asyncio.wait_for(slots.acquire(), max(0.0, stop_s - loop.time()))
            except TimeoutError:
                break
        else:
            await slots.acquire()
        lag_max_s = max(lag_max_s, loop.time() - due_s)
        task = loop.create_task(send(request, due_s))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    unfinished = 0
    if tasks:
        _done, pending = await asyncio.wait(set(tasks), timeout=max(0.0, stop_s - loop.time()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        unfinished = len(pending)
    pool.close()
    return Outcome(
        "open",
        tally,
        scheduled=scheduled,
        sent=sent,
        unsent=len(schedule_s) - sent,
        unfinished=unfinished,
        elapsed_s=max(tally.last_answer_s, start_s) - start_s,
        dispatch_lag_max_s=lag_max_s,
        cpu_s=_cpu_s() - cpu_before,
        scheduled_rate_per_s=rate_per_s,
        connections_opened=pool.opened,
        reconnects=pool.reopened,
    )


async def sequential(
    host: str,
    port: int,
    requests: list[bytes],
    duration_s: float,
    expected_status: int,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> Outcome:
    """One connection, each request sent when the previous answer is in (concurrency 1):
    latency from the send, until duration_s is over or the requests run out."""
    loop = asyncio.get_running_loop()
    pool, tally = Pool(host, port, 1), Tally(expected_status)
    cpu_before, start_s = _cpu_s(), loop.time()
    sent = 0
    for request in requests:
        if loop.time() - start_s >= duration_s:
            break
        sent += 1
        await _send(pool, request, loop.time(), tally, timeout_s)
    pool.close()
    return Outcome(
        "sequential",
        tally,
        scheduled=sent,
        sent=sent,
        unsent=0,
        unfinished=0,
        elapsed_s=loop.time() - start_s,
        dispatch_lag_max_s=0.0,
        cpu_s=_cpu_s() - cpu_before,
        scheduled_rate_per_s=0.0,
        connections_opened=pool.opened,
        reconnects=pool.reopened,
    )


def summary(outcome: Outcome) -> dict[str, Any]:
    """The RESULT line's fields: latencies in ms, rates per second over the time from the
    start to the last answer."""
    tally = outcome.tally
    latencies_ms = sorted(1000 * s for s in tally.latencies_s)
    answered = len(latencies_ms)
    elapsed_s = max(outcome.elapsed_s, 1e-9)
    result: dict[str, Any] = {
        "mode": outcome.mode,
        "scheduled_rate_per_s": outcome.scheduled_rate_per_s,
        "achieved_rate_per_s": tally.ok / elapsed_s if answered else 0.0,
        "elapsed_s": outcome.elapsed_s,
        "scheduled": outcome.scheduled,
        "sent": outcome.sent,
        "unsent": outcome.unsent,
        "unfinished": outcome.unfinished,
        "ok": tally.ok,
        "bad": tally.bad,
        "errors": sum(tally.errors.values()),
        "error_kinds": tally.errors,
        "first_bad": tally.first_bad,
    }
    for percent in PERCENTILES:
        result[f"p{percent}_ms"] = percentile(latencies_ms, percent)
    result["max_ms"] = latencies_ms[-1] if latencies_ms else math.nan
    result["mean_ms"] = sum(latencies_ms) / answered if answered else math.nan
    result |= {
        "dispatch_lag_max_ms": 1000 * outcome.dispatch_lag_max_s,
        "cpu_s": outcome.cpu_s,
        "cpu_per_request_ms": 1000 * outcome.cpu_s / max(1, outcome.sent),
        "connections_opened": outcome.connections_opened,
        "reconnects": outcome.reconnects,
        "payment_ids": tally.payment_ids,
    }
    return result


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url", help="e.g. http://127.0.0.1:8000")
    parser.add_argument("requests", type=Path, help="a bench/charges.lua request file")
    parser.add_argument("--rate-per-s", type=float, default=0.0)
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--sequential", action="store_true", help="one request at a time")
    parser.add_argument("--connections", type=int, default=Limits.connections)
    parser.add_argument("--outstanding", type=int, default=Limits.outstanding)
    parser.add_argument("--expected-status", type=int, default=201)
    parser.add_argument("--timeout-s", type=float, default=REQUEST_TIMEOUT_S)
    parser.add_argument("--seed", type=int, default=None, help="the arrivals' random seed")
    args = parser.parse_args(argv)
    if not 0 < args.duration_s <= 600 or not 0 < args.timeout_s <= 60:
        parser.error("--duration-s 0-600, --timeout-s 0-60")
    if not args.sequential and not 0 < args.rate_per_s <= 100_000:
        parser.error("--rate-per-s 0-100000 (or --sequential)")
    if not 1 <= args.connections <= 1024 or not 1 <= args.outstanding <= 100_000:
        parser.error("--connections 1-1024, --outstanding 1-100000")
    return args


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests = load_requests(args.requests, url.netloc)
    if args.sequential:
        outcome = await sequential(
            host, port, requests, args.duration_s, args.expected_status, args.timeout_s
        )
    else:
        schedule_s = poisson_schedule(args.rate_per_s, args.duration_s, random.Random(args.seed))
        limits = Limits(args.connections, args.outstanding, args.timeout_s)
        outcome = await open_loop(
            host, port, requests, schedule_s, args.expected_status, limits, args.rate_per_s
        )
    result = summary(outcome)
    result["exhausted"] = max(0, outcome.scheduled - len(requests))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(_main(args))
    finite = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in result.items()
    }
    print("RESULT " + json.dumps(finite, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
