"""Charts as inline SVG, rendered on the server from plain numbers: no JavaScript, no CDN, readable without CSS
(colours are attributes; CSS may restyle them), and each carries a <title> and text labels for screen readers.

Every text that reaches the SVG goes through django.utils.html.escape; numbers are formatted here.
"""

from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

HELD = "#b42318"
SUCCEEDED = "#067647"
BRAND = "#2f5bea"
GRID = "#e4e7ec"
MUTED = "#667085"
PRIORITY_COLOURS = {1: "#b42318", 2: "#dc6803", 3: "#98a2b3"}


def _n(x: float) -> str:
    """A coordinate: short, no exponent."""
    return f"{x:.1f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def _label(v: float | None, unit: str = "") -> str:
    if v is None:
        return "no data"
    text = f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"
    return f"{text}{unit}"


def _svg(width: int, height: int, title: str, body: list[str], css: str) -> SafeString:
    return mark_safe(
        f'<svg class="chart {escape(css)}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>")


def sparkline(series: list[tuple[str, list[int | float], str]], *, days: list | None = None, width: int = 168,
              height: int = 36, title: str = "") -> SafeString:
    """A few lines on one shared scale, e.g. [("held", [...], HELD), ("succeeded", [...], SUCCEEDED)]."""
    pad = 3
    top = max([max(values or [0]) for _n_, values, _c in series] + [1])
    body = []
    for name, values, colour in series:
        if not values:
            continue
        step = (width - 2 * pad) / max(len(values) - 1, 1)
        pts = " ".join(f"{_n(pad + i * step)},{_n(height - pad - (v / top) * (height - 2 * pad))}"
                       for i, v in enumerate(values))
        body.append(f'<polyline class="spark-{escape(name)}" fill="none" stroke="{escape(colour)}" '
                    f'stroke-width="1.5" stroke-linejoin="round" points="{pts}"/>')
        last_x = pad + (len(values) - 1) * step
        last_y = height - pad - (values[-1] / top) * (height - 2 * pad)
        body.append(f'<circle cx="{_n(last_x)}" cy="{_n(last_y)}" r="2" fill="{escape(colour)}"/>')
    summary = "; ".join(f"{name}: {', '.join(str(v) for v in values)}" for name, values, _c in series)
    span = f" ({days[0]:%d %b} – {days[-1]:%d %b})" if days else ""
    return _svg(width, height, f"{title}{span} — {summary}", body, "sparkline")


def line_chart(points: list[tuple[str, float | None]], *, width: int = 640, height: int = 200, unit: str = "",
               title: str = "", colour: str = BRAND) -> SafeString:
    """One series over labelled x positions (e.g. days); None is a gap. Y axis from 0 to a round maximum."""
    left, right, top_pad, bottom = 44, 10, 10, 24
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    values = [v for _l, v in points if v is not None]
    top = _round_up(max(values) if values else 1)
    body = []
    for i in range(5):  # grid lines and y labels
        y = top_pad + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{_n(y)}" y2="{_n(y)}" stroke="{GRID}"/>')
        body.append(f'<text x="{left - 4}" y="{_n(y + 4)}" text-anchor="end" font-size="10" fill="{MUTED}">'
                    f"{escape(_label(top * i / 4, unit))}</text>")
    step = plot_w / max(len(points) - 1, 1)

    def xy(i, v):
        return left + i * step, top_pad + plot_h - (v / top) * plot_h

    segment: list[str] = []
    segments = []
    for i, (lab, v) in enumerate(points):
        if v is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        x, y = xy(i, v)
        segment.append(f"{_n(x)},{_n(y)}")
        body.append(f'<circle cx="{_n(x)}" cy="{_n(y)}" r="2.5" fill="{escape(colour)}">'
                    f"<title>{escape(lab)}: {escape(_label(v, unit))}</title></circle>")
    if segment:
        segments.append(segment)
    for seg in segments:
        if len(seg) > 1:
            body.insert(0, f'<polyline fill="none" stroke="{escape(colour)}" stroke-width="2" '
                           f'points="{" ".join(seg)}"/>')
    if points:  # first, middle and last x labels
        for i in sorted({0, len(points) // 2, len(points) - 1}):
            x = left + i * step
            anchor = "start" if i == 0 else "end" if i == len(points) - 1 else "middle"
            body.append(f'<text x="{_n(x)}" y="{height - 6}" text-anchor="{anchor}" font-size="10" '
                        f'fill="{MUTED}">{escape(points[i][0])}</text>')
    if not values:
        body.append(f'<text x="{_n(left + plot_w / 2)}" y="{_n(top_pad + plot_h / 2)}" text-anchor="middle" '
                    f'font-size="12" fill="{MUTED}">no data in this period</text>')
    return _svg(width, height, title, body, "line")


def bar_chart(categories: list[str], series: list[tuple[str, list[float], str]], *, width: int = 640,
              height: int = 220, unit: str = "", title: str = "") -> SafeString:
    """Stacked bars: one bar per category, one segment per series, with a legend."""
    left, right, top_pad, bottom, legend_h = 44, 10, 22, 24, 0
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    totals = [sum(s[1][i] for s in series) for i in range(len(categories))]
    top = _round_up(max(totals) if totals else 1)
    body = []
    for i in range(5):
        y = top_pad + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{_n(y)}" y2="{_n(y)}" stroke="{GRID}"/>')
        body.append(f'<text x="{left - 4}" y="{_n(y + 4)}" text-anchor="end" font-size="10" fill="{MUTED}">'
                    f"{escape(_label(top * i / 4, unit))}</text>")
    slot = plot_w / max(len(categories), 1)
    bar_w = slot * 0.6
    for i, cat in enumerate(categories):
        x = left + i * slot + (slot - bar_w) / 2
        base = top_pad + plot_h
        for name, values, colour in series:
            v = values[i]
            if not v:
                continue
            h = (v / top) * plot_h
            base -= h
            body.append(f'<rect x="{_n(x)}" y="{_n(base)}" width="{_n(bar_w)}" height="{_n(h)}" '
                        f'fill="{escape(colour)}"><title>{escape(cat)} · {escape(name)}: '
                        f"{escape(_label(v, unit))}</title></rect>")
        body.append(f'<text x="{_n(x + bar_w / 2)}" y="{height - 6}" text-anchor="middle" font-size="10" '
                    f'fill="{MUTED}">{escape(cat)}</text>')
    lx = left
    for name, _values, colour in series:  # legend along the top
        body.append(f'<rect x="{_n(lx)}" y="4" width="10" height="10" fill="{escape(colour)}"/>'
                    f'<text x="{_n(lx + 14)}" y="13" font-size="11" fill="{MUTED}">{escape(name)}</text>')
        lx += 22 + 7 * len(name)
    return _svg(width, height + legend_h, title, body, "bars")


def _round_up(x: float) -> float:
    """A round axis maximum ≥ x: 1, 2, 2.5, 5 × 10^n."""
    if x <= 0:
        return 1
    magnitude = 10 ** (len(str(int(x))) - 1) if x >= 1 else 1
    for m in (1, 2, 2.5, 5, 10):
        if x <= m * magnitude:
            return m * magnitude
    return 10 * magnitude
