"""Plot library: small functions that build a plotly figure from plain data and save it as HTML + PNG.

`save_figure(fig, stem)` writes `<stem>.html` (interactive; plotly.js in one shared `plotly.min.js` next to it, so it
works offline) and `<stem>.png`, drawn by matplotlib from the same traces (bar, histogram, scatter, heatmap), so no
browser or kaleido is needed. A new plot is a function that builds `go.Figure(...)` and calls `save_figure`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880", "#ff97ff",
           "#fecb52"]  # plotly's default colour way, so HTML and PNG agree


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def _layout(fig: Any, title: str, x: str, y: str, **extra: Any) -> Any:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white", **extra)
    if not fig.data:
        fig.add_annotation(text="no data", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def save_figure(fig: Any, path_stem: str | Path) -> dict[str, Path]:
    """Write `<stem>.html` (offline plotly, shared plotly.min.js beside it) and `<stem>.png` (matplotlib)."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    html, png = stem.parent / f"{stem.name}.html", stem.parent / f"{stem.name}.png"
    fig.write_html(html, include_plotlyjs="directory", full_html=True)
    render_png(fig, png)
    return {"html": html, "png": png}


def render_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Draw a plotly figure's bar/histogram/scatter/heatmap traces with matplotlib (Agg, no global state)."""
    from matplotlib.figure import Figure

    layout = fig.layout
    width, height = (layout.width or 800) / dpi, (layout.height or 450) / dpi
    mfig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    ax = mfig.subplots()
    bars = [t for t in fig.data if t.type == "bar"]
    hist_bins = _shared_bins([t for t in fig.data if t.type == "histogram"])
    for i, trace in enumerate(fig.data):
        colour = _colour(trace, i)
        if trace.type == "bar":
            _draw_bar(ax, trace, bars.index(trace), len(bars), layout.barmode or "group", colour)
        elif trace.type == "histogram":
            ax.hist(list(trace.x or []), bins=hist_bins, alpha=0.6 if len(fig.data) > 1 else 0.9, color=colour,
                    label=trace.name)
        elif trace.type in ("scatter", "scattergl"):
            mode = trace.mode or "lines+markers"
            ax.plot(list(trace.x or []), list(trace.y or []), color=colour, label=trace.name,
                    linestyle="-" if "lines" in mode else "none", marker="s" if "markers" in mode else None,
                    markersize=4)
        elif trace.type == "heatmap":
            _draw_heatmap(ax, trace)
        else:
            ax.text(0.5, 0.5, f"({trace.type} not drawn in the PNG; see the HTML)", ha="center",
                    transform=ax.transAxes)
    if not fig.data:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(layout.title.text or "")
    ax.set_xlabel(layout.xaxis.title.text or "")
    ax.set_ylabel(layout.yaxis.title.text or "")
    if layout.yaxis.type == "log":
        ax.set_yscale("log")
    if sum(bool(t.name) for t in fig.data) > 1 and layout.showlegend is not False:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    mfig.savefig(path)
    return Path(path)


def _colour(trace: Any, index: int) -> str:
    colour = getattr(getattr(trace, "marker", None), "color", None)
    return colour if isinstance(colour, str) else COLOURS[index % len(COLOURS)]


def _shared_bins(traces: list[Any]) -> Any:
    import numpy as np

    values = [float(v) for t in traces for v in (t.x or [])]
    if not values:
        return 10
    count = max((t.nbinsx or 0) for t in traces) or 30
    low, high = min(values), max(values)
    return np.linspace(low, high if high > low else low + 1, count + 1)


def _draw_bar(ax: Any, trace: Any, k: int, n: int, barmode: str, colour: str) -> None:
    import numpy as np

    horizontal = trace.orientation == "h"
    xs, ys = list(trace.x or []), list(trace.y or [])
    cats, vals = (ys, xs) if horizontal else (xs, ys)
    positions = np.arange(len(cats), dtype=float)
    width = 0.8 / n if barmode == "group" else 0.8
    offset = (k - (n - 1) / 2) * width if barmode == "group" else 0.0
    draw = ax.barh if horizontal else ax.bar
    draw(positions + offset, vals, width, color=colour, label=trace.name, alpha=0.7 if barmode == "overlay" else 1.0)
    ticks = ax.set_yticks if horizontal else ax.set_xticks
    ticks(positions, [str(c) for c in cats], rotation=0 if horizontal or len(cats) < 8 else 45,
          fontsize="small")


