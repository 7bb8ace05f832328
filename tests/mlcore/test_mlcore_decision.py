"""Calibration (fitted on validation only), the abstain band, reasons, and the training-spectra
envelope behind ``off_distribution``."""

import numpy as np
import pytest

from mlcore.calibration import Calibrator, expected_calibration_error, reliability_points
from mlcore.decision import (
    NEVER_HIGH,
    NEVER_LOW,
    Band,
    DecisionRule,
    Reason,
    band_report,
    choose_band,
    decide,
    fit_decision_rule,
    missing_spectra_reason,
    wilson_lower,
)
from mlcore.preprocess import SpectrumPreprocessor

from .conftest import make_raw_spectrum


def overconfident(n: int, seed: int):
    """Labels drawn from P = sigmoid(z), and a model that reports sigmoid(3 z + 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return y, 1 / (1 + np.exp(-(3 * z + 1)))


def test_platt_calibration_fitted_on_validation_lowers_test_ece_and_keeps_the_ranking():
    y_val, p_val = overconfident(400, 0)
    y_test, p_test = overconfident(2000, 1)
    calibrator = Calibrator().fit(y_val, p_val)
    after = calibrator.transform(p_test)
    before_ece, after_ece = expected_calibration_error(y_test, p_test), expected_calibration_error(y_test, after)
    assert calibrator.method == "platt" and calibrator.n_fit == 400
    assert after_ece < 0.5 * before_ece and after_ece < 0.05
    assert np.all(np.diff(after[np.argsort(p_test)]) >= 0)  # monotonic: the ranking stays
    assert Calibrator.from_dict(calibrator.to_dict()).transform(p_test) == pytest.approx(after)


def test_well_calibrated_validation_probabilities_are_kept_as_they_are():
    """Platt scaling is kept only if it predicts left-out validation materials better."""
    rng = np.random.default_rng(7)
    p = rng.uniform(0.02, 0.98, 60)
    y = (rng.random(60) < p).astype(int)  # labels drawn from the probabilities themselves
    calibrator = Calibrator().fit(y, p)
    assert calibrator.method == "identity"
    assert calibrator.loo_log_loss["platt"] >= calibrator.loo_log_loss["identity"]
    assert np.array_equal(calibrator.transform(p), p)


def test_one_class_in_validation_leaves_probabilities_as_they_are():
    calibrator = Calibrator().fit([1, 1, 1], [0.2, 0.7, 0.9])
    assert calibrator.method == "identity"
    assert np.array_equal(calibrator.transform([0.2, 0.7]), [0.2, 0.7])
    with pytest.raises(ValueError, match="one label per probability"):
        Calibrator().fit([1, 0], [0.5])


def test_reliability_points_count_every_material_once():
    y, p = overconfident(500, 2)
    points = reliability_points(y, p)
    assert sum(point["count"] for point in points) == 500
    assert all(point["low"] <= point["mean_probability"] <= point["high"] for point in points)


def test_the_decision_rule_is_fitted_on_validation_and_only_measured_on_test():
    y_val, p_val = overconfident(300, 3)
    y_test, p_test = overconfident(300, 4)
    rule = fit_decision_rule(y_val, p_val, y_test, p_test, threshold=0.5)
    flipped = fit_decision_rule(y_val, p_val, 1 - y_test, p_test[::-1], threshold=0.5)
    assert rule.calibrator == flipped.calibrator and rule.band == flipped.band
    assert rule.report["ece_test_before"] != flipped.report["ece_test_before"]
    assert rule.report["fitted_on"] == "validation"
    restored = DecisionRule.from_dict(rule.to_dict())
    assert restored.band == rule.band and restored.calibrator == rule.calibrator


def test_the_band_keeps_both_decided_classes_at_the_target_precision_on_validation():
    y, p = overconfident(600, 5)
    calibrated = Calibrator().fit(y, p).transform(p)
    band = choose_band(y, calibrated, target_precision=0.9)
    assert band.low < band.high
    report = band_report(y, calibrated, band)
    assert report["precision_topological"] >= 0.9 and report["precision_trivial"] >= 0.9
    assert 0.0 < report["abstention_rate"] < 1.0
    assert band.validation == report


def test_a_class_that_never_reaches_the_target_is_never_decided():
    p = np.linspace(0.01, 0.99, 50)
    y = np.array([0] * 30 + [1, 0] * 10)  # the top one is trivial; the lowest 30 all trivial
    band = choose_band(y, p, target_precision=0.9)
    assert band.high == NEVER_HIGH
    assert band.low >= p[29] and band.validation["precision_trivial"] >= 0.9
    assert choose_band(np.array([1, 1]), np.array([0.1, 0.2])).low == NEVER_LOW


def test_a_few_lucky_validation_materials_do_not_open_a_class():
    """Precision is taken at the lower end of its Wilson interval (z = 1)."""
    assert wilson_lower(20, 20) == pytest.approx(0.952, abs=1e-3)
    assert wilson_lower(9, 10) == pytest.approx(0.766, abs=1e-3)
    y, p = np.array([0, 0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])  # perfect, but only 3 each
    band = choose_band(y, p)
    assert band.high == NEVER_HIGH and band.low == NEVER_LOW


def test_decide_abstains_for_any_reason_and_keeps_the_probability():
    band = Band(low=0.3, high=0.7)
    assert decide(0.9, band).decision == "topological" and decide(0.1, band).decision == "trivial"
    uncertain = decide(0.5, band)
    assert uncertain.decision == "abstain" and [r.code for r in uncertain.reasons] == ["uncertain"]
    reason = Reason("unseen_element", "never seen")
    decided = decide(0.95, band, [reason])
    assert decided.decision == "abstain" and decided.probability == 0.95 and decided.reasons == [reason]
    with pytest.raises(ValueError, match="unknown reason code"):
        Reason("nope", "")
    legacy = Band.at_threshold(0.4)
    assert legacy.decide(0.4) == "topological" and legacy.decide(0.39999) == "trivial"


def test_missing_spectra_when_half_or_more_elements_lack_one_and_no_prior_stands_in():
    assert missing_spectra_reason(["Li", "Co", "O"], ["Co"], "cnn-sg", uses_composition=False).code == (
        "missing_spectra"
    )
    assert missing_spectra_reason(["Li", "Co", "O"], ["Co", "O"], "cnn-sg", uses_composition=False) is None
    assert missing_spectra_reason(["Ti", "O"], ["Ti"], "cnn-sg", uses_composition=False).code == "missing_spectra"
    assert missing_spectra_reason(["Ti", "Ba", "O"], ["Ti", "O"], "cnn-sg", uses_composition=False) is None
    assert missing_spectra_reason(["Li", "Co", "O"], ["Co"], "stacked", uses_composition=True) is None


def test_spectra_unlike_the_training_spectra_are_off_distribution(raw_materials):
    preprocessor = SpectrumPreprocessor().fit(raw_materials)
    assert not any(preprocessor.off_distribution(spectra) for spectra in raw_materials)
    like = make_raw_spectrum("Ti", offset_ev=9.0, seed=123)  # another scale: aligned, so alike
    assert preprocessor.off_distribution([like]) == {}
    unlike = make_raw_spectrum("Ti", peak=3.0, seed=123)  # a strong resonance no training spectrum has
    found = preprocessor.off_distribution([unlike])
    assert list(found) == ["Ti"] and "outside the training spectra" in found["Ti"]
    restored = SpectrumPreprocessor.from_dict(preprocessor.to_dict())
    assert restored.off_distribution([unlike]) == found
    assert restored.off_distribution([make_raw_spectrum("Fe")]) == {}  # unseen: another reason says so
