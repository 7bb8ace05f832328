"""Decide or abstain: ``topological``, ``trivial`` or ``abstain``, always with reasons.

The abstain band (:func:`choose_band`) is chosen on the validation split from calibrated
probabilities: ``high`` is the lowest probability at which the materials called topological
(P >= high) are at least ``target_precision`` topological, ``low`` the highest at which those
called trivial (P <= low) are at least ``target_precision`` trivial, each precision taken at
the lower end of its Wilson interval (z = 1): validation sets here hold 40-130 materials, and
a point estimate from a few of them did not hold on test (bench/cross_source.py). Between them the model
abstains. When no threshold reaches the target for a class, that class is never decided
(``high`` above 1 or ``low`` below 0); when the two overlap, one cut decides everything.

:func:`decide` combines the band with the input checks the caller made (each a
:class:`Reason`): any reason abstains, and the calibrated probability is still returned.
Reason codes are stable strings that APIs and pages can rely on:

``unseen_element``   a spectrum of an element the model never saw in training
``off_distribution`` a spectrum that, aligned and normalised, lies outside the training spectra, or
                     covers under 70 % of the model's window (version-1 models: also an edge off
                     the training energy scale)
``missing_spectra``  half or more of the formula's elements have no spectrum, and the model cannot
                     stand in for them (only a composition + symmetry prior can: see materials.learning.decisions)
``uncertain``        the calibrated probability lies inside the abstain band
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from mlcore.calibration import Calibrator, expected_calibration_error, reliability_points

TOPOLOGICAL, TRIVIAL, ABSTAIN = "topological", "trivial", "abstain"
DECISIONS = (TOPOLOGICAL, TRIVIAL, ABSTAIN)
REASON_CODES = ("unseen_element", "off_distribution", "missing_spectra", "uncertain")
TARGET_PRECISION = 0.9
#: One-sided ~84 % confidence: a validation precision must hold at the lower end of its Wilson
#: interval (e.g. 20 of 20 decided materials right gives 0.95, 9 of 10 only 0.77).
CONFIDENCE_Z = 1.0
#: Stored for "never decide this class" (JSON has no infinity).
NEVER_HIGH, NEVER_LOW = 1.01, -0.01


@dataclass(frozen=True)
class Reason:
    code: str
    text: str

    def __post_init__(self) -> None:
        if self.code not in REASON_CODES:
            raise ValueError(f"unknown reason code {self.code!r}; expected one of {REASON_CODES}")


@dataclass
class Band:
    """Abstain when ``low < P < high`` (calibrated P(topological)); chosen on validation.

    ``validation`` holds what the band achieved there: decided-class precisions, the share of
    materials decided, and the materials it was chosen on.
    """

    low: float
    high: float
    target_precision: float = TARGET_PRECISION
    validation: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: Mapping) -> Band:
        return cls(
            low=float(state["low"]),
            high=float(state["high"]),
            target_precision=float(state.get("target_precision", TARGET_PRECISION)),
            validation=dict(state.get("validation", {})),
        )

    @classmethod
    def at_threshold(cls, threshold: float) -> Band:
        """No band: the old single threshold (models stored before calibration)."""
        return cls(low=float(np.nextafter(threshold, -np.inf)), high=float(threshold), target_precision=0.0)

    def decide(self, p: float) -> str:
        if p >= self.high:
            return TOPOLOGICAL
        if p <= self.low:
            return TRIVIAL
        return ABSTAIN


def wilson_lower(successes: float, n: float, z: float = CONFIDENCE_Z) -> float:
    """Lower end of the Wilson score interval of a proportion (0 for n = 0)."""
    if n <= 0:
        return 0.0
    share = successes / n
    centre = share + z * z / (2 * n)
    spread = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n))


def choose_band(
    y, p, target_precision: float = TARGET_PRECISION, fallback_threshold: float = 0.5, z: float = CONFIDENCE_Z
) -> Band:
    """The abstain band for calibrated probabilities ``p`` of validation labels ``y``: a class
    is decided where the Wilson lower bound (``z``) of its validation precision reaches
    ``target_precision``, so that a handful of lucky validation materials does not open it."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if y.shape != p.shape or y.size == 0:
        raise ValueError("choose_band needs one label per probability, at least one")
    candidates = np.unique(p)
    high = NEVER_HIGH
    for t in candidates:  # ascending: the first that reaches the target decides the most
        chosen = y[p >= t]
        if wilson_lower(chosen.sum(), chosen.size, z) >= target_precision:
            high = float(t)
            break
    low = NEVER_LOW
    for t in candidates[::-1]:  # descending
        chosen = y[p <= t]
        if wilson_lower(chosen.size - chosen.sum(), chosen.size, z) >= target_precision:
            low = float(t)
            break
    if low >= high:  # both targets met with room to spare: one cut, no band
        cut = float(np.clip(fallback_threshold, high, low))
        high, low = cut, float(np.nextafter(cut, -np.inf))
    band = Band(low=low, high=high, target_precision=target_precision)
    band.validation = band_report(y, p, band)
    return band


