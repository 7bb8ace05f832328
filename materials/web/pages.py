"""What the pages show, computed from stored rows: metric tables, heatmaps,
comparisons, dataset counts, structure summaries and a material's explanation.

Views call these and render; nothing here touches the request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from materials.models import ElementMetric, Material, ModelVersion, Prediction, Spectrum
from materials.web import figures
from mlcore.spectrum import MIN_POINTS, find_e0

logger = logging.getLogger(__name__)

CLASSES = ("topological", "trivial")
METRICS = (("recall", "Recall"), ("precision", "Precision"), ("f1", "F1"))
SUBSET_NAMES = {"test": "test split", "validation": "validation split"}


# --- Model metrics ------------------------------------------------------------------


@dataclass
class Estimate:
    value: float | None
    low: float | None = None
    high: float | None = None

    @property
    def has_ci(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass
class ClassMetrics:
    name: str
    recall: Estimate
    precision: Estimate
    f1: Estimate


@dataclass
class MetricSummary:
    """A model's overall metrics on one split, with bootstrap CIs where stored."""

    subset: str
    n_samples: int | None
    n_topological: int | None
    threshold: float | None
    classes: list[ClassMetrics]
    accuracy: Estimate
    roc_auc: Estimate

    @property
    def subset_label(self) -> str:
        return SUBSET_NAMES.get(self.subset, self.subset)

    @property
    def topological(self) -> ClassMetrics:
        return self.classes[0]


def metric_summary(version: ModelVersion, subset: str = "test") -> MetricSummary | None:
    """The stored report of ``subset`` ("test" carries CIs; "validation" point values)."""
    metrics = version.metrics or {}
    report = metrics.get(subset) or {}
    if not report:
        return None
    intervals = metrics.get(f"{subset}_ci") or {}

    def estimate(name: str) -> Estimate:
        interval = intervals.get(name) or {}
        return Estimate(report.get(name), interval.get("low"), interval.get("high"))

    return MetricSummary(
        subset=subset,
        n_samples=report.get("n_samples"),
        n_topological=report.get("n_topological"),
        threshold=report.get("threshold", metrics.get("threshold")),
        classes=[
            ClassMetrics(cls, estimate(f"{cls}_recall"), estimate(f"{cls}_precision"), estimate(f"{cls}_f1"))
            for cls in CLASSES
        ],
        accuracy=estimate("accuracy"),
        roc_auc=estimate("roc_auc"),
    )


def element_heatmaps(version: ModelVersion, subset: str = "test") -> list[dict]:
    """Six periodic-table heatmaps (recall, precision, F1 × two classes), from one query."""
    rows = ElementMetric.objects.filter(model_version=version, subset=subset).values_list(
        "element", "target_class", "recall", "precision", "f1", "support"
    )
    table: dict[str, dict[str, dict]] = {cls: {} for cls in CLASSES}
    for element, target, recall, precision, f1, support in rows:
        table.setdefault(target, {})[element] = {"recall": recall, "precision": precision, "f1": f1, "support": support}
    if not any(table.values()):
        return []
    heatmaps = []
    for key, label in METRICS:
        for cls in CLASSES:
            entries = table.get(cls, {})
            values = {e: m[key] for e, m in entries.items() if m[key] is not None}
            hover = {e: f"support: {m['support']} {cls} materials" for e, m in entries.items()}
            figure = figures.periodic_table_figure(
                values,
                title=f"{label}, {cls} class ({SUBSET_NAMES.get(subset, subset)})",
                colorbar_title=label,
                hover=hover,
                zmin=0.0,
                zmax=1.0,
                colorscale="Viridis",
                cell_values={e: f"{v:.2f}" for e, v in values.items()},
            )
            heatmaps.append(
                {"id": f"heatmap-{key}-{cls}", "metric": label, "class": cls, "figure": figures.figure_json(figure)}
            )
    return heatmaps


@dataclass
class ComparedModel:
    version: ModelVersion
    summary: MetricSummary | None

    @property
    def name(self) -> str:
        return f"{self.version.get_kind_display()} v{self.version.pk}"


