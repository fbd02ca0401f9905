"""bench/openloop.py's arithmetic: Poisson arrivals at the asked rate, latency counted from the
scheduled time (a slow stub server's queue shows in it; a closed loop would hide it), nearest-
rank percentiles, and the counts and payment ids of what came back. In-process, ~1 s."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import statistics
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from bench import openloop

SERVICE_S = 0.02


def test_the_schedule_is_poisson_at_the_asked_rate() -> None:
    rate_per_s, duration_s = 2000.0, 10.0
    times = openloop.poisson_schedule(rate_per_s, duration_s, random.Random(7))
    expected = rate_per_s * duration_s
    assert abs(len(times) - expected) < 4 * math.sqrt(expected)  # Poisson count: sd = sqrt(n)
    assert times == sorted(times) and times[0] > 0 and times[-1] < duration_s
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean_s = statistics.fmean(gaps)
    assert abs(mean_s - 1 / rate_per_s) < 0.03 / rate_per_s
    # exponential gaps: standard deviation = mean, and 1 - 1/e of them below the mean
    assert abs(statistics.pstdev(gaps) / mean_s - 1) < 0.05
    assert abs(sum(g < mean_s for g in gaps) / len(gaps) - (1 - math.exp(-1))) < 0.02
    # per-second counts of a Poisson process: variance = mean (evenly spaced sends would be ~0)
    counts = [sum(1 for t in times if s <= t < s + 0.1) for s in [i / 10 for i in range(100)]]
    assert 0.6 < statistics.pvariance(counts) / statistics.fmean(counts) < 1.5
    assert openloop.poisson_schedule(0, 10, random.Random(1)) == []


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [openloop.percentile(values, p) for p in (0, 50, 90, 99, 100)] == [1, 50, 90, 99, 100]
    thousand = [float(v) for v in range(1, 1001)]
    assert openloop.percentile(thousand, 99) == 990
    assert openloop.percentile([5.0], 99) == 5.0
    assert math.isnan(openloop.percentile([], 50))


@asynccontextmanager
async def stub_server(
    service_s: float, status_of: Callable[[int], int] = lambda _n: 201, *, hang_up: bool = False
) -> AsyncIterator[int]:
    """HTTP/1.1 keep-alive server that answers one request at a time (a lock across all
    connections), each after service_s: a server with one worker. `hang_up`: it closes every
    connection after one answer without saying so (as an idle keep-alive timeout does)."""
    busy = asyncio.Lock()
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                async with busy:
                    await asyncio.sleep(service_s)
                    served += 1
                    status = status_of(served)
                body = b'{"payment_id":"pay_%d","status":"succeeded"}' % served
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)
                )
                await writer.drain()
                if hang_up:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()  # the client hung up, or the test is over

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def _requests(tmp_path: Path, count: int) -> list[bytes]:
    path = tmp_path / "charges.tsv"
    lines = [f'tk_1\t1700000000\tn{i}\tsig{i}\torder-{i}\t{{"n":{i}}}' for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return openloop.load_requests(path, "127.0.0.1:1")


def test_requests_are_built_from_the_charges_lua_file(tmp_path: Path) -> None:
    request = _requests(tmp_path, 3)[2]
    head, body = request.split(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/charges HTTP/1.1\r\n")
    assert b"Paycode-Nonce: n2" in head and b"Idempotency-Key: order-2" in head
    assert b"Content-Length: 7" in head and body == b'{"n":2}'


def test_latency_runs_from_the_scheduled_time(tmp_path: Path) -> None:
    """Ten requests due at once on a server serving one per 20 ms: the n-th waits for the n-1
    before it, so latencies are ~20, 40, ... 200 ms though each answer takes 20 ms to make.
    One at a time (sequential), the same server answers each in ~20 ms."""
    requests = _requests(tmp_path, 10)

    async def run() -> tuple[openloop.Outcome, openloop.Outcome]:
        async with stub_server(SERVICE_S) as port:
            limits = openloop.Limits(connections=4, outstanding=100, timeout_s=5, drain_s=5)
            burst = await openloop.open_loop("127.0.0.1", port, requests, [0.0] * 10, 201, limits)
            one = await openloop.sequential("127.0.0.1", port, requests, 0.1, 201)
            return burst, one

    burst, one = asyncio.run(run())
    latencies_s = sorted(burst.tally.latencies_s)
    assert burst.tally.ok == 10 and burst.unfinished == 0 and burst.connections_opened == 4
    for index, latency_s in enumerate(latencies_s):
        assert (index + 1) * SERVICE_S * 0.9 < latency_s < (index + 1) * SERVICE_S + 0.1
    result = openloop.summary(burst)
    assert result["max_ms"] >= 10 * SERVICE_S * 1000 * 0.9
    assert result["p50_ms"] >= 5 * SERVICE_S * 1000 * 0.9
    assert 3 <= one.tally.ok <= 6 and one.connections_opened == 1  # 0.1 s of 20 ms answers
    assert all(SERVICE_S * 0.9 < s < SERVICE_S + 0.03 for s in one.tally.latencies_s)


def test_counts_rates_and_payment_ids(tmp_path: Path) -> None:
    """200/s for 0.5 s on a fast server; every fifth answer is a 422."""
    requests = _requests(tmp_path, 300)
    schedule_s = openloop.poisson_schedule(200, 0.5, random.Random(3))

    async def run() -> openloop.Outcome:
        async with stub_server(0.0005, lambda n: 422 if n % 5 == 0 else 201) as port:
            limits = openloop.Limits(connections=8, outstanding=100, timeout_s=5, drain_s=5)
            return await openloop.open_loop(
                "127.0.0.1", port, requests, schedule_s, 201, limits, 200
            )

    outcome = asyncio.run(run())
    result = openloop.summary(outcome)
    sent = len(schedule_s)
    assert result["sent"] == result["scheduled"] == sent and result["unsent"] == 0
    assert result["bad"] == sent // 5 and result["ok"] == sent - sent // 5
    assert result["first_bad"].startswith("422 ")
    assert len(set(result["payment_ids"])) == result["ok"]
    assert "pay_5" not in result["payment_ids"] and "pay_4" in result["payment_ids"]
    # achieved = ok / (start to last answer): about the scheduled rate x the 201 share
    assert 0.6 * 200 * 0.8 < result["achieved_rate_per_s"] < 1.4 * 200 * 0.8
    assert result["cpu_s"] > 0 and result["cpu_per_request_ms"] > 0
    assert result["p99_ms"] < 100 and result["dispatch_lag_max_ms"] < 100


def test_a_connection_the_server_closed_is_replaced_once(tmp_path: Path) -> None:
    """A reused keep-alive connection the server has closed gives no byte of an answer: the
    request goes again on a new connection and nothing is counted as an error."""
    requests = _requests(tmp_path, 20)

    async def run() -> openloop.Outcome:
        async with stub_server(0.001, hang_up=True) as port:
            return await openloop.sequential("127.0.0.1", port, requests[:5], 5.0, 201)

    outcome = asyncio.run(run())
    assert outcome.tally.ok == 5 and not outcome.tally.errors
    assert outcome.connections_opened == 5 and outcome.reconnects == 4
