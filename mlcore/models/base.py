"""Shared estimator behaviour: input checks, element channels, save/load."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from mlcore import __version__
from mlcore.artifacts import read_artifact, write_artifact
from mlcore.data import MaterialSpectra
from mlcore.elements import ELEMENTS, N_ELEMENTS

# progress_callback(step, total_steps, logs): steps are epochs for the CNNs; logs map names to floats.
ProgressCallback = Callable[[int, int, dict[str, float]], None]
ValidationData = tuple[MaterialSpectra, np.ndarray] | tuple[MaterialSpectra, np.ndarray, np.ndarray]


def check_dataset(X: Any) -> MaterialSpectra:
    """``X`` if it is a :class:`MaterialSpectra`, else ``ValueError``."""
    if not isinstance(X, MaterialSpectra):
        raise ValueError(f"expected MaterialSpectra, got {type(X).__name__}")
    return X


def check_labels(
    X: MaterialSpectra, y: Any, sample_weight: Any = None, require_both_classes: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Validate binary labels (1 = topological) and optional weights for ``X``.

    ``require_both_classes`` is for training sets; validation sets may hold one class.

    Returns
    -------
    y : numpy.ndarray
        (N,) int64 labels.
    sample_weight : numpy.ndarray
        (N,) float64 weights (ones when not given).
    """
    labels = np.asarray(y).reshape(-1)
    if labels.shape[0] != X.n_materials:
        raise ValueError(f"y has {labels.shape[0]} labels for {X.n_materials} materials")
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError("y must contain only 0 (trivial) and 1 (topological)")
    if require_both_classes and np.unique(labels).size < 2:
        raise ValueError("y must contain both classes to train a classifier")
    if sample_weight is None:
        weights = np.ones(labels.shape[0])
    else:
        weights = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        if weights.shape[0] != labels.shape[0]:
            raise ValueError(f"sample_weight has {weights.shape[0]} entries for {labels.shape[0]} materials")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("sample_weight must be finite and non-negative")
    return labels.astype(np.int64), weights


def check_validation(validation_data: ValidationData) -> tuple[MaterialSpectra, np.ndarray, np.ndarray]:
    """``(X_val, y_val, w_val)`` from ``(X_val, y_val)`` or ``(X_val, y_val, w_val)``, checked.

    A validation set may hold one class; weights are ones when not given.
    """
    X_val = check_dataset(validation_data[0])
    w_val = validation_data[2] if len(validation_data) > 2 else None
    y_val, w_val = check_labels(X_val, validation_data[1], w_val, require_both_classes=False)
    return X_val, y_val, w_val


def balanced_class_weights(y: np.ndarray, sample_weight: np.ndarray) -> np.ndarray:
    """Rescale ``sample_weight`` so that both classes carry the same total weight.

    Unlike scikit-learn's multiplicative ``class_weight="balanced"``, this is
    idempotent: weights from :func:`mlcore.weights.sample_weights`, which already
    correct class imbalance, are only nudged, not corrected twice.
    """
    totals = np.bincount(y, weights=sample_weight, minlength=2)
    if np.any(totals <= 0):
        raise ValueError("each class needs a positive total sample weight")
    return sample_weight * (totals.sum() / 2.0) / totals[y]


def channel_lookup(elements: np.ndarray) -> np.ndarray:
    """(len(ELEMENTS),) array: channel position of each element in ``elements``, -1 if absent."""
    lookup = np.full(N_ELEMENTS, -1, dtype=np.int64)
    lookup[np.asarray(elements, dtype=np.int64)] = np.arange(len(elements))
    return lookup


def spectra_elements(X: MaterialSpectra) -> np.ndarray:
    """Sorted element indices that have at least one spectrum in ``X``."""
    elements = np.unique(X.element_index)
    if elements.size == 0:
        raise ValueError("the training data contain no spectra")
    return elements