def comparison(versions: list[ModelVersion], subset: str = "test") -> tuple[list[ComparedModel], str | None]:
    """Every model's summary on one split, and the grouped bar chart of Fig. 3e."""
    compared = [ComparedModel(version, metric_summary(version, subset)) for version in versions]
    rows = []
    for model in compared:
        if model.summary is None:
            continue
        intervals = (model.version.metrics or {}).get(f"{subset}_ci") or {}
        report = (model.version.metrics or {}).get(subset) or {}
        metrics = {
            f"{cls}_{key}": intervals.get(f"{cls}_{key}") or {"value": report.get(f"{cls}_{key}")}
            for cls in CLASSES
            for key, _ in METRICS
        }
        rows.append({"name": model.name, "metrics": metrics})
    figure = figures.comparison_figure(rows, SUBSET_NAMES.get(subset, subset))
    return compared, figures.figure_json(figure)


# --- Dataset ------------------------------------------------------------------------


@dataclass
class ElementCount:
    element: str
    topological: int = 0
    trivial: int = 0
    by_subset: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.topological + self.trivial

    @property
    def topological_fraction(self) -> float | None:
        return self.topological / self.total if self.total else None


def dataset_element_counts(balance: list[dict]) -> list[ElementCount]:
    """Class counts per element over all subsets, from the split's stored balance."""
    counts: dict[str, ElementCount] = {}
    for entry in balance or []:
        count = counts.setdefault(entry["element"], ElementCount(entry["element"]))
        n, n_topological = int(entry.get("n_samples") or 0), int(entry.get("n_topological") or 0)
        count.topological += n_topological
        count.trivial += n - n_topological
        count.by_subset[entry["subset"]] = entry
    return sorted(counts.values(), key=lambda c: figures.ATOMIC_NUMBER.get(c.element, 999))


def dataset_figures(balance: list[dict]) -> dict:
    counts = dataset_element_counts(balance)
    hover = {c.element: f"topological: {c.topological}<br>trivial: {c.trivial}" for c in counts}
    result = {"counts": counts}
    for cls, colorscale in (("topological", "Oranges"), ("trivial", "Blues")):
        values = {c.element: getattr(c, cls) for c in counts if getattr(c, cls)}
        result[cls] = figures.figure_json(
            figures.periodic_table_figure(
                values,
                title=f"{cls.capitalize()} materials containing each element",
                colorbar_title="materials",
                hover=hover,
                zmin=0,
                colorscale=colorscale,
                cell_values={e: str(v) for e, v in values.items()},
            )
        )
    result["balance"] = figures.figure_json(figures.split_balance_figure(balance or []))
    return result


# --- One material -------------------------------------------------------------------


@dataclass
class StructureSummary:
    formula: str
    lattice: dict
    sites: list[dict]
    n_sites: int

    @property
    def truncated(self) -> bool:
        return self.n_sites > len(self.sites)


def structure_summary(material: Material, max_sites: int = 60) -> StructureSummary | None:
    """Lattice parameters and sites from the stored pymatgen dict (no pymatgen import)."""
    structure = material.structure
    if not isinstance(structure, dict) or "lattice" not in structure:
        return None
    lattice = structure.get("lattice") or {}
    if "a" not in lattice and lattice.get("matrix"):
        matrix = np.asarray(lattice["matrix"], dtype=float)
        lengths = np.linalg.norm(matrix, axis=1)

        def angle(i: int, j: int) -> float:
            return float(np.degrees(np.arccos(np.dot(matrix[i], matrix[j]) / (lengths[i] * lengths[j]))))

        lattice = {
            "a": lengths[0],
            "b": lengths[1],
            "c": lengths[2],
            "alpha": angle(1, 2),
            "beta": angle(0, 2),
            "gamma": angle(0, 1),
            "volume": abs(float(np.linalg.det(matrix))),
        }
    sites = []
    all_sites = structure.get("sites") or []
    for site in all_sites[:max_sites]:
        species = ", ".join(
            s.get("element", "?") + (f" ({s['occu']:g})" if s.get("occu", 1) != 1 else "")
            for s in site.get("species") or []
        )
        sites.append({"label": site.get("label", ""), "species": species, "abc": site.get("abc") or []})
    return StructureSummary(
        formula=material.formula,
        lattice={key: lattice.get(key) for key in ("a", "b", "c", "alpha", "beta", "gamma", "volume")},
        sites=sites,
        n_sites=len(all_sites),
    )


