"""SVM-sg: RBF support vector machine on flattened spectra plus the symmetry one-hot."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from mlcore.data import MaterialSpectra
from mlcore.elements import element_indices
from mlcore.models.base import (
    SpectraClassifier,
    balanced_class_weights,
    check_dataset,
    check_validation,
    spectra_elements,
)
from mlcore.models.features import spectra_and_symmetry


class SVMClassifier(SpectraClassifier):
    """Support vector classifier on [spectra of training elements | 269-long symmetry one-hot].

    Decision values are turned into probabilities by Platt scaling (a logistic fit of
    the labels on the decision value) on the validation data when given and holding
    both classes, else on the training data. Prediction is evaluated in NumPy from the stored support vectors,
    dual coefficients and Platt constants, so a saved model needs no pickle.

    Parameters
    ----------
    C : float
        Soft-margin penalty.
    gamma : float or "scale"
        RBF width; "scale" uses 1 / (n_features * feature variance) of the training data.
    class_weight : "balanced" or None
        "balanced" rescales the sample weights so both classes carry the same total
        weight (idempotent, so it does not double the class correction already in
        :func:`mlcore.weights.sample_weights`).
    random_state : int
        Seed (SVC is deterministic without probability=True; kept for the interface).

    Attributes
    ----------
    elements_ : numpy.ndarray
        Element indices whose spectra form the input blocks.
    support_vectors_, dual_coef_ : numpy.ndarray
        The fitted RBF expansion.
    gamma_, intercept_ : float
    platt_slope_, platt_intercept_ : float
        P(topological) = 1 / (1 + exp(-(slope * decision + intercept))).
    """

    _fitted_attribute = "support_vectors_"

    def __init__(
        self, C: float = 1.0, gamma: float | str = "scale", class_weight: str | None = "balanced", random_state: int = 0
    ) -> None:
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.random_state = random_state

    def _fit(self, X, y, sample_weight, validation_data, progress_callback) -> None:
        """Fit the SVC and its Platt scaling. ``progress_callback(1, 1, {})`` is called at the end."""
        self.elements_ = spectra_elements(X)
        features = spectra_and_symmetry(X, self.elements_)
        variance = float(features.var())
        self.gamma_ = (
            1.0 / (features.shape[1] * variance if variance > 0 else 1.0)
            if self.gamma == "scale"
            else float(self.gamma)
        )
        if self.class_weight == "balanced":
            sample_weight = balanced_class_weights(y, sample_weight)
        svc = SVC(C=self.C, kernel="rbf", gamma=self.gamma_, random_state=self.random_state)
        svc.fit(features, y, sample_weight=sample_weight)
        # For binary SVC, a positive decision value means classes_[1] = 1 (topological).
        self.support_vectors_ = svc.support_vectors_.astype(np.float32)
        self.dual_coef_ = svc.dual_coef_[0].astype(np.float64)
        self.intercept_ = float(svc.intercept_[0])
        X_cal, y_cal = X, y
        if validation_data is not None:
            X_val, y_val, _ = check_validation(validation_data)
            if np.unique(y_val).size == 2:  # Platt scaling needs both classes
                X_cal, y_cal = X_val, y_val
        platt = LogisticRegression(C=1e6).fit(self.decision_function(X_cal)[:, None], y_cal)
        self.platt_slope_ = float(platt.coef_[0, 0])
        self.platt_intercept_ = float(platt.intercept_[0])
        if progress_callback is not None:
            progress_callback(1, 1, {})

    def decision_function(self, X: MaterialSpectra, batch_size: int = 2048) -> np.ndarray:
        """(N,) signed distance to the margin; positive leans topological."""
        features = spectra_and_symmetry(check_dataset(X), self.elements_)
        support_norms = np.sum(self.support_vectors_.astype(np.float64) ** 2, axis=1)
        decision = np.empty(features.shape[0])
        for start in range(0, features.shape[0], batch_size):
            block = features[start : start + batch_size].astype(np.float64)
            squared_distance = (
                np.sum(block**2, axis=1)[:, None] + support_norms[None, :] - 2.0 * block @ self.support_vectors_.T
            )
            kernel = np.exp(-self.gamma_ * np.maximum(squared_distance, 0.0))
            decision[start : start + batch_size] = kernel @ self.dual_coef_ + self.intercept_
        return decision

    def predict_proba(self, X: MaterialSpectra) -> np.ndarray:
        """(N,) probability that each material is topological."""
        self._check_fitted()
        logit = self.platt_slope_ * self.decision_function(X) + self.platt_intercept_
        return 1.0 / (1.0 + np.exp(-logit))

    def _get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        state = {
            "elements": self.element_symbols_,
            "gamma": self.gamma_,
            "intercept": self.intercept_,
            "platt_slope": self.platt_slope_,
            "platt_intercept": self.platt_intercept_,
        }
        return state, {"support_vectors": self.support_vectors_, "dual_coef": self.dual_coef_}

    def _set_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        self.elements_ = element_indices(state["elements"])
        self.gamma_ = float(state["gamma"])
        self.intercept_ = float(state["intercept"])
        self.platt_slope_ = float(state["platt_slope"])
        self.platt_intercept_ = float(state["platt_intercept"])
        self.support_vectors_ = arrays["support_vectors"]
        self.dual_coef_ = arrays["dual_coef"]
