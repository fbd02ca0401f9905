"""Samples held in-process (paycode.server.operations.metric_buffer) add up, once flushed, to
exactly what prometheus_client's own calls would have recorded."""

from __future__ import annotations

import os
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from paycode.server.operations import metrics, observability
from paycode.server.operations.metric_buffer import MetricBuffer

BUCKETS_S = metrics.LATENCY_BUCKETS_S
LABELS = ("POST", "/v1/charges", "201")
VALUES_S = [0.0, 0.001, 0.0010001, 0.0031, 0.025, 0.02500001, 9.9, 10.0, 11.0, -0.5, float("inf")]
THREADS = 8
INCS_PER_THREAD = 2000
WAIT_S_MAX = 5.0
POLL_S = 0.02


def _metrics(registry: CollectorRegistry) -> tuple[Histogram, Counter]:
    histogram = Histogram("t_seconds", "t", ["method", "route", "status"], buckets=BUCKETS_S,
                          registry=registry)  # fmt: skip
    return histogram, Counter("t_things", "t", ["outcome"], registry=registry)


def _histogram_samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith("t_seconds") and not sample.name.endswith("_created")
    }


def test_a_flush_records_what_observe_would_have() -> None:
    direct, buffered = CollectorRegistry(), CollectorRegistry()
    direct_histogram, _ = _metrics(direct)
    histogram, _ = _metrics(buffered)
    buffer = MetricBuffer(autostart=False)
    for value in VALUES_S * 3:
        direct_histogram.labels(*LABELS).observe(value)
        buffer.observe(histogram, LABELS, value)
    assert _histogram_samples(buffered) == {}  # held, not written
    buffer.flush()
    expected = _histogram_samples(direct)
    assert expected[("t_seconds_count", "")] == len(VALUES_S) * 3
    assert _histogram_samples(buffered) == expected
    buffer.flush()  # nothing held: nothing added twice
    assert _histogram_samples(buffered) == expected


def test_counts_from_many_threads_all_arrive() -> None:
    registry = CollectorRegistry()
    _, counter = _metrics(registry)
    buffer = MetricBuffer(autostart=False)

    def count() -> None:
        for _ in range(INCS_PER_THREAD):
            buffer.inc(counter, ("succeeded",))
        buffer.inc(counter, ("code_replayed",), 2)

    threads = [threading.Thread(target=count) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for _ in range(5):  # flushes racing with the counting lose nothing
        buffer.flush()
    for thread in threads:
        thread.join()
    buffer.flush()
    assert registry.get_sample_value("t_things_total", {"outcome": "succeeded"}) == (
        THREADS * INCS_PER_THREAD
    )
    assert registry.get_sample_value("t_things_total", {"outcome": "code_replayed"}) == 2 * THREADS


def test_the_first_sample_starts_the_periodic_flush() -> None:
    registry = CollectorRegistry()
    _, counter = _metrics(registry)
    buffer = MetricBuffer(interval_s=0.05)
    assert not buffer.started
    buffer.inc(counter, ("succeeded",))
    assert buffer.started
    deadline = time.monotonic() + WAIT_S_MAX
    while registry.get_sample_value("t_things_total", {"outcome": "succeeded"}) != 1.0:
        assert time.monotonic() < deadline, "the flushing thread never wrote the sample"
        time.sleep(POLL_S)
    buffer.stop()


def test_stop_writes_what_is_held() -> None:
    registry = CollectorRegistry()
    _, counter = _metrics(registry)
    buffer = MetricBuffer(interval_s=3600)
    buffer.inc(counter, ("succeeded",), 3)
    assert registry.get_sample_value("t_things_total", {"outcome": "succeeded"}) is None
    buffer.stop()
    assert registry.get_sample_value("t_things_total", {"outcome": "succeeded"}) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_drops_what_its_parent_held() -> None:
    registry = CollectorRegistry()
    _, counter = _metrics(registry)
    buffer = MetricBuffer(autostart=False)
    buffer.inc(counter, ("succeeded",), 5)
    pid = os.fork()
    if pid == 0:  # the child: the parent's 5 are the parent's to write
        buffer.flush()
        ok = registry.get_sample_value("t_things_total", {"outcome": "succeeded"}) is None
        os._exit(0 if ok and not buffer.started else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    buffer.flush()
    assert registry.get_sample_value("t_things_total", {"outcome": "succeeded"}) == 5


def test_the_worker_exit_hook_flushes_the_app_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "BUFFER", MetricBuffer(autostart=False))
    labels = {"outcome": "worker_exit_test", "code_version": "v2"}
    before = metrics.REGISTRY.get_sample_value("paycode_charges_total", labels) or 0.0
    metrics.BUFFER.inc(metrics.CHARGES, ("worker_exit_test", "v2"))
    assert (metrics.REGISTRY.get_sample_value("paycode_charges_total", labels) or 0.0) == before
    observability.gunicorn_worker_exit(None, None)
    assert metrics.REGISTRY.get_sample_value("paycode_charges_total", labels) == before + 1
