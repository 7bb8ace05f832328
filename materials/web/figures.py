"""Plotly figures for the pages, built on the server and drawn by the local plotly.js.

Every builder returns a ``plotly.graph_objects.Figure``; :func:`figure_json` turns one
into JSON that is safe inside ``<script type="application/json">``, and
``static/js/charts.js`` draws every such figure. plotly.js itself is served from the
installed Python package (``{% static 'vendor/plotly.min.js' %}``), never a CDN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import plotly.graph_objects as go
import plotly.io as pio
from django.utils.safestring import SafeString, mark_safe

TOPOLOGICAL_COLOR = "#d9480f"
TRIVIAL_COLOR = "#1864ab"
SUBSET_COLORS = {"train": "#495057", "validation": "#f08c00", "test": "#2b8a3e"}
FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"

# --- Periodic table -------------------------------------------------------------------

# Every symbol H..Og by atomic number: catalogues list elements beyond the models'
# vocabulary (H..Pu), e.g. Rf in the Arsenal, and they still need a cell.
_SYMBOL_TEXT = """H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr
    Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu
    Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr
    Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"""
SYMBOLS: tuple[str, ...] = tuple(_SYMBOL_TEXT.split())
ATOMIC_NUMBER = {symbol: z for z, symbol in enumerate(SYMBOLS, start=1)}
N_ROWS, N_COLUMNS = 10, 18  # periods 1-7, a spacer row, then the lanthanide and actinide rows


def table_position(z: int) -> tuple[int, int]:
    """(row, column), both from 0, of element ``z`` in the 18-column periodic table.

    The lanthanides (57-71) and actinides (89-103) sit in rows 8 and 9, below a
    spacer row, as in the usual printed table.
    """
    if z == 1:
        return 0, 0
    if z == 2:
        return 0, 17
    if z <= 18:  # periods 2 and 3: two s-block columns, then six p-block columns
        period_start = 3 if z <= 10 else 11
        offset = z - period_start
        return (1 if z <= 10 else 2), (offset if offset < 2 else offset + 10)
    if z <= 54:  # periods 4 and 5: all 18 columns
        period_start = 19 if z <= 36 else 37
        return (3 if z <= 36 else 4), z - period_start
    if 57 <= z <= 71:
        return 8, z - 57 + 2
    if 89 <= z <= 103:
        return 9, z - 89 + 2
    row, period_start = (5, 55) if z <= 86 else (6, 87)
    offset = z - period_start
    if offset < 2:
        return row, offset
    return row, offset - 14  # past the f block: Hf (72) and Rf (104) in column 4 (index 3)


POSITIONS: dict[str, tuple[int, int]] = {symbol: table_position(z) for symbol, z in ATOMIC_NUMBER.items()}


def periodic_table_figure(
    values: Mapping[str, float | None],
    *,
    title: str,
    colorbar_title: str,
    hover: Mapping[str, str] | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    colorscale: str = "Viridis",
    cell_values: Mapping[str, str] | None = None,
) -> go.Figure:
    """A heatmap of one value per element laid out as the periodic table.

    Elements without a value are drawn grey, so the table keeps its shape. ``hover``
    gives extra hover text per element (support, counts…); ``cell_values`` a short
    string printed under the symbol.
    """
    hover = hover or {}
    cell_values = cell_values or {}
    background_z = [[None] * N_COLUMNS for _ in range(N_ROWS)]
    background_text = [[""] * N_COLUMNS for _ in range(N_ROWS)]
    z = [[None] * N_COLUMNS for _ in range(N_ROWS)]
    text = [[""] * N_COLUMNS for _ in range(N_ROWS)]
    hovertext = [[""] * N_COLUMNS for _ in range(N_ROWS)]
    for symbol, (row, column) in POSITIONS.items():
        if ATOMIC_NUMBER[symbol] > 103 and symbol not in values:
            continue  # keep the table compact: superheavy cells only where there is data
        background_z[row][column] = 0
        background_text[row][column] = symbol
        hovertext[row][column] = f"<b>{symbol}</b><br>no data"
        value = values.get(symbol)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        z[row][column] = value
        shown = cell_values.get(symbol)
        text[row][column] = f"<b>{symbol}</b><br>{shown}" if shown else f"<b>{symbol}</b>"
        hovertext[row][column] = f"<b>{symbol}</b><br>{colorbar_title}: {_short(value)}" + (
            f"<br>{hover[symbol]}" if symbol in hover else ""
        )
    figure = go.Figure()
    figure.add_trace(
        go.Heatmap(
            z=background_z,
            text=background_text,
            texttemplate="%{text}",
            textfont={"color": "#868e96", "size": 10},
            colorscale=[[0, "#f1f3f5"], [1, "#f1f3f5"]],
            showscale=False,
            hovertext=hovertext,
            hoverinfo="text",
            xgap=2,
            ygap=2,
        )
    )
    figure.add_trace(
        go.Heatmap(
            z=z,
            text=text,
            texttemplate="%{text}",
            textfont={"size": 10},
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            hovertext=hovertext,
            hoverinfo="text",
            xgap=2,
            ygap=2,
            colorbar={"title": {"text": colorbar_title, "side": "right"}, "thickness": 12, "len": 0.8},
        )
    )
    _layout(figure, title, height=380)
    figure.update_xaxes(visible=False, range=[-0.5, N_COLUMNS - 0.5], fixedrange=True)
    figure.update_yaxes(visible=False, autorange="reversed", fixedrange=True, scaleanchor=None)
    figure.update_layout(margin={"l": 4, "r": 4, "t": 40, "b": 4}, plot_bgcolor="#fff")
    return figure


# --- Model pages --------------------------------------------------------------------


def roc_figure(
    roc: Mapping, threshold: float | None, title: str = "ROC (test split)", report: Mapping | None = None
) -> go.Figure | None:
    """The ROC curve with the operating point of the chosen decision threshold marked.

    The operating point comes from the split's stored report (TPR = topological
    recall, FPR = 1 − trivial recall) where there is one: scikit-learn drops
    collinear ROC vertices, so the exact point need not be a stored vertex.
    """
    fpr, tpr = roc.get("false_positive_rate") or [], roc.get("true_positive_rate") or []
    if not fpr or len(fpr) != len(tpr):
        return None
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#adb5bd"}, name="chance", hoverinfo="skip"
        )
    )
    auc = roc.get("auc")
    figure.add_trace(
        go.Scatter(
            x=fpr,
            y=tpr,
            mode="lines",
            line={"color": TOPOLOGICAL_COLOR, "width": 2},
            name=f"ROC (AUC {auc:.3f})" if _finite(auc) else "ROC",
            customdata=[t if _finite(t) else None for t in roc.get("thresholds") or []],
            hovertemplate="FPR %{x:.3f}<br>TPR %{y:.3f}<br>threshold %{customdata:.3f}<extra></extra>",
        )
    )
    point = operating_point(report) or threshold_point(roc, threshold)
    if point is not None and threshold is not None:
        figure.add_trace(
            go.Scatter(
                x=[point[0]],
                y=[point[1]],
                mode="markers",
                marker={"size": 12, "color": "#000", "symbol": "diamond"},
                name=f"chosen threshold {threshold:.3f}",
                hovertemplate=f"threshold {threshold:.3f}<br>FPR %{{x:.3f}}<br>TPR %{{y:.3f}}<extra></extra>",
            )
        )
    _layout(figure, title, height=420)
    figure.update_layout(legend={"orientation": "h", "y": -0.22})
    figure.update_xaxes(title="false positive rate", range=[-0.01, 1.01])
    figure.update_yaxes(title="true positive rate (topological recall)", range=[-0.01, 1.01])
    return figure


def operating_point(report: Mapping | None) -> tuple[float, float] | None:
    """(FPR, TPR) at the model's threshold from a stored classification report."""
    if not report:
        return None
    tpr, trivial_recall = report.get("topological_recall"), report.get("trivial_recall")
    if not _all_finite(tpr, trivial_recall):
        return None
    return 1.0 - trivial_recall, tpr


