"""Headline PNG figure for a bench run: one panel per metric, side by side, with one series per
(backend, precision) pair -- grouped bars per shape, or lines over a numeric field such as
``steps``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..core.files import atomic_write_bytes

PANEL_WIDTH_IN = 5.5
FIG_HEIGHT_IN = 4.0
DPI = 110


@dataclass(frozen=True)
class Panel:
    key: str            # record field plotted on the y axis
    label: str          # y-axis label
    log: bool = False   # log-scale y


def _value(record: dict, key: str) -> float | None:
    v = record.get(key)
    if v is None or isinstance(v, bool):
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _unique(items) -> list:
    return list(dict.fromkeys(items))


def _series_key(record: dict) -> tuple[str, str]:
    return (str(record.get("backend")), str(record.get("precision")))


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes,
            color="grey", fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])


def _bar_panel(ax, records, panel: Panel, series, colours, shapes) -> bool:
    values = {}
    for r in records:
        v = _value(r, panel.key)
        if v is not None and not (panel.log and v <= 0):
            values[(_series_key(r), str(r.get("shape")))] = v
    if not values:
        return False
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        xs, ys = [], []
        for g, shape in enumerate(shapes):
            if (s, shape) in values:
                xs.append(g - 0.4 + width * (i + 0.5))
                ys.append(values[(s, shape)])
        if not xs:
            continue
        bars = ax.bar(xs, ys, width=width, color=colours[s], label=f"{s[0]} {s[1]}")
        ax.bar_label(bars, labels=[f"{y:.4g}" for y in ys], fontsize=7, padding=2)
    ax.set_xticks(range(len(shapes)), shapes)
    ax.set_xlim(-0.6, len(shapes) - 0.4)
    if panel.log:
        ax.set_yscale("log")
    ax.margins(y=0.12)  # room for the value labels above the bars
    return True


def _line_panel(ax, records, panel: Panel, series, colours, shapes, x: str) -> bool:
    markers = "os^Dv<>p"
    points = []
    for r in records:
        xv, yv = _value(r, x), _value(r, panel.key)
        if xv is None or yv is None or (panel.log and yv <= 0):
            continue
        points.append((_series_key(r), str(r.get("shape")), xv, yv))
    if not points:
        return False
    # one line per series; per series and shape only where shapes share an x value (when the
    # shape is what x encodes — "10 steps" at x = 10 — splitting would leave single points)
    at_x: dict[tuple, set] = {}
    for s, shape, xv, _ in points:
        at_x.setdefault((s, xv), set()).add(shape)
    multi_shape = any(len(v) > 1 for v in at_x.values())
    lines: dict[tuple, list[tuple[float, float]]] = {}
    for s, shape, xv, yv in points:
        lines.setdefault((s, shape if multi_shape else ""), []).append((xv, yv))
    for s in series:
        for j, shape in enumerate(shapes if multi_shape else [""]):
            pts = sorted(lines.get((s, shape), []))
            if not pts:
                continue
            label = f"{s[0]} {s[1]}" + (f", {shape}" if multi_shape else "")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colours[s],
                    marker=markers[j % len(markers)], label=label)
    xs = [p[0] for pts in lines.values() for p in pts]
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    distinct = sorted(set(xs))
    if len(distinct) <= 12:
        # Tick exactly the measured x values (e.g. step counts); log-axis minor labels overlap.
        ax.set_xticks(distinct, [f"{v:g}" for v in distinct])
        ax.set_xticks([], minor=True)
    if panel.log:
        ax.set_yscale("log")
    return True


def write_plot(records: Sequence[dict], path: str | Path, title: str, panels: Sequence[Panel],
               x: str | None = None, x_label: str | None = None) -> Path | None:
    """Write the figure to ``path`` (atomically) and return it; None, writing nothing, if no
    records.

    ``x`` None: grouped bars, one group per ``shape``. ``x`` set: lines over ``record[x]``.
    """
    records = list(records)
    if not records or not panels:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    series = _unique(_series_key(r) for r in records)
    shapes = _unique(str(r.get("shape")) for r in records)
    palette = [f"C{i}" for i in range(10)]
    colours = {s: palette[i % len(palette)] for i, s in enumerate(series)}

    fig = Figure(figsize=(PANEL_WIDTH_IN * len(panels), FIG_HEIGHT_IN), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        if x is None:
            ok = _bar_panel(ax, records, panel, series, colours, shapes)
        else:
            ok = _line_panel(ax, records, panel, series, colours, shapes, x)
        if not ok:
            _no_data(ax)
        ax.set_ylabel(panel.label)
        if x is not None:
            ax.set_xlabel(x_label or x)
        elif x_label:
            ax.set_xlabel(x_label)
        if ok:
            ax.grid(True, axis="y", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(title)

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())     # a regular file only, replaced whole
    return path