@dataclass
class Explanation:
    """The production model on one material: probability, per-element Δp, trust, spectra."""

    version: ModelVersion | None
    probability: float | None = None  # calibrated
    predicted_class: str = ""
    raw_probability: float | None = None
    decision: str = ""
    reasons: list[dict] = field(default_factory=list)
    band: dict = field(default_factory=dict)
    calibrated: bool = False
    answered_by: str = ""
    answering_version: int | None = None
    contributions: list[tuple[str, float]] = field(default_factory=list)
    missing_elements: list[str] = field(default_factory=list)
    trust: dict = field(default_factory=dict)
    off_scale: list[str] = field(default_factory=list)
    standardized: list[dict] = field(default_factory=list)
    note: str = ""
    stored: bool = False  # probability and decision are the stored Prediction's, as listed above

    @property
    def driver(self) -> tuple[str, float] | None:
        """The element whose spectrum moves P(topological) most."""
        return max(self.contributions, key=lambda item: abs(item[1]), default=None)

    @property
    def trust_rows(self) -> list[dict]:
        rows = []
        for element, classes in sorted(self.trust.items()):
            rows.append(
                {
                    "element": element,
                    "topological": classes.get("topological") or {},
                    "trivial": classes.get("trivial") or {},
                }
            )
        return rows


def explain_material(material: Material, version: ModelVersion | None, spectra: list[Spectrum]) -> Explanation:
    """Run the production model on one material (a few forward passes), for the detail page.

    The probability and decision shown are the stored prediction's when the answering model
    has one (the page lists it among the predictions: one number per model); the run gives
    what the store does not keep: per-element contributions, trust and the standardized
    spectra, and the answer for a material no model has classified yet.

    Never raises: a missing artifact, a spectrum outside the model's energy window or
    a model without spectra turn into a note the page shows.
    """
    from materials.learning.training import SPECTRAL_KINDS

    explanation = Explanation(version=version)
    if version is None:
        explanation.note = "No production model yet, so there is no explanation to show."
        return explanation
    partial = version.kind in SPECTRAL_KINDS and not material.has_spectra
    if partial:
        missing = sorted(set(material.elements) - {s.element for s in spectra})
        explanation.note = (
            f"The production model needs a K-edge spectrum of every element; "
            f"{', '.join(missing) or 'some'} {'is' if len(missing) == 1 else 'are'} missing."
        )
        if not spectra:
            return explanation
    try:
        from materials.learning.arrays import load_records
        from materials.learning.inference import classify_material, load_bundle

        records = load_records([material.pk], with_spectra=version.kind in SPECTRAL_KINDS)
        classification = classify_material(version, records)
        bundle = load_bundle(version)
    except Exception as error:  # a page must render even when the model cannot run
        logger.warning("explaining material %s with model %s failed: %s", material.pk, version.pk, error)
        explanation.note = f"The production model could not be run on this material: {error}"
        return explanation
    explanation.probability = classification.probability
    explanation.predicted_class = classification.predicted_class
    explanation.raw_probability = classification.raw_probability
    explanation.decision = classification.decision
    explanation.reasons = classification.reasons
    stored = stored_prediction(material, classification.model_version)
    if stored is not None:  # one number per model on the page: the stored prediction's
        explanation.stored = True
        explanation.probability = stored.calibrated_probability
        explanation.predicted_class = stored.predicted_class
        explanation.raw_probability = stored.probability
        explanation.decision = stored.decision
        explanation.reasons = stored.reasons
    explanation.band = classification.band
    explanation.calibrated = classification.calibrated
    explanation.answered_by = classification.answered_by
    explanation.answering_version = classification.model_version
    explanation.contributions = sorted(classification.contributions.items(), key=lambda item: -abs(item[1]))
    explanation.missing_elements = classification.missing_elements
    explanation.trust = classification.trust
    explanation.off_scale = list(classification.off_scale.values())
    if partial:
        explanation.note += (
            f" Answered from the {', '.join(classification.elements)} spectra by {classification.answered_by}."
        )
    elif version.kind not in SPECTRAL_KINDS:
        explanation.note = (
            f"The production model ({version.get_kind_display()}) uses composition and space group only, "
            "so no element's spectrum changes its decision."
        )
    elif len(classification.contributions) == 0:
        explanation.note = "With a single element's spectrum there is nothing to leave out."
    if bundle.preprocessor is not None:
        explanation.standardized = standardized_traces(bundle.preprocessor, records.spectra[0])
    return explanation


