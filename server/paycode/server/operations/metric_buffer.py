"""Counts and observations kept in this process, added to prometheus_client's values in bulk.

    MetricBuffer.inc(counter, labels)            a counter increment, held
    MetricBuffer.observe(histogram, labels, v)   a histogram observation, held (bucket + sum)
    MetricBuffer.flush()                         everything held, added to the metrics
    MetricBuffer.start()                         a daemon thread that flushes every interval_s

Under `serve` (multiprocess mode) every prometheus_client increment is a write into a memory
mapped file behind one process-wide lock, with a getpid() check each time: a request paid for
three or four of them. Here a request costs a dict update under a lock, and the writes happen
once per label set per flush: every FLUSH_INTERVAL_S from a daemon thread started on the first
sample after a fork, before this process renders /metrics, and at exit (the gunicorn worker's
`worker_exit` hook, else atexit). A scrape answered by another worker therefore sees this
worker's samples up to FLUSH_INTERVAL_S late (docs/operations.md, "Metrics").

Label values are bounded by their callers (routes are URL rules, outcomes stable codes), so
the held label sets are too; KEYS_MAX is a backstop that flushes at once beyond it.
"""

from __future__ import annotations

import atexit
import bisect
import math
import os
import threading

from prometheus_client import Counter, Histogram

FLUSH_INTERVAL_S = 1.0
KEYS_MAX = 4096
"""Held label sets beyond which a sample flushes at once (never reached with bounded labels)."""

Labels = tuple[str, ...]


class MetricBuffer:
    """Thread-safe (gthread workers serve requests from several threads): one lock guards the
    held samples; a second one lets one flush at a time write, so an exit flush waits for the
    thread's flush in progress instead of finding the buffer already empty."""

    def __init__(self, *, interval_s: float = FLUSH_INTERVAL_S, autostart: bool = True) -> None:
        """`autostart`: the first sample (after a fork too) starts the flushing thread."""
        self._interval_s = interval_s
        self._autostart = autostart
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._counts: dict[tuple[Counter, Labels], float] = {}
        self._observations: dict[tuple[Histogram, Labels], list[float]] = {}
        """Per histogram and label set: one count per bucket, then the sum."""
        self._bounds: dict[Histogram, list[float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        os.register_at_fork(after_in_child=self._forked)

    def inc(self, counter: Counter, labels: Labels, amount: float = 1.0) -> None:
        key = (counter, labels)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0.0) + amount
            full = len(self._counts) > KEYS_MAX
        if full:
            self.flush()
        if self._thread is None and self._autostart:
            self.start()

    def observe(self, histogram: Histogram, labels: Labels, value: float) -> None:
        if math.isnan(value):
            return  # prometheus_client would add it to the sum and to no bucket: nothing useful
        bounds = self._bounds.get(histogram) or self._bounds_of(histogram)
        index = bisect.bisect_left(bounds, value)  # the first bucket with value <= its bound
        key = (histogram, labels)
        with self._lock:
            held = self._observations.get(key)
            if held is None:
                held = self._observations[key] = [0.0] * (len(bounds) + 1)
            held[index] += 1
            held[-1] += value
            full = len(self._observations) > KEYS_MAX
        if full:
            self.flush()
        if self._thread is None and self._autostart:
            self.start()

    def flush(self) -> None:
        """Add what is held to the metrics (bounded: one write per held value)."""
        with self._flush_lock:
            with self._lock:
                counts, self._counts = self._counts, {}
                observations, self._observations = self._observations, {}
            for (counter, labels), amount in counts.items():
                counter.labels(*labels).inc(amount)
            for (histogram, labels), held in observations.items():
                _add_observations(histogram, labels, held)

    def start(self) -> None:
        """Flush every interval_s from a daemon thread, and once more at exit. Idempotent; call
        it after a fork (the thread does not survive one): with autostart the first sample
        does."""
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            thread = self._thread = threading.Thread(
                target=self._run,
                args=(self._interval_s,),
                name="paycode-metrics-flush",
                daemon=True,
            )
        thread.start()
        atexit.register(self.stop)

    @property
    def started(self) -> bool:
        return self._thread is not None

    def stop(self) -> None:
        """The last flush: the thread ends, then everything it had not written is written."""
        self._stop.set()
        self.flush()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):  # ends with the process, or at stop()
            self.flush()

    def _bounds_of(self, histogram: Histogram) -> list[float]:
        bounds = list(histogram._upper_bounds)  # ends with +Inf
        self._bounds[histogram] = bounds
        return bounds

    def _forked(self) -> None:
        """In a forked child: what the parent held is the parent's to write; no thread runs."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._counts, self._observations = {}, {}
        self._stop = threading.Event()
        self._thread = None


def _add_observations(histogram: Histogram, labels: Labels, held: list[float]) -> None:
    """What `count` observations would have added: prometheus_client's Histogram keeps one
    value per bucket and the sum (its private _buckets and _sum, checked by
    tests/server/test_metric_buffer.py against observe())."""
    child = histogram.labels(*labels)
    for value, count in zip(child._buckets, held[:-1], strict=True):
        if count:
            value.inc(count)
    child._sum.inc(held[-1])
