"""Decide or abstain for one material: the one home of the rule the API, the CLI, the
material page and screening rows all show.

A model version's decision rule (calibrator + abstain band, fitted on validation; see
:mod:`mlcore.decision`) travels in its bundle; a bundle written before it gets the
uncalibrated rule (raw probability, the single stored threshold). The input checks that
make the answer ``abstain`` whatever the probability are made here, from the model's own
preprocessor and kind.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlcore.data import RawSpectrum
from mlcore.decision import Decision, DecisionRule, Reason, decide, missing_spectra_reason
from mlcore.envelope import MIN_DECIDED_COVERAGE, window_coverage
from mlcore.models import MODEL_KINDS


def decision_rule_for(bundle, threshold: float) -> DecisionRule:
    """The bundle's decision rule, or the uncalibrated one at ``threshold`` for old bundles."""
    return bundle.decision_rule or DecisionRule.uncalibrated(threshold)


def decision_metrics(rule: DecisionRule, preprocessor) -> dict:
    """What a training stores in ``ModelVersion.metrics`` about calibration, the band and the
    preprocessing (its version and normalisation rule: provenance of the inputs)."""
    preprocessing = {}  # a model that reads no spectra has no spectrum preprocessing
    if preprocessor is not None:
        state = preprocessor.to_dict()
        preprocessing = {key: state[key] for key in ("version", "normalisation", "n_points") if key in state}
        preprocessing["windows_ev"] = {element: entry["window_ev"] for element, entry in state["elements"].items()}
    calibration = {**rule.report, "calibrator": rule.calibrator.to_dict(), "band": rule.band.to_dict()}
    return json.loads(json.dumps({"calibration": calibration, "preprocessing": preprocessing}, default=_plain))


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


@dataclass
class Checked:
    """The input checks of one material against one model."""

    reasons: list[Reason]
    unseen: list[str]
    off_distribution: dict[str, str]


def check_inputs(kind: str, preprocessor, spectra: Sequence[RawSpectrum], formula_elements: Sequence[str]) -> Checked:
    """Reasons to abstain whatever the probability: unseen elements, spectra off the training
    distribution, half or more of the formula without spectra for a model without a prior."""
    registered = MODEL_KINDS[kind]
    reasons: list[Reason] = []
    unseen: list[str] = []
    off: dict[str, str] = {}
    if registered.uses_spectra and preprocessor is not None:
        unseen = sorted(s.element for s in spectra if s.element not in preprocessor.windows_ev_)
        for element in unseen:
            reasons.append(
                Reason(
                    "unseen_element",
                    f"no {element} spectrum was in the model's training set: it has never seen this K edge",
                )
            )
        known = [s for s in spectra if s.element not in unseen]
        off = preprocessor.off_distribution(known) if preprocessor.aligned else preprocessor.off_scale(known)
        for _element, text in sorted(off.items()):
            reasons.append(Reason("off_distribution", text))
        for spectrum in known:
            coverage = window_coverage(preprocessor, spectrum)
            if coverage < MIN_DECIDED_COVERAGE:
                start, end = preprocessor.window_ev(spectrum.element)
                window = f"E0{start:+.1f} to E0{end:+.1f}" if preprocessor.aligned else f"{start:.1f}-{end:.1f}"
                text = (
                    f"{spectrum.element} spectrum covers {coverage:.0%} of the model's window ({window} eV); the "
                    f"rest would be its last value repeated, unlike any training spectrum (at least "
                    f"{MIN_DECIDED_COVERAGE:.0%} needed for an answer)"
                )
                reasons.append(Reason("off_distribution", text))
        # Only a prior stands in for missing spectra. CNN-sg + composition reads element
        # fractions but was trained on complete spectra only: given LiCoO2's Co K edge alone
        # it answered topological at calibrated P 0.80 (bench/cross_source.py, seed 0).
        missing = missing_spectra_reason(
            formula_elements, [s.element for s in spectra], kind, uses_composition=registered.uses_prior
        )
        if missing is not None:
            reasons.append(missing)
    return Checked(reasons, unseen, off)


def decide_one(rule: DecisionRule, raw_probability: float, checked: Checked) -> Decision:
    """The calibrated probability and the decision for one material."""
    calibrated = float(rule.calibrate(np.array([raw_probability]))[0])
    return decide(calibrated, rule.band, checked.reasons)


def decide_many(rule: DecisionRule, raw_probabilities) -> tuple[np.ndarray, list[str]]:
    """Calibrated probabilities and band decisions for many stored materials (batch
    classification and screening rows: their inputs were checked when they were stored)."""
    calibrated = rule.calibrate(np.asarray(raw_probabilities, dtype=np.float64))
    return calibrated, [rule.band.decide(float(p)) for p in calibrated]


def rule_from_metrics(version) -> DecisionRule:
    """A version's decision rule from its stored metrics (no model to load: pages showing
    many stored predictions); the uncalibrated rule for versions trained before calibration."""
    stored = (version.metrics or {}).get("calibration") or {}
    if "calibrator" in stored and "band" in stored:
        return DecisionRule.from_dict({"calibrator": stored["calibrator"], "band": stored["band"]})
    return DecisionRule.uncalibrated(version.threshold)


