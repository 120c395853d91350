"""Inline SVG charts for the HTML report: stacked bars over time and horizontal bars. Pure.

Every string that reaches the markup goes through `esc` (log content is hostile). No scripts, no
external references: hover text is the SVG `<title>` element, which browsers show natively.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

PALETTE = ("#2f6db5", "#e07b39", "#3a9e5c", "#c8423b", "#8a63b8", "#8c6d4f", "#d26aa8", "#6f7780",
           "#b5a72f", "#2fa6b5")
OTHER_COLOR = "#b9bec4"
MAX_SERIES = len(PALETTE)
TITLE_LIMIT = 300  # characters of a name in hover text (log content can be megabytes)
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _nice_max(value: int) -> int:
    if value <= 5:
        return max(1, value)
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        top = int(step * magnitude)
        if top >= value:
            return top
    return value


def fold_series(series: Sequence[tuple[str, Sequence[int]]], limit: int = MAX_SERIES) -> list[tuple[str, list[int]]]:
    """At most `limit` series: the largest, then the rest summed as "other"."""
    ranked = sorted(series, key=lambda s: (-sum(s[1]), s[0]))
    kept = [(name, list(counts)) for name, counts in ranked[:limit - 1 if len(ranked) > limit else limit]]
    rest = ranked[len(kept):]
    if rest:
        kept.append(("other", [sum(c) for c in zip(*(r[1] for r in rest), strict=True)]))
    return kept


def stacked_bars(title: str, starts: Sequence[str], series: Sequence[tuple[str, Sequence[int]]],
                 width: int = 900, height: int = 240) -> str:
    """Stacked bars, one per time bucket, one colour per series, with a legend."""
    folded = fold_series(series)
    n = max(1, len(starts))
    left, right, top, bottom = 48, 10, 12, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s[1][i] for s in folded) if folded else 0 for i in range(n)]
    y_max = _nice_max(max(totals, default=0))
    bar_w = plot_w / n
    full_height = height + 22 * ((len(folded) + 3) // 4)
    parts = [f'<svg class="chart" role="img" aria-label="{esc(title)}" viewBox="0 0 {width} {full_height}" '
             f'width="{width}" {_FONT}>', f"<title>{esc(title)}</title>"]
    folded_other = len(series) > len(folded)
    colors = [OTHER_COLOR if folded_other and k == len(folded) - 1 else PALETTE[k % len(PALETTE)]
              for k in range(len(folded))]
    for frac in (0, 0.5, 1):
        y = top + plot_h - frac * plot_h
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#d8dce0"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{int(y_max * frac)}</text>')
    for i in range(n):
        y = top + plot_h
        x = left + i * bar_w
        for k, (name, counts) in enumerate(folded):
            value = counts[i] if i < len(counts) else 0
            if not value:
                continue
            h = value / y_max * plot_h
            y -= h
            color = colors[k]
            label = f"{clip(name, TITLE_LIMIT)}: {value} ({starts[i] if i < len(starts) else ''})"
            parts.append(f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(1.0, bar_w - 1):.1f}" height="{h:.1f}" '
                         f'fill="{color}"><title>{esc(label)}</title></rect>')
    step = max(1, n // 6)
    for i in range(0, n, step):
        x = left + i * bar_w
        parts.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" stroke="#555"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" fill="#555">{esc(starts[i][:16].replace("T", " "))}'
                     "</text>")
    for k, (name, counts) in enumerate(folded):
        col, row = k % 4, k // 4
        x, y = left + col * (plot_w / 4), height + row * 22 - 4
        color = colors[k]
        parts.append(f'<rect x="{x:.1f}" y="{y - 10}" width="12" height="12" fill="{color}"/>')
        parts.append(f'<text x="{x + 16:.1f}" y="{y}">{esc(clip(name, 24))} ({sum(counts)})</text>')
    parts.append("</svg>")
    return "".join(parts)


def hbars(title: str, items: Sequence[tuple[str, int]], color: str = PALETTE[0], width: int = 900,
          colors: Sequence[str] | None = None) -> str:
    """One horizontal bar per (label, value), largest scale = largest value."""
    row, label_w, top = 22, 260, 6
    height = top + row * max(1, len(items)) + 6
    v_max = max((v for _, v in items), default=0) or 1
    bar_space = width - label_w - 70
    parts = [f'<svg class="chart" role="img" aria-label="{esc(title)}" viewBox="0 0 {width} {height}" '
             f'width="{width}" {_FONT}>', f"<title>{esc(title)}</title>"]
    for i, (label, value) in enumerate(items):
        y = top + i * row
        w = max(1.0, value / v_max * bar_space) if value else 0.0
        fill = colors[i] if colors is not None and i < len(colors) else color
        parts.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end">{esc(clip(label, 40))}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{fill}">'
                     f"<title>{esc(clip(label, TITLE_LIMIT))}: {value}</title></rect>")
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 14}" fill="#333">{value}</text>')
    if not items:
        parts.append(f'<text x="{label_w}" y="{top + 14}" fill="#777">none</text>')
    parts.append("</svg>")
    return "".join(parts)
