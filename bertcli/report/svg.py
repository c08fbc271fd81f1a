"""Line charts as inline SVG: axes with ticks, lines, points and dashed baselines; nothing else.

A chart is a pure function of its series. Each drawn path carries its run and metric, and the
`<svg>` carries its data-to-pixel mapping (`data-x0 data-x1 data-y0 data-y1` over the plot box
`data-box`), so a test can read every drawn vertex back as a (step, value) pair and compare it
with metrics.jsonl.

Long series are thinned per pixel column, never averaged: in each of `MAX_BUCKETS` equal slices
of the x range the first, lowest, highest and last points are kept (in their order), so every
spike and the final value stay on the chart and every drawn point is a logged one.

This module knows nothing about runs or metrics; page.py decides what to draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

import numpy as np

WIDTH, HEIGHT = 560, 280
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 12, 40
MAX_BUCKETS = 400
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")

Point = tuple[float, float]


@dataclass
class Series:
    """One line (or set of points) of a chart; `segments` are runs of points drawn connected."""

    label: str  # the legend's text
    segments: list[list[Point]]
    color: str
    style: str = "line"  # line | points | dashed
    meta: dict = field(default_factory=dict)  # written as data-* attributes on the path (run, key)

    @property
    def points(self) -> list[Point]:
        return [p for s in self.segments for p in s]


def thin(x: np.ndarray, y: np.ndarray, x_min: float, x_max: float, buckets: int = MAX_BUCKETS) -> np.ndarray:
    """Indices of the points to draw: all of them when few, else in each of `buckets` equal slices of
    [x_min, x_max] the first, lowest, highest and last point of each run of points in that slice."""
    n = len(x)
    if n <= 4 * buckets:
        return np.arange(n)
    span = (x_max - x_min) or 1.0
    bucket = np.clip(((x - x_min) / span * buckets).astype(np.int64), 0, buckets - 1)
    group = np.concatenate([[0], np.cumsum(bucket[1:] != bucket[:-1])])  # consecutive points in one slice
    starts = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
    ends = np.concatenate([starts[1:], [n]]) - 1
    by_value = np.lexsort((y, group))  # within each group, ascending y
    lowest, highest = by_value[starts], by_value[ends]
    return np.unique(np.concatenate([starts, ends, lowest, highest]))


def nice_ticks(lo: float, hi: float, count: int = 5, whole: bool = False) -> list[float]:
    """Round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi]; `whole`: at least 1 apart (steps)."""
    if hi <= lo:
        return [lo]
    raw = max((hi - lo) / max(count, 1), 1.0 if whole else 0.0)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def format_number(v: float, percent: bool = False) -> str:
    if percent:
        return f"{v * 100:.3g}%"
    a = abs(v)
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= limit:
            return f"{v / limit:.3g}{suffix}"
    if a == 0:
        return "0"
    return f"{v:.3g}"


def _range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:  # one point, or a flat line: give it room
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def line_chart(series: list[Series], x_label: str, percent: bool = False, y_floor: float | None = None) -> str:
    """An <svg> of the series (at least one with a point); y_floor: the y axis starts no lower.
    The x values are counts (steps, tokens): ticks are whole numbers."""
    drawn = [s for s in series if s.points]
    xs = [p[0] for s in drawn for p in s.points]
    ys = [p[1] for s in drawn for p in s.points]
    x0, x1 = (min(xs), max(xs)) if min(xs) < max(xs) else (min(xs) - 1, min(xs) + 1)
    y0, y1 = _range(ys)
    if y_floor is not None and y0 < y_floor <= min(ys):
        y0 = y_floor
    left, top = MARGIN_LEFT, MARGIN_TOP
    w, h = WIDTH - MARGIN_LEFT - MARGIN_RIGHT, HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * w

    def py(y: float) -> float:
        return top + h - (y - y0) / (y1 - y0) * h

    out = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
           f'role="img" data-x0="{x0!r}" data-x1="{x1!r}" data-y0="{y0!r}" data-y1="{y1!r}" '
           f'data-box="{left} {top} {w} {h}">']
    out.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" class="plot"/>')
    for t in nice_ticks(y0, y1):
        y = py(t)
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{format_number(t, percent)}</text>')
    for t in nice_ticks(x0, x1, 6, whole=True):
        x = px(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + h}" class="grid"/>'
                   f'<text x="{x:.1f}" y="{top + h + 16}" class="tick" text-anchor="middle">{format_number(t)}</text>')
    out.append(f'<text x="{left + w / 2}" y="{HEIGHT - 6}" class="axis" text-anchor="middle">{escape(x_label)}</text>')
    for s in drawn:
        attrs = " ".join(f'data-{k}="{escape(str(v))}"' for k, v in s.meta.items())
        if s.style == "points" or all(len(seg) == 1 for seg in s.segments):
            dots = "".join(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5"/>' for x, y in s.points)
            out.append(f'<g fill="{s.color}" class="points" {attrs}>{dots}</g>')
            continue
        d = " ".join("M" + " L".join(f"{px(x):.1f},{py(y):.1f}" for x, y in seg) for seg in s.segments)
        dash = ' stroke-dasharray="6 4"' if s.style == "dashed" else ""
        out.append(f'<path d="{d}" fill="none" stroke="{s.color}" stroke-width="1.6"{dash} class="{s.style}" {attrs}/>')
    out.append("</svg>")
    return "".join(out)


def legend(series: list[Series]) -> str:
    """The chart's legend as HTML (it wraps, and stays readable however many runs there are)."""
    items = []
    for s in series:
        if not s.points:
            continue
        mark = {"points": "●", "dashed": "┄┄"}.get(s.style, "━━")
        items.append(f'<span><b style="color:{s.color}">{mark}</b> {escape(s.label)}</span>')
    return f'<div class="legend">{"".join(items)}</div>'
