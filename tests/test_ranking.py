"""The ranking's decision filter: a band on calibrated probabilities becomes bounds on the raw
stored ones (the calibrator is monotonic), so a stored ranking filters by decision on its index
and the rows it keeps are exactly those the band decides that way."""

from __future__ import annotations

import math

import numpy as np
import pytest

from materials.learning.decisions import raw_bounds, uncalibrate
from mlcore.calibration import Calibrator
from mlcore.decision import NEVER_HIGH, NEVER_LOW, Band, DecisionRule

RULES = {
    "identity": DecisionRule(Calibrator(), Band(low=0.3, high=0.7)),
    "platt": DecisionRule(Calibrator("platt", 2.0, 0.5), Band(low=0.3, high=0.8)),
    "flat platt": DecisionRule(Calibrator("platt", 0.3, -0.2), Band(low=0.35, high=0.5)),
    "never topological": DecisionRule(Calibrator("platt", 1.5, 0.0), Band(low=0.2, high=NEVER_HIGH)),
    "never trivial": DecisionRule(Calibrator(), Band(low=NEVER_LOW, high=0.6)),
}


def kept(bounds, decision: str, raw: np.ndarray) -> np.ndarray:
    if bounds is None:
        return np.zeros(raw.shape, dtype=bool)
    low, high = bounds
    if decision == "topological":
        return raw >= low
    if decision == "trivial":
        return raw <= high
    return (raw > low) & (raw < high)


@pytest.mark.parametrize("name", list(RULES))
def test_raw_bounds_keep_exactly_the_rows_the_band_decides_that_way(name):
    rule = RULES[name]
    raw = np.linspace(0.0, 1.0, 2001)
    decided = np.array([rule.band.decide(p) for p in rule.calibrate(raw)])
    for decision in ("topological", "trivial", "abstain"):
        assert (kept(raw_bounds(rule, decision), decision, raw) == (decided == decision)).all(), decision


def test_uncalibrate_inverts_the_calibrator_within_its_range():
    rule = RULES["platt"]
    for raw in (1e-4, 0.2, 0.5, 0.93, 0.9999):
        assert uncalibrate(rule, float(rule.calibrate(np.array([raw]))[0])) == pytest.approx(raw, rel=1e-9)
    assert uncalibrate(rule, 0.0) == -math.inf and uncalibrate(rule, 1.0) == math.inf