def _draw_heatmap(ax: Any, trace: Any) -> None:
    import numpy as np

    z = np.asarray(trace.z, dtype=float)
    image = ax.imshow(z, aspect="auto", cmap="viridis", origin="lower")
    ax.figure.colorbar(image, ax=ax)
    if trace.x is not None:
        ax.set_xticks(range(len(trace.x)), [str(v) for v in trace.x], fontsize="small")
    if trace.y is not None:
        ax.set_yticks(range(len(trace.y)), [str(v) for v in trace.y], fontsize="small")


# ---------------------------------------------------------------- data quality


def class_distribution(counts: dict[str, int], path_stem: str | Path) -> dict[str, Path]:
    """Objects per label, largest first."""
    go = _go()
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    fig = go.Figure([go.Bar(x=[k for k, _ in ordered], y=[v for _, v in ordered], name="objects")] if counts else [])
    return save_figure(_layout(fig, "Class distribution", "label", "objects"), path_stem)


def mask_area_histogram(fractions: dict[str, list[float]], path_stem: str | Path) -> dict[str, Path]:
    """Mask area as % of the frame, one overlaid histogram per label."""
    go = _go()
    traces = [go.Histogram(x=[100 * v for v in values], name=label, nbinsx=30, opacity=0.6)
              for label, values in sorted(fractions.items()) if values]
    fig = go.Figure(traces)
    return save_figure(_layout(fig, "Mask area per label", "mask area (% of frame)", "objects", barmode="overlay"),
                       path_stem)


def objects_per_frame(per_frame: list[int], path_stem: str | Path) -> dict[str, Path]:
    """How many frames have 0, 1, 2, ... objects."""
    go = _go()
    top = max(per_frame, default=-1)
    fig = go.Figure([go.Bar(x=list(range(top + 1)), y=[per_frame.count(k) for k in range(top + 1)], name="frames")]
                    if per_frame else [])
    return save_figure(_layout(fig, "Objects per frame", "objects in the frame", "frames"), path_stem)


def visibility_timeline(timeline: dict[str, dict[str, list[int]]], path_stem: str | Path) -> dict[str, Path]:
    """For each video, the frames in which each object has a mask (one row per object, one colour per video)."""
    go = _go()
    traces, rows = [], 0
    for video_id, objects in sorted(timeline.items()):
        xs, ys = [], []
        for name, frames in sorted(objects.items()):
            xs += frames
            ys += [f"{_short(video_id)} · {name}"] * len(frames)
            rows += 1
        traces.append(go.Scatter(x=xs, y=ys, mode="markers", name=video_id, marker={"symbol": "square", "size": 6}))
    fig = go.Figure(traces)
    return save_figure(_layout(fig, "Object visibility per video", "frame index", "", height=min(2000, 160 + 24 * rows),
                               width=1000, showlegend=False), path_stem)


def _short(text: str, keep: int = 22) -> str:
    return text if len(text) <= keep else f"{text[: keep - 8]}…{text[-7:]}"


def label_shares(shares: dict[str, dict[str, float]], path_stem: str | Path) -> dict[str, Path]:
    """Each label's share (% of objects) per split, grouped by label ({split: {label: share}})."""
    go = _go()
    labels = sorted({label for per in shares.values() for label in per})
    traces = [go.Bar(x=labels, y=[100 * per.get(label, 0.0) for label in labels], name=split)
              for split, per in shares.items()]
    fig = go.Figure(traces if labels else [])
    return save_figure(_layout(fig, "Label share per split", "label", "% of the split's objects", barmode="group"),
                       path_stem)