def with_decisions(predictions) -> list:
    """Stored predictions (with their ``model_version``) with ``calibrated_probability``,
    ``decision`` and ``reasons`` set on each by ``decide_rows``, each model's own rule."""
    predictions = list(predictions)
    by_version: dict[int, list] = {}
    for prediction in predictions:
        by_version.setdefault(prediction.model_version_id, []).append(prediction)
    for rows in by_version.values():
        decide_rows(rows, rule_from_metrics(rows[0].model_version))
    return predictions


# --- Stored rankings: the rule read with the rows' model, and rows decided in bulk ----------------


def rule_annotations(name: str, relation: str = "") -> dict:
    """Annotations that carry a model version's decision rule (threshold, calibrator, band)
    without loading its metrics JSON (hundreds of kB with ROC points and projections); pass
    ``relation`` ("model_version") to read a related version's. Read back with ``annotated_rule``."""
    from django.db.models import F
    from django.db.models.fields.json import KeyTransform

    path = f"{relation}__" if relation else ""
    calibration = KeyTransform("calibration", f"{path}metrics")
    return {
        f"{name}_threshold": F(f"{path}threshold"),
        f"{name}_calibrator": KeyTransform("calibrator", calibration),
        f"{name}_band": KeyTransform("band", calibration),
    }


def annotated_rule(obj, name: str) -> DecisionRule:
    """The rule ``rule_annotations(name)`` put on ``obj``; the uncalibrated rule at 0.5 when there
    is no model (``obj`` None, or a relation that is empty)."""
    if obj is None:
        return rule_from_parts(None, None, None)
    return rule_from_parts(*(getattr(obj, f"{name}_{part}", None) for part in ("threshold", "calibrator", "band")))


def rule_from_parts(threshold: float | None, calibrator, band) -> DecisionRule:
    """A rule from a version's threshold and stored calibrator and band (dicts, or JSON text as a
    raw query returns them); the uncalibrated rule at the threshold (0.5 without a model)."""
    calibrator, band = (json.loads(v) if isinstance(v, str) else v for v in (calibrator, band))
    if threshold is None:
        return DecisionRule.uncalibrated(0.5)
    if isinstance(calibrator, dict) and isinstance(band, dict):
        return DecisionRule.from_dict({"calibrator": calibrator, "band": band})
    return DecisionRule.uncalibrated(threshold)


def decide_rows(rows: Sequence, rule: DecisionRule) -> None:
    """Set ``calibrated_probability``, ``decision`` and ``reasons`` on stored rows (anything with
    a raw ``probability``) of one model, vectorised. Their inputs were checked when they were
    stored, so the only reason known here is the band's (``uncertain``); a row without a finite
    probability abstains with none."""
    if not rows:
        return
    raw = np.array([np.nan if r.probability is None else r.probability for r in rows], dtype=np.float64)
    calibrated, decisions = decide_many(rule, raw)
    for row, p, decision in zip(rows, calibrated.tolist(), decisions, strict=True):
        finite = math.isfinite(p)
        row.calibrated_probability = p if finite else None
        row.decision = decision
        row.reasons = decide(p, rule.band).reasons_json() if finite and decision == "abstain" else []


def raw_bounds(rule: DecisionRule, decision: str) -> tuple[float, float] | None:
    """The raw probabilities ``(low, high)`` whose calibrated value the band decides as
    ``decision``: ``topological`` is raw >= low, ``trivial`` raw <= high, ``abstain`` low < raw < high
    (infinite where open). None when the band never gives that decision. The calibrator is
    monotonic, so a stored ranking filters by decision on its raw-probability index."""
    band = rule.band
    never_topological, never_trivial = band.high > 1.0, band.low < 0.0
    high = math.inf if never_topological else uncalibrate(rule, band.high)
    low = -math.inf if never_trivial else uncalibrate(rule, band.low)
    if decision == "topological":
        return None if never_topological else (high, math.inf)
    if decision == "trivial":
        return None if never_trivial else (-math.inf, low)
    return (low, high)


def uncalibrate(rule: DecisionRule, calibrated: float) -> float:
    """The raw probability the rule's calibrator maps to ``calibrated`` (its inverse); infinite
    beyond what any raw probability reaches (the calibrator clips raw values to [1e-6, 1 - 1e-6])."""
    calibrator = rule.calibrator
    if calibrator.method == "identity":
        return float(calibrated)
    floor, ceiling = (float(v) for v in rule.calibrate(np.array([1e-6, 1 - 1e-6])))
    if calibrated <= floor:
        return -math.inf
    if calibrated > ceiling:
        return math.inf
    z = (math.log(calibrated / (1 - calibrated)) - calibrator.intercept) / calibrator.slope
    return 0.5 * (1.0 + math.tanh(0.5 * z))