def threshold_point(roc: Mapping, threshold: float | None) -> tuple[float, float] | None:
    """(FPR, TPR) of the stored ROC vertex with the lowest threshold at or above ``threshold``.

    ``roc_curve`` lists decreasing thresholds and predicting "topological" when
    p >= threshold; a fallback when no report is stored.
    """
    if threshold is None:
        return None
    thresholds = roc.get("thresholds") or []
    fpr, tpr = roc.get("false_positive_rate") or [], roc.get("true_positive_rate") or []
    best = None
    for index, value in enumerate(thresholds):
        if _finite(value) and value >= threshold and index < len(fpr):
            best = index
    if best is None:
        return (0.0, 0.0) if fpr else None
    return fpr[best], tpr[best]


def training_curves_figure(history: list[dict]) -> go.Figure | None:
    """Loss and accuracy per epoch, training and validation, on two stacked panels."""
    epochs = [entry.get("epoch", index + 1) for index, entry in enumerate(history)]
    series = [
        ("loss", "training loss", TOPOLOGICAL_COLOR, "solid", "y"),
        ("val_loss", "validation loss", TOPOLOGICAL_COLOR, "dash", "y"),
        ("accuracy", "training accuracy", TRIVIAL_COLOR, "solid", "y2"),
        ("val_accuracy", "validation accuracy", TRIVIAL_COLOR, "dash", "y2"),
    ]
    figure = go.Figure()
    for key, name, color, dash, axis in series:
        values = [entry.get(key) for entry in history]
        if not any(isinstance(v, int | float) and _finite(v) for v in values):
            continue
        figure.add_trace(
            go.Scatter(
                x=epochs,
                y=values,
                name=name,
                mode="lines+markers" if len(epochs) < 30 else "lines",
                line={"color": color, "dash": dash},
                yaxis=axis,
            )
        )
    if not figure.data:
        return None
    _layout(figure, "Training curves", height=420)
    figure.update_layout(
        legend={"orientation": "h", "y": -0.22},
        xaxis={"title": "epoch", "anchor": "y2"},
        yaxis={"title": "loss", "domain": [0.55, 1.0]},
        yaxis2={"title": "accuracy", "domain": [0.0, 0.45], "range": [0, 1.02]},
    )
    return figure


