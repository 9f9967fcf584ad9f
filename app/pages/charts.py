"""Charts drawn on the server as SVG: nothing to load, nothing to run in the browser."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 14, 34
# Colours with at least 3:1 contrast on white, told apart by shape (dash) as well as hue.
COLOURS = ("#1f5fbf", "#b3460b", "#0b7a3e", "#6b3fa0")
DASHES = ("", "6 3", "2 3", "8 3 2 3")


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: Sequence[float | None]


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.3g}%"
    if unit == "ms":
        return f"{value:.0f} ms"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _nice_max(value: float, unit: str) -> float:
    """The top of the axis: a round number above every value, with four whole-number steps
    for counts and milliseconds."""
    if unit == "%":
        return next((top for top in (0.1, 0.2, 0.4, 0.8) if value * 1.1 <= top), 1.0)
    if value <= 4:
        return 4.0
    step = 10 ** max(0, len(str(int(value))) - 1)
    top = ((int(value * 1.1) // step) + 1) * step
    return float(top + (-top) % 4)


def _frame(title: str, labels: Sequence[str], top: float, unit: str) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [f'<title>{escape(title)}</title>',
             f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{plot_h}" '
             'fill="#ffffff" stroke="#6b6b6b" stroke-width="1"/>']
    for i in range(5):
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#d0d0d0" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11" fill="#333333">{escape(_fmt(value, unit))}</text>')
    step = max(1, len(labels) // 6)
    for i in range(0, len(labels), step):
        x = _x(i, len(labels))
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                     f'font-size="11" fill="#333333">{escape(labels[i][5:])}</text>')
    return parts


def _x(i: int, n: int) -> float:
    span = WIDTH - LEFT - RIGHT
    return LEFT + span * (i + 0.5) / max(n, 1)


def _svg(title: str, parts: list[str], legend: Sequence[str], empty: bool) -> Markup:
    if empty:
        parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT / 2}" '
                     'text-anchor="middle" font-size="13" fill="#4a4a4a">'
                     'Nothing in this period yet</text>')
    keys, x = [], LEFT
    for i, label in enumerate(legend):
        keys.append(f'<line x1="{x}" x2="{x + 18}" y1="{HEIGHT - 8}" y2="{HEIGHT - 8}" '
                    f'stroke="{COLOURS[i % 4]}" stroke-width="3" '
                    f'stroke-dasharray="{DASHES[i % 4]}"/>'
                    f'<text x="{x + 22}" y="{HEIGHT - 4}" font-size="11" fill="#333333">'
                    f'{escape(label)}</text>')
        x += 40 + 6 * len(label)
    body = "".join(parts + keys)
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '  # noqa: S704
                  f'role="img" aria-label="{escape(title)}" class="chart">{body}</svg>')


def line_chart(title: str, labels: Sequence[str], series: Sequence[Series],
               unit: str = "") -> Markup:
    """One line per series over the days in `labels`; a missing value breaks the line."""
    known = [v for s in series for v in s.values if v is not None]
    top = _nice_max(max(known, default=0.0), unit)
    plot_h = HEIGHT - TOP - BOTTOM
    parts = _frame(title, labels, top, unit)
    for k, s in enumerate(series):
        runs: list[list[str]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
                continue
            y = TOP + plot_h - plot_h * min(v, top) / top
            runs[-1].append(f"{_x(i, len(labels)):.1f},{y:.1f}")
            parts.append(f'<circle cx="{_x(i, len(labels)):.1f}" cy="{y:.1f}" r="2.5" '
                         f'fill="{COLOURS[k % 4]}"><title>{escape(labels[i])}: '
                         f'{escape(_fmt(v, unit))}</title></circle>')
        for run in runs:
            if len(run) > 1:
                parts.append(f'<polyline points="{" ".join(run)}" fill="none" '
                             f'stroke="{COLOURS[k % 4]}" stroke-width="2" '
                             f'stroke-dasharray="{DASHES[k % 4]}"/>')
    return _svg(title, parts, [s.label for s in series], not any(known))


def stacked_bars(title: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """Counts per day, one bar per day with each series stacked on the one before."""
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    top = _nice_max(max(totals, default=0.0), "")
    plot_h = HEIGHT - TOP - BOTTOM
    width = max(2.0, (WIDTH - LEFT - RIGHT) / max(len(labels), 1) * 0.7)
    parts = _frame(title, labels, top, "")
    for i in range(len(labels)):
        base = 0.0
        for k, s in enumerate(series):
            v = s.values[i] or 0
            if not v:
                continue
            y = TOP + plot_h - plot_h * (base + v) / top
            h = plot_h * v / top
            parts.append(f'<rect x="{_x(i, len(labels)) - width / 2:.1f}" y="{y:.1f}" '
                         f'width="{width:.1f}" height="{h:.1f}" fill="{COLOURS[k % 4]}">'
                         f'<title>{escape(labels[i])}: {escape(s.label)} {v:.0f}</title></rect>')
            base += v
    return _svg(title, parts, [s.label for s in series], not any(totals))


def column(rows: Sequence[dict[str, object]], pick: Callable[[dict[str, object]],
                                                             float | None]) -> list[float | None]:
    return [pick(r) for r in rows]
