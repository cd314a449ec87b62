"""Plot library: every figure is written as offline HTML (shared plotly.min.js) and as a PNG drawn by matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import plots


def _png_colours(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).reshape(-1, 3)


def _has_colour(pixels: np.ndarray, hex_colour: str, tolerance: int = 12) -> bool:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(pixels.astype(int) - rgb).max(1) <= tolerance).sum() > 50)


def test_save_figure_writes_offline_html_and_png(tmp_path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(x=[0, 1, 2], y=[3, 1, 2], mode="lines+markers", name="loss")])
    fig.update_layout(title="Loss", xaxis_title="step", yaxis_title="loss")
    files = plots.save_figure(fig, tmp_path / "sub" / "loss.curve")
    html = files["html"].read_text()
    assert files["html"].name == "loss.curve.html" and files["png"].name == "loss.curve.png"
    assert '<script charset="utf-8" src="plotly.min.js"></script>' in html and "cdn.plot.ly" not in html
    assert (tmp_path / "sub" / "plotly.min.js").stat().st_size > 1_000_000
    with Image.open(files["png"]) as png:
        assert png.size == (800, 450)
    assert _has_colour(_png_colours(files["png"]), plots.COLOURS[0])


def test_quality_plots_draw_their_data(tmp_path: Path) -> None:
    bar = plots.class_distribution({"car": 30, "person": 12, "dog": 3}, tmp_path / "classes")
    hist = plots.mask_area_histogram({"car": [0.01, 0.02, 0.02, 0.05], "dog": [0.2, 0.25]}, tmp_path / "areas")
    per_frame = plots.objects_per_frame([0, 1, 1, 2, 2, 2, 5], tmp_path / "density")
    timeline = plots.visibility_timeline({"v1": {"car #0": [0, 5, 10], "dog #1": [5, 10]}, "v2": {"car #0": [0]}},
                                         tmp_path / "timeline")
    shares = plots.label_shares({"train": {"car": 0.6, "dog": 0.4}, "val": {"car": 0.5, "dog": 0.5}},
                                tmp_path / "shares")
    for files in (bar, hist, per_frame, timeline, shares):
        assert files["html"].is_file() and "Plotly.newPlot" in files["html"].read_text()
    assert '"car","person","dog"' in bar["html"].read_text().replace(" ", "")  # largest class first
    assert _has_colour(_png_colours(bar["png"]), plots.COLOURS[0])
    hist_pixels = _png_colours(hist["png"])
    assert len(np.unique(hist_pixels, axis=0)) > 20
    assert _has_colour(_png_colours(shares["png"]), plots.COLOURS[1])  # the second split's bars
    with Image.open(timeline["png"]) as png:
        assert png.size[0] == 1000 and png.size[1] >= 160


def test_empty_data_still_gives_both_files(tmp_path: Path) -> None:
    for files in (plots.class_distribution({}, tmp_path / "a"), plots.mask_area_histogram({}, tmp_path / "b"),
                  plots.objects_per_frame([], tmp_path / "c"), plots.visibility_timeline({}, tmp_path / "d")):
        assert files["html"].is_file() and "no data" in files["html"].read_text()
        with Image.open(files["png"]) as png:
            assert png.size == (800, 450) or png.size[0] == 1000


def test_render_png_handles_heatmaps_and_horizontal_bars(tmp_path: Path) -> None:
    import plotly.graph_objects as go

    heat = go.Figure([go.Heatmap(z=[[0, 1], [2, 3]], x=["a", "b"], y=["c", "d"])])
    plots.render_png(heat, tmp_path / "heat.png")
    bars = go.Figure([go.Bar(y=["x", "y"], x=[3, 5], orientation="h", name="one"),
                      go.Bar(y=["x", "y"], x=[1, 2], orientation="h", name="two")])
    bars.update_layout(barmode="group")
    plots.render_png(bars, tmp_path / "bars.png")
    assert len(np.unique(_png_colours(tmp_path / "heat.png"), axis=0)) > 20
    pixels = _png_colours(tmp_path / "bars.png")
    assert _has_colour(pixels, plots.COLOURS[0]) and _has_colour(pixels, plots.COLOURS[1])