def projection_figure(projection: Mapping) -> go.Figure | None:
    """The test materials' learned representation, projected to 2-D, colored by true class."""
    x, y = projection.get("x") or [], projection.get("y") or []
    labels = projection.get("label") or []
    probabilities = projection.get("probability") or [None] * len(x)
    if not x or not (len(x) == len(y) == len(labels)):
        return None
    figure = go.Figure()
    classes = ((0, "trivial (true label)", TRIVIAL_COLOR), (1, "topological (true label)", TOPOLOGICAL_COLOR))
    for value, name, color in classes:
        rows = [i for i, label in enumerate(labels) if label == value]
        figure.add_trace(
            go.Scattergl(
                x=[x[i] for i in rows],
                y=[y[i] for i in rows],
                mode="markers",
                name=name,
                marker={"color": color, "size": 7, "opacity": 0.75, "symbol": "circle" if value else "square"},
                customdata=[probabilities[i] for i in rows],
                hovertemplate="P(topological) %{customdata:.3f}<extra>" + name + "</extra>",
            )
        )
    _layout(figure, "Learned representation (8-D), first two principal components", height=440)
    figure.update_layout(legend={"orientation": "h", "y": -0.18})
    figure.update_xaxes(title="component 1")
    figure.update_yaxes(title="component 2")
    return figure


METRIC_LABELS = (("recall", "recall"), ("precision", "precision"), ("f1", "F1"))


def comparison_figure(rows: list[dict], subset_label: str) -> go.Figure | None:
    """The paper's Fig. 3e: every model's recall, precision and F1 per class, with 95 % CIs.

    ``rows`` holds ``{"name", "metrics": {metric: {"value", "low", "high"}}}`` per model.
    """
    if not rows:
        return None
    categories = [f"{cls} {label}" for cls in ("topological", "trivial") for _, label in METRIC_LABELS]
    keys = [f"{cls}_{key}" for cls in ("topological", "trivial") for key, _ in METRIC_LABELS]
    palette = ["#d9480f", "#1864ab", "#2b8a3e", "#862e9c", "#e67700", "#495057", "#c2255c", "#0b7285"]
    figure = go.Figure()
    for index, row in enumerate(rows):
        values, plus, minus = [], [], []
        for key in keys:
            entry = row["metrics"].get(key) or {}
            value, low, high = entry.get("value"), entry.get("low"), entry.get("high")
            values.append(value)
            plus.append(high - value if _all_finite(value, high) else None)
            minus.append(value - low if _all_finite(value, low) else None)
        figure.add_trace(
            go.Bar(
                x=categories,
                y=values,
                name=row["name"],
                marker_color=palette[index % len(palette)],
                error_y={"type": "data", "array": plus, "arrayminus": minus, "thickness": 1.2, "width": 3},
                hovertemplate="%{x}: %{y:.3f}<extra>" + row["name"] + "</extra>",
            )
        )
    _layout(figure, f"Every model on the {subset_label} (95 % bootstrap CIs)", height=440)
    figure.update_layout(barmode="group", legend={"orientation": "h", "y": -0.25})
    figure.update_yaxes(title="score", range=[0, 1.05])
    return figure


# --- Dataset page -------------------------------------------------------------------


def split_balance_figure(balance: Iterable[Mapping]) -> go.Figure | None:
    """Fig. S1c: fraction of topological materials per element in train, validation and test."""
    by_subset: dict[str, dict[str, Mapping]] = {}
    for entry in balance:
        by_subset.setdefault(entry["subset"], {})[entry["element"]] = entry
    elements = sorted({e for entries in by_subset.values() for e in entries}, key=lambda e: ATOMIC_NUMBER.get(e, 999))
    if not elements:
        return None
    figure = go.Figure()
    for subset in ("train", "validation", "test"):
        entries = by_subset.get(subset, {})
        figure.add_trace(
            go.Bar(
                x=elements,
                y=[(entries.get(e) or {}).get("topological_fraction") for e in elements],
                customdata=[
                    [(entries.get(e) or {}).get("n_topological", 0), (entries.get(e) or {}).get("n_samples", 0)]
                    for e in elements
                ],
                name=subset,
                marker_color=SUBSET_COLORS[subset],
                hovertemplate="%{x} in "
                + subset
                + ": %{y:.2f} topological<br>(%{customdata[0]} of %{customdata[1]} materials)<extra></extra>",
            )
        )
    _layout(figure, "Topological fraction per element in each subset", height=420)
    figure.update_layout(barmode="group", bargap=0.15, legend={"orientation": "h", "y": 1.08, "x": 0})
    figure.update_xaxes(title="element (by atomic number)", tickangle=-90, tickfont={"size": 10})
    figure.update_yaxes(title="topological fraction", range=[0, 1.02])
    return figure


