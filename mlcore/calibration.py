"""Calibrated probabilities: fitted on the validation split only, measured on test.

A classifier trained with class weights and early stopping ranks materials well but its
P(topological) is not a frequency. :class:`Calibrator` maps it to one with Platt scaling,
``sigmoid(a * logit(p) + b)``, fitted by maximum likelihood on the validation split with
Platt's smoothed targets ((n+ + 1) / (n+ + 2) and 1 / (n- + 2), so that a small, separable
validation set does not produce probabilities of exactly 0 or 1). Two parameters are as much
as ~40-80 validation materials support; isotonic regression would memorise them. Even so,
the map is kept only if it predicts left-out validation materials better than the raw
probabilities (leave-one-out log loss); otherwise the calibrator is the identity. The map is
monotonic (``a`` is kept positive), so rankings and ROC curves are unchanged.

``expected_calibration_error`` and ``reliability_points`` measure the result (equal-width
bins) on data the calibrator never saw: the test split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

_EPS = 1e-6
METHODS = ("platt", "identity")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass
class Calibrator:
    """``p -> sigmoid(slope * logit(p) + intercept)``; identity until fitted.

    Attributes
    ----------
    method : {"platt", "identity"}
        "identity" when there was nothing to fit on (one class only in validation), or when
        Platt scaling did not lower the leave-one-out log loss on validation.
    slope, intercept : float
    n_fit : int
        Validation materials it was fitted on.
    """

    method: str = "identity"
    slope: float = 1.0
    intercept: float = 0.0
    n_fit: int = 0

    def fit(self, y, p) -> Calibrator:
        """Fit on validation labels ``y`` (1 = topological) and raw probabilities ``p``."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        z = _logit(p).reshape(-1)
        if y.shape != z.shape:
            raise ValueError(f"calibration needs one label per probability ({y.size} labels, {z.size} probabilities)")
        n_pos, n_neg = float(y.sum()), float(y.size - y.sum())
        self.n_fit = int(y.size)
        if n_pos == 0 or n_neg == 0:
            self.method, self.slope, self.intercept = "identity", 1.0, 0.0
            return self
        target = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        # Keep the model's own probabilities unless Platt scaling predicts held-out validation
        # materials better (leave-one-out log loss, on validation only): with a few dozen
        # materials a fitted map can be worse than none.
        self.loo_log_loss = {"identity": _log_loss(y, _sigmoid(z)), "platt": _loo_platt_log_loss(y, z, target)}
        if self.loo_log_loss["platt"] >= self.loo_log_loss["identity"]:
            self.method, self.slope, self.intercept = "identity", 1.0, 0.0
            return self
        slope, intercept = _fit_platt(z, target)
        self.method, self.slope, self.intercept = "platt", slope, intercept
        return self

    def transform(self, p) -> np.ndarray:
        """Calibrated probabilities, same shape as ``p``."""
        p = np.asarray(p, dtype=np.float64)
        if self.method == "identity":
            return p.copy()
        return _sigmoid(self.slope * _logit(p) + self.intercept)

    def to_dict(self) -> dict:
        state = {"method": self.method, "slope": self.slope, "intercept": self.intercept, "n_fit": self.n_fit}
        if getattr(self, "loo_log_loss", None):
            state["loo_log_loss"] = self.loo_log_loss
        return state

    @classmethod
    def from_dict(cls, state: Mapping) -> Calibrator:
        method = str(state.get("method", "identity"))
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
        return cls(
            method, float(state.get("slope", 1.0)), float(state.get("intercept", 0.0)), int(state.get("n_fit", 0))
        )


def _log_loss(y: np.ndarray, q: np.ndarray) -> float:
    q = np.clip(q, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def _loo_platt_log_loss(y: np.ndarray, z: np.ndarray, target: np.ndarray) -> float:
    """Mean log loss of each material under Platt scaling fitted without it."""
    losses = []
    for i in range(y.size):
        keep = np.arange(y.size) != i
        slope, intercept = _fit_platt(z[keep], target[keep])
        losses.append(_log_loss(y[i : i + 1], _sigmoid(np.array([slope * z[i] + intercept]))))
    return float(np.mean(losses))


def _fit_platt(z: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood (slope > 0, intercept): Newton's method on the cross-entropy with
    step halving, and a tiny ridge towards slope 1 so a separable set stays finite."""
    ridge = 1e-3

    def loss(params: np.ndarray) -> float:
        u = params[0] * z + params[1]
        # cross-entropy with soft targets: log(1 + e^u) - t u, written stably
        return float(np.sum(np.logaddexp(0.0, u) - target * u) + 0.5 * ridge * (params[0] - 1.0) ** 2)

    params = np.array([1.0, 0.0])
    current = loss(params)
    for _ in range(100):
        q = _sigmoid(params[0] * z + params[1])
        w = np.maximum(q * (1 - q), 1e-12)
        gradient = np.array([np.sum((q - target) * z) + ridge * (params[0] - 1.0), np.sum(q - target)])
        hessian = np.array([[np.sum(w * z * z) + ridge, np.sum(w * z)], [np.sum(w * z), np.sum(w) + ridge]])
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6 and loss(params - scale * step) > current:
            scale *= 0.5
        params = params - scale * step
        previous, current = current, loss(params)
        if previous - current < 1e-12:
            break
    slope, intercept = float(params[0]), float(params[1])
    if not slope > 0:  # validation ranks backwards: keep the order, fit the base rate only
        slope = 1e-3
        intercept = float(_logit(np.array([target.mean()]))[0])
    return slope, intercept


def _bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((np.asarray(p, dtype=np.float64) * n_bins).astype(int), n_bins - 1)


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    """Sum over equal-width bins of (bin share) x |mean P - observed fraction topological|."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if y.size == 0:
        return float("nan")
    bins = _bins(p, n_bins)
    error = 0.0
    for b in np.unique(bins):
        inside = bins == b
        error += inside.sum() / y.size * abs(p[inside].mean() - y[inside].mean())
    return float(error)


def reliability_points(y, p, n_bins: int = 10) -> list[dict]:
    """One point per non-empty equal-width bin: its range, materials, mean predicted P(topological)
    and observed fraction topological (the reliability diagram)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    bins = _bins(p, n_bins)
    points = []
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            points.append(
                {
                    "low": b / n_bins,
                    "high": (b + 1) / n_bins,
                    "count": int(inside.sum()),
                    "mean_probability": float(p[inside].mean()),
                    "fraction_topological": float(y[inside].mean()),
                }
            )
    return points