class SpectraClassifier(BaseEstimator, ABC):
    """Base class: ``predict_proba`` returns P(topological) as a 1-D array.

    ``fit`` checks the inputs and hands them to the subclass's ``_fit``; subclasses
    implement ``_fit``, ``predict_proba``, ``_get_state`` (JSON-serializable dict and
    dict of arrays) and ``_set_state``. Hyperparameters are ``__init__`` arguments,
    learned state ends in ``_``.
    """

    #: An attribute that only a fitted model has (see :meth:`_check_fitted`).
    _fitted_attribute = "elements_"

    def predict(self, X: MaterialSpectra, threshold: float = 0.5) -> np.ndarray:
        """Class labels (1 = topological) at probability ``threshold``."""
        return (self.predict_proba(X) >= threshold).astype(np.int64)

    @property
    def element_symbols_(self) -> list[str]:
        """Absorbing elements the model has channels for (seen in training)."""
        return [ELEMENTS[i] for i in self.elements_]

    def save(self, path: str | Path) -> None:
        """Write the fitted model to one zip file (no pickle; see :mod:`mlcore.artifacts`)."""
        state, arrays = self._get_state()
        manifest = {
            "class": type(self).__name__,
            "mlcore_version": __version__,
            # A nested fitted model (a stacked model's prior) is saved by _get_state.
            "params": {k: v for k, v in self.get_params(deep=False).items() if not isinstance(v, SpectraClassifier)},
            "state": state,
        }
        write_artifact(path, manifest, arrays)

    @classmethod
    def load(cls, path: str | Path) -> SpectraClassifier:
        """Read a model written by :meth:`save`."""
        return cls.from_artifact(*read_artifact(path))

    @classmethod
    def from_artifact(cls, manifest: dict, arrays: dict[str, np.ndarray]) -> SpectraClassifier:
        """Rebuild a model from the contents of an artifact (see :func:`mlcore.artifacts.read_artifact`)."""
        if manifest["class"] != cls.__name__:
            raise ValueError(f"the artifact holds a {manifest['class']}, not a {cls.__name__}")
        model = cls(**manifest["params"])
        model._set_state(manifest["state"], arrays)
        return model

    def fit(
        self,
        X: MaterialSpectra,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        validation_data: ValidationData | None = None,
        progress_callback: ProgressCallback | None = None,
    ) -> SpectraClassifier:
        """Learn from materials ``X`` with labels ``y``; returns self.

        Parameters
        ----------
        X : MaterialSpectra
            Preprocessed training materials (augmented copies included).
        y : numpy.ndarray
            (N,) labels, 1 = topological, 0 = trivial; both classes must be present.
        sample_weight : numpy.ndarray, optional
            (N,) misclassification weights, e.g. :func:`mlcore.weights.sample_weights`.
        validation_data : (X_val, y_val) or (X_val, y_val, w_val), optional
            Held-out materials; what a model does with them is in its ``_fit``.
        progress_callback : callable, optional
            Called as ``progress_callback(step, total_steps, logs)``.
        """
        X = check_dataset(X)
        y, sample_weight = check_labels(X, y, sample_weight)
        self._fit(X, y, sample_weight, validation_data, progress_callback)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, self._fitted_attribute):
            raise ValueError(f"{type(self).__name__} is not fitted; call fit() first")

    @abstractmethod
    def _fit(
        self,
        X: MaterialSpectra,
        y: np.ndarray,
        sample_weight: np.ndarray,
        validation_data: ValidationData | None,
        progress_callback: ProgressCallback | None,
    ) -> None:
        """Learn from checked inputs: ``y`` as int64 0/1, ``sample_weight`` as float64 (ones when not given)."""

    @abstractmethod
    def predict_proba(self, X: MaterialSpectra) -> np.ndarray:
        """(N,) probability that each material is topological."""

    @abstractmethod
    def _get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Learned state as (JSON-serializable dict, dict of arrays)."""

    @abstractmethod
    def _set_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_get_state` returned."""
