"""Chart geometry for the dashboard: numbers in, rectangles out, drawn as inline SVG by the
template. No script and no chart library, so the page needs nothing from the internet and the
Content-Security-Policy can forbid scripts altogether."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CHART_WIDTH = 720
CHART_HEIGHT = 180
AXIS_LEFT = 40
"""Room for the count labels left of the bars."""
AXIS_BOTTOM = 20
"""Room for the hour labels under the bars."""
AXIS_TOP = 10
"""Room for the top count label above the tallest bar."""
BAR_GAP = 4
HOUR_LABEL_EVERY = 3


@dataclass(frozen=True, slots=True)
class Bar:
    x: int
    y: int
    width: int
    height: int
    label: str
    value: int
    show_label: bool


@dataclass(frozen=True, slots=True)
class Tick:
    y: int
    value: int


@dataclass(frozen=True, slots=True)
class BarChart:
    width: int
    height: int
    plot_left: int
    plot_bottom: int
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]


def nice_max(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50 ... at or above `value` (an axis top)."""
    assert value >= 0
    top = 1
    for _ in range(20):  # 5 x 10^19 exceeds any count a day can hold
        for step in (1, 2, 5):
            if top * step >= value:
                return top * step
        top *= 10
    raise AssertionError(f"no axis top for {value}")


def hourly(per_hour: Sequence[int]) -> BarChart:
    """One bar per hour, heights scaled to a round axis top, three ticks (0, half, top)."""
    assert all(count >= 0 for count in per_hour)
    top = nice_max(max(per_hour, default=0))
    plot_height = CHART_HEIGHT - AXIS_BOTTOM - AXIS_TOP
    plot_bottom = AXIS_TOP + plot_height
    plot_width = CHART_WIDTH - AXIS_LEFT
    slot = plot_width // max(len(per_hour), 1)
    bars = []
    for hour, count in enumerate(per_hour):
        height = round(plot_height * count / top)
        bars.append(
            Bar(
                x=AXIS_LEFT + hour * slot + BAR_GAP // 2,
                y=plot_bottom - height,
                width=slot - BAR_GAP,
                height=height,
                label=f"{hour:02d}",
                value=count,
                show_label=hour % HOUR_LABEL_EVERY == 0,
            )
        )
    ticks = tuple(
        Tick(y=plot_bottom - round(plot_height * value / top), value=value)
        for value in sorted({0, top // 2, top})
    )
    return BarChart(CHART_WIDTH, CHART_HEIGHT, AXIS_LEFT, plot_bottom, tuple(bars), ticks)


def shares(counts: Sequence[int]) -> tuple[int, ...]:
    """Each count as a whole percentage of the largest (bar lengths for a list of outcomes)."""
    largest = max(counts, default=0)
    if largest == 0:
        return tuple(0 for _ in counts)
    return tuple(round(100 * count / largest) for count in counts)
