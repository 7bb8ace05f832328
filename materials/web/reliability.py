"""The model page's calibration section: the reliability diagram of the test split, before and
after the calibrator fitted on validation (``ModelVersion.metrics["calibration"]``)."""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go

from materials.web.figures import _layout


def reliability_figure(calibration: Mapping) -> go.Figure | None:
    """Observed fraction topological against mean predicted P, per equal-width bin of the
    test split, raw and calibrated; the diagonal is perfect calibration."""
    before = calibration.get("reliability_test_before") or []
    after = calibration.get("reliability_test_after") or []
    if not before and not after:
        return None
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated", line={"dash": "dot", "color": "#adb5bd"}
        )
    )
    for name, points, color in (
        (f"raw (ECE {calibration.get('ece_test_before', float('nan')):.3f})", before, "#868e96"),
        (f"calibrated (ECE {calibration.get('ece_test_after', float('nan')):.3f})", after, "#1c7ed6"),
    ):
        if points:
            figure.add_trace(
                go.Scatter(
                    x=[p["mean_probability"] for p in points],
                    y=[p["fraction_topological"] for p in points],
                    mode="lines+markers",
                    name=name,
                    marker={"size": [6 + min(p["count"], 40) / 2 for p in points], "color": color},
                    line={"color": color},
                    customdata=[p["count"] for p in points],
                    hovertemplate="mean P %{x:.2f}<br>observed %{y:.2f}<br>%{customdata} materials<extra></extra>",
                )
            )
    _layout(figure, "Reliability on the test split (calibrator fitted on validation)")
    figure.update_xaxes(title="mean predicted P(topological)", range=[0, 1])
    figure.update_yaxes(title="fraction topological", range=[0, 1])
    return figure