def stored_prediction(material: Material, version_id: int):
    """The material's stored prediction by model ``version_id`` with its calibrated probability,
    decision and reasons (the predictions table's rule), or None."""
    from materials.learning.decisions import decide_rows, rule_from_metrics

    stored = Prediction.objects.filter(material=material, model_version_id=version_id)
    prediction = stored.select_related("model_version").first()
    if prediction is not None:
        decide_rows([prediction], rule_from_metrics(prediction.model_version))
    return prediction


def edge_energy_ev(energies_ev: np.ndarray, mu: np.ndarray) -> float:
    """E0 as the models' preprocessing finds it (``mlcore.spectrum.find_e0``); for data it
    cannot read (too few points), the steepest rise between neighbouring points."""
    energies_ev, mu = np.asarray(energies_ev, dtype=float), np.asarray(mu, dtype=float)
    if energies_ev.size < 3:
        return float(energies_ev[0]) if energies_ev.size else 0.0
    e0 = find_e0(energies_ev, mu) if energies_ev.size >= MIN_POINTS else float("nan")
    return e0 if np.isfinite(e0) else float(energies_ev[int(np.argmax(np.gradient(mu, energies_ev)))])


def standardized_traces(preprocessor, raw_spectra) -> list[dict]:
    """Each spectrum as the model sees it: on the element's window, 200 points, z-scored.

    x is relative to the raw spectrum's own edge, like the raw view, so the two
    views line up.
    """
    traces = []
    for spectrum in raw_spectra:
        try:
            transformed = preprocessor.transform([[spectrum]], [1])
            grid = preprocessor.energy_grid_ev(spectrum.element)
        except ValueError as error:
            logger.info("cannot standardize %s: %s", spectrum.element, error)
            continue
        # Version 2 grids are already relative to the spectrum's E0; version 1 grids are absolute.
        e0 = preprocessor.edge_ev(spectrum)
        relative = grid if preprocessor.aligned else grid - e0
        traces.append(
            {
                "element": spectrum.element,
                "name": f"{spectrum.element} K (standardized)",
                "x": np.round(relative, 3).tolist(),
                "energies": np.round(relative + e0, 2).tolist(),
                "y": np.round(transformed.spectra[0].astype(float), 5).tolist(),
            }
        )
    return traces


def raw_traces(spectra: list[Spectrum]) -> list[dict]:
    """Stored spectra on a common axis, E − E0: K edges of different elements lie
    keV apart, so absolute energies would squash every spectrum into a spike."""
    traces = []
    for spectrum in spectra:
        if not spectrum.npoints:
            continue
        energies = spectrum.energies_ev.astype(float)
        e0 = edge_energy_ev(energies, spectrum.mu)
        traces.append(
            {
                "element": spectrum.element,
                "name": f"{spectrum.element} {spectrum.edge} ({spectrum.get_source_display()}), E0 {e0:.1f} eV",
                "x": np.round(energies - e0, 3).tolist(),
                "energies": np.round(energies, 2).tolist(),
                "y": np.round(spectrum.mu.astype(float), 6).tolist(),
            }
        )
    return traces