# --- Material page ------------------------------------------------------------------


def spectra_figure(raw: list[dict], standardized: list[dict]) -> go.Figure | None:
    """One trace per element spectrum; raw traces first, then the standardized ones (hidden).

    Each entry is ``{"element", "name", "x", "y", "energies"}`` with ``x`` = E − E0
    (eV) and ``energies`` the absolute energies for the hover. The page's toggle
    switches visibility between the two groups (see charts.js); ``layout.meta`` tells
    it which trace is which.
    """
    if not raw:
        return None
    palette = ["#d9480f", "#1864ab", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#495057"]
    figure = go.Figure()
    colors: dict[str, str] = {}
    for group, entries in (("raw", raw), ("standardized", standardized)):
        for entry in entries:
            color = colors.setdefault(entry["element"], palette[len(colors) % len(palette)])
            figure.add_trace(
                go.Scatter(
                    x=entry["x"],
                    y=entry["y"],
                    customdata=entry.get("energies"),
                    name=entry["name"],
                    mode="lines",
                    line={"color": color, "width": 2},
                    visible=group == "raw",
                    hovertemplate="E − E0 = %{x:.1f} eV (E = %{customdata:.1f} eV)<br>%{y:.3f}<extra>"
                    + entry["name"]
                    + "</extra>",
                )
            )
    groups = ["raw"] * len(raw) + ["standardized"] * len(standardized)
    x_title = "E − E0 (eV)"
    _layout(figure, "K-edge XANES, one trace per element", height=440)
    figure.update_layout(
        meta={
            "groups": groups,
            "titles": {
                "raw": {"x": x_title, "y": "μ(E) as stored (arbitrary units)"},
                "standardized": {"x": x_title + ", model window", "y": "standardized μ (z-score)"},
            },
        },
        legend={"orientation": "h", "y": -0.22},
    )
    figure.update_xaxes(title=x_title)
    figure.update_yaxes(title="μ(E) as stored (arbitrary units)")
    return figure


def contributions_figure(contributions: Mapping[str, float]) -> go.Figure | None:
    """Leave-one-element-out change in P(topological), one bar per element."""
    if not contributions:
        return None
    ordered = sorted(contributions.items(), key=lambda item: abs(item[1]))
    figure = go.Figure(
        go.Bar(
            x=[value for _, value in ordered],
            y=[element for element, _ in ordered],
            orientation="h",
            marker_color=[TOPOLOGICAL_COLOR if value >= 0 else TRIVIAL_COLOR for _, value in ordered],
            hovertemplate="%{y}: Δp = %{x:+.3f}<extra></extra>",
        )
    )
    _layout(figure, "Change in P(topological) from each element's spectrum", height=max(220, 60 + 40 * len(ordered)))
    figure.update_xaxes(title="P(with all spectra) − P(with this element left out)", zeroline=True)
    figure.update_yaxes(title=None)
    return figure


# --- Serialisation ------------------------------------------------------------------


def figure_json(figure: go.Figure | None) -> SafeString | None:
    """The figure as JSON, escaped for an inline ``<script type="application/json">``."""
    if figure is None:
        return None
    text = pio.to_json(figure, validate=False, remove_uids=True)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return mark_safe(text)  # noqa: S308 - JSON with <, > and & escaped cannot close the script element


def _layout(figure: go.Figure, title: str, height: int = 380) -> None:
    figure.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 14}},
        height=height,
        margin={"l": 60, "r": 20, "t": 48, "b": 50},
        font={"family": FONT, "size": 12, "color": "#1b1f24"},
        paper_bgcolor="#fff",
        plot_bgcolor="#fff",
        hoverlabel={"font": {"family": FONT}},
    )
    figure.update_xaxes(gridcolor="#e9ecef", linecolor="#adb5bd", zerolinecolor="#ced4da")
    figure.update_yaxes(gridcolor="#e9ecef", linecolor="#adb5bd", zerolinecolor="#ced4da")


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _all_finite(*values) -> bool:
    return all(_finite(value) for value in values)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)