def band_report(y, p, band: Band) -> dict:
    """Decided share and per-class precision of ``band`` on labels ``y``, probabilities ``p``."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    top, triv = p >= band.high, p <= band.low
    decided = top | triv
    return {
        "n": int(y.size),
        "abstention_rate": float(1.0 - decided.mean()) if y.size else float("nan"),
        "n_topological": int(top.sum()),
        "n_trivial": int(triv.sum()),
        "precision_topological": float(y[top].mean()) if top.any() else None,
        "precision_trivial": float(1.0 - y[triv].mean()) if triv.any() else None,
        "accuracy_decided": float(np.mean(y[decided] == top[decided])) if decided.any() else None,
    }


@dataclass
class Decision:
    decision: str
    probability: float
    reasons: list[Reason]

    def reasons_json(self) -> list[dict]:
        return [asdict(reason) for reason in self.reasons]


def decide(probability: float, band: Band, reasons: Sequence[Reason] = ()) -> Decision:
    """Topological / trivial / abstain for one calibrated probability and the input checks."""
    reasons = list(reasons)
    by_band = band.decide(probability)
    if by_band == ABSTAIN:
        reasons.append(
            Reason(
                "uncertain",
                f"calibrated P(topological) {probability:.2f} lies between {band.low:.2f} and {band.high:.2f}, "
                f"where validation materials were not decided with {band.target_precision:.0%} precision",
            )
        )
    return Decision(ABSTAIN if reasons else by_band, float(probability), reasons)


def missing_spectra_reason(
    formula_elements: Sequence[str], seen: Sequence[str], model_kind: str, uses_composition: bool
) -> Reason | None:
    """``missing_spectra`` when half or more of the formula's elements have no spectrum (one
    metal edge of a binary oxide included: half the model's input would be absent) and the
    model cannot stand in for them (``uses_composition``: a composition + symmetry prior)."""
    formula_elements = sorted(set(formula_elements))
    seen = sorted(set(seen) & set(formula_elements))
    missing = sorted(set(formula_elements) - set(seen))
    if uses_composition or len(missing) < len(seen):
        return None
    return Reason(
        "missing_spectra",
        f"spectra for {len(seen)} of {len(formula_elements)} elements ({', '.join(seen) or 'none'}); "
        f"the model ({model_kind}) cannot use the composition for {', '.join(missing)}",
    )


@dataclass
class DecisionRule:
    """What turns a model's raw P(topological) into an answer: the calibrator and the abstain
    band, both fitted on validation, and what they achieved (``report``: ECE before and after
    calibration and reliability points on test, the band's abstention and decided-class
    precision on validation and test)."""

    calibrator: Calibrator
    band: Band
    report: dict = field(default_factory=dict)

    def calibrate(self, p) -> np.ndarray:
        return self.calibrator.transform(p)

    def to_dict(self) -> dict:
        return {"calibrator": self.calibrator.to_dict(), "band": self.band.to_dict(), "report": self.report}

    @classmethod
    def from_dict(cls, state: Mapping) -> DecisionRule:
        return cls(
            Calibrator.from_dict(state["calibrator"]), Band.from_dict(state["band"]), dict(state.get("report", {}))
        )

    @classmethod
    def uncalibrated(cls, threshold: float) -> DecisionRule:
        """For models stored before calibration: raw probabilities, the old single threshold."""
        return cls(Calibrator(), Band.at_threshold(threshold), {})


def fit_decision_rule(y_validation, p_validation, y_test, p_test, threshold: float) -> DecisionRule:
    """Calibrate on validation, choose the band on calibrated validation probabilities, and
    measure both on test (which is used for nothing else here)."""
    calibrator = Calibrator().fit(y_validation, p_validation)
    calibrated_validation = calibrator.transform(p_validation)
    calibrated_test = calibrator.transform(p_test)
    cut = float(calibrator.transform(np.array([threshold]))[0])
    band = choose_band(y_validation, calibrated_validation, fallback_threshold=cut)
    report = {
        "method": calibrator.method,
        "fitted_on": "validation",
        "ece_validation_before": expected_calibration_error(y_validation, p_validation),
        "ece_validation_after": expected_calibration_error(y_validation, calibrated_validation),
        "ece_test_before": expected_calibration_error(y_test, p_test),
        "ece_test_after": expected_calibration_error(y_test, calibrated_test),
        "reliability_test_before": reliability_points(y_test, p_test),
        "reliability_test_after": reliability_points(y_test, calibrated_test),
        "band_validation": band.validation,
        "band_test": band_report(y_test, calibrated_test, band),
    }
    return DecisionRule(calibrator, band, report)
