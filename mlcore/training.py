"""One training path for every model kind: preprocess, weight, augment, fit.

The application (``materials/learning/training.py``) and the benchmark
(``bench/evaluate_bundled.py``) both call :func:`fit_model`, so a model trained by
``manage.py train`` and the benchmark's model of the same kind on the same split are
the same computation with the same defaults.

Inputs are *records*: any object with ``spectra`` (per material, a list of
:class:`mlcore.data.RawSpectrum`), ``space_groups`` (N,), ``compositions`` (per
material, ``{symbol: amount}``), ``labels`` (N,) and ``element_sets()`` (per material,
the formula's elements), e.g. ``materials.learning.arrays.MaterialRecords``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlcore.data import MaterialSpectra, composition_matrix
from mlcore.models import MODEL_KINDS, SpectraClassifier, make_model
from mlcore.preprocess import SpectrumPreprocessor
from mlcore.weights import sample_weights

#: +-1 eV shift augmentation of the training spectra (the paper's), for ``augmented`` kinds.
SHIFTS_EV = (-1.0, 0.0, 1.0)

#: The CNN schedule for a training set of a few hundred compounds: up to 60 epochs of
#: batches of 64, early stopping on validation loss (patience 10) picks the epoch. Chosen
#: on the validation compounds of split seed 0, never on test (``bench/evaluate_bundled.py
#: --tune``, bench/results/tuning.json: lowest validation loss, 0.456, and highest
#: validation ROC AUC, 0.867, of the three schedules tried, against 0.463 / 0.852 for
#: 150/32/20 and 0.456 / 0.852 for the class defaults 30/256/5).
CNN_SCHEDULE = {"epochs": 60, "batch_size": 64, "patience": 10}

#: Default hyperparameters per kind, over each class's own defaults.
DEFAULT_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    name: dict(CNN_SCHEDULE) if kind.class_name == "SpectraCNNClassifier" else {} for name, kind in MODEL_KINDS.items()
}


@dataclass
class FittedModel:
    """A fitted model with the preprocessing its inputs need.

    Attributes
    ----------
    kind : str
        Registry kind (:data:`mlcore.models.MODEL_KINDS`).
    model : SpectraClassifier
        The fitted model (a stacked model carries its prior inside).
    preprocessor : SpectrumPreprocessor or None
        Fitted on the training spectra; None for kinds that read no spectra.
    n_train : int
        Training materials (before augmentation).
    """

    kind: str
    model: SpectraClassifier
    preprocessor: SpectrumPreprocessor | None
    n_train: int

    def arrays(self, records) -> MaterialSpectra:
        """Model inputs of ``records`` (spectra preprocessed as in training)."""
        return model_inputs(self.preprocessor, records)

    def predict_proba(self, records) -> np.ndarray:
        """(N,) P(topological) of ``records``."""
        return self.model.predict_proba(self.arrays(records))


def composition_only(space_groups, compositions) -> MaterialSpectra:
    """A spectra-free :class:`MaterialSpectra` (composition + symmetry models)."""
    return MaterialSpectra(
        material_index=np.zeros(0, dtype=np.int64),
        element_index=np.zeros(0, dtype=np.int64),
        spectra=np.zeros((0, 200), dtype=np.float32),
        space_group=np.asarray(space_groups),
        composition=composition_matrix(compositions),
    )


def model_inputs(preprocessor: SpectrumPreprocessor | None, records) -> MaterialSpectra:
    """``records`` as model inputs: preprocessed spectra, or composition + symmetry only."""
    if preprocessor is None:
        return composition_only(records.space_groups, records.compositions)
    return preprocessor.transform(records.spectra, records.space_groups, records.compositions)


def hyperparameters_for(kind: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The kind's defaults with ``overrides`` on top (what a training run records)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_KINDS)}")
    return {**DEFAULT_HYPERPARAMETERS[kind], **(overrides or {})}


def fit_model(
    kind: str,
    train,
    validation,
    hyperparameters: dict[str, Any] | None = None,
    prior: SpectraClassifier | None = None,
    random_state: int | None = None,
    progress_callback=None,
) -> FittedModel:
    """Train one model of ``kind`` on ``train`` records, early-stopping on ``validation``.

    Every kind gets the paper's sample weights (class x rarest element, from the
    training records); spectral kinds a preprocessor fitted on the training spectra
    only; ``augmented`` kinds the +-1 eV shifted copies of their training spectra; a
    ``uses_prior`` kind the fitted ``prior`` (a composition + symmetry model).

    Raises
    ------
    ValueError
        For an unknown kind, bad hyperparameters, or a prior kind without a prior.
    """
    spec = MODEL_KINDS.get(kind)
    parameters = hyperparameters_for(kind, hyperparameters)
    if random_state is not None:
        parameters["random_state"] = random_state
    if spec.uses_prior:
        if prior is None:
            raise ValueError(f"model kind {kind!r} needs a fitted prior (a type-only model)")
        parameters["prior"] = prior
    model = make_model(kind, **parameters)
    weights = sample_weights(train.element_sets(), train.labels)
    labels = np.asarray(train.labels)
    if not spec.uses_spectra:
        preprocessor = None
        X_train = model_inputs(None, train)
    else:
        preprocessor = SpectrumPreprocessor().fit(train.spectra)
        if spec.augmented:
            X_train, source_rows = preprocessor.shift_augment(
                train.spectra, train.space_groups, train.compositions, shifts_ev=SHIFTS_EV
            )
            labels, weights = labels[source_rows], weights[source_rows]
        else:
            X_train = preprocessor.transform(train.spectra, train.space_groups, train.compositions)
    X_validation = model_inputs(preprocessor, validation)
    model.fit(
        X_train,
        labels,
        sample_weight=weights,
        validation_data=(X_validation, np.asarray(validation.labels)),
        progress_callback=progress_callback,
    )
    return FittedModel(kind=kind, model=model, preprocessor=preprocessor, n_train=len(train.labels))
