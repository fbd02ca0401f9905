"""Chart geometry of the dashboard (server/dashboard_chart.py): pure arithmetic, checked here
so the HTTP and browser tests can trust the bars they read."""

from __future__ import annotations

import pytest

from paycode.server.dashboard.chart import (
    AXIS_TOP,
    CHART_HEIGHT,
    HOUR_LABEL_EVERY,
    hourly,
    nice_max,
    shares,
)


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (5, 5), (6, 10), (11, 20), (999, 1000)]
)
def test_nice_max_is_the_next_round_number(value: int, top: int) -> None:
    assert nice_max(value) == top


def test_bars_scale_to_the_axis_and_stay_inside_the_plot() -> None:
    counts = [0] * 24
    counts[9], counts[12] = 7, 3
    chart = hourly(counts)
    assert len(chart.bars) == 24
    by_hour = {bar.label: bar for bar in chart.bars}
    assert by_hour["09"].value == 7 and by_hour["12"].value == 3
    plot_height = chart.plot_bottom - AXIS_TOP
    assert by_hour["09"].height == round(plot_height * 7 / 10)  # axis top: 10
    assert by_hour["00"].height == 0
    for bar in chart.bars:
        assert bar.y >= AXIS_TOP and bar.y + bar.height == chart.plot_bottom
        assert bar.x >= chart.plot_left and bar.x + bar.width <= chart.width
    assert chart.plot_bottom < CHART_HEIGHT
    assert [tick.value for tick in chart.ticks] == [0, 5, 10]
    assert chart.ticks[-1].y == AXIS_TOP
    assert sum(bar.show_label for bar in chart.bars) == 24 // HOUR_LABEL_EVERY


def test_an_empty_day_draws_flat_bars() -> None:
    chart = hourly([0] * 24)
    assert all(bar.height == 0 for bar in chart.bars)
    assert [tick.value for tick in chart.ticks] == [0, 1]


def test_shares_are_percent_of_the_largest() -> None:
    assert shares([8, 2, 1]) == (100, 25, 12)
    assert shares([0, 0]) == (0, 0)
    assert shares([]) == ()
