"""Fixtures for the mlcore tests: small synthetic data, no database, no Django."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of test output

import numpy as np
import pytest

from mlcore.data import RawSpectrum
from mlcore.elements import K_EDGE_ENERGY_EV


def make_raw_spectrum(
    element: str, offset_ev: float = 5.0, n_points: int = 100, width_ev: float = 55.0, peak: float = 0.0, seed: int = 0
) -> RawSpectrum:
    """A FEFF-like K-edge spectrum: edge step, one resonance, a little noise."""
    rng = np.random.default_rng(seed)
    start_ev = K_EDGE_ENERGY_EV[element] + offset_ev
    energies_ev = np.linspace(start_ev, start_ev + width_ev, n_points)
    relative = (energies_ev - start_ev) / width_ev
    mu = 1.0 / (1.0 + np.exp(-(relative - 0.1) / 0.02)) + 0.5 * np.exp(-(((relative - 0.3) / 0.05) ** 2))
    mu += peak * np.exp(-(((relative - 0.6) / 0.03) ** 2)) + rng.normal(0.0, 0.01, n_points)
    return RawSpectrum(element=element, energies_ev=energies_ev, mu=mu)


@pytest.fixture
def raw_materials() -> list[list[RawSpectrum]]:
    """Twelve materials made of Ti, O, Cu, S spectra."""
    elements = [("Ti", "O"), ("Cu", "S"), ("Ti", "S", "O"), ("O",)] * 3
    return [
        [make_raw_spectrum(e, offset_ev=2.0 + row % 3, seed=10 * row + i) for i, e in enumerate(symbols)]
        for row, symbols in enumerate(elements)
    ]


@pytest.fixture(scope="package", autouse=True)
def single_native_thread():
    """One OpenMP / BLAS thread for scikit-learn and NumPy (TensorFlow is unaffected).

    The test problems are tiny, and on a shared two-core machine spinning native
    threads cost far more than they save.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="package")
def planted():
    """Train / validation / test parts of a synthetic set with a learnable bump."""
    from mlcore.synthetic import make_synthetic_dataset

    X, y = make_synthetic_dataset(2000, n_elements=12, signal_strength=1.0, random_state=5)
    rows = {"train": np.arange(0, 1200), "validation": np.arange(1200, 1500), "test": np.arange(1500, 2000)}
    return {name: (X.subset(r), y[r]) for name, r in rows.items()}


def fit_on_planted(kind: str, planted: dict, shuffle_labels: bool = False, **hyperparameters):
    """A model of ``kind`` trained on the planted set (labels optionally shuffled)."""
    from mlcore.models import make_model
    from mlcore.weights import sample_weights

    (X_train, y_train), (X_val, y_val) = planted["train"], planted["validation"]
    if shuffle_labels:
        y_train = np.random.default_rng(0).permutation(y_train)
        y_val = np.random.default_rng(1).permutation(y_val)
    weights = sample_weights(X_train.element_sets(), y_train)
    model = make_model(kind, **hyperparameters)
    return model.fit(X_train, y_train, sample_weight=weights, validation_data=(X_val, y_val)), y_val


# Trained CNNs are shared between test modules: graph tracing dominates their cost.
CNN_PLANTED_SETTINGS = {"epochs": 8, "batch_size": 64, "patience": 8}


@pytest.fixture(scope="package")
def planted_cnn_sg(planted):
    return fit_on_planted("cnn-sg", planted, **CNN_PLANTED_SETTINGS)[0]


@pytest.fixture(scope="package")
def composition_cnn():
    """A cnn-sg-composition model (every branch) with its progress reports and data."""
    from mlcore.models import make_model
    from mlcore.synthetic import make_synthetic_dataset

    X, y = make_synthetic_dataset(700, n_elements=15, signal_strength=1.0, random_state=11)
    X_train, y_train, X_val, y_val = X.subset(np.arange(500)), y[:500], X.subset(np.arange(500, 700)), y[500:]
    progress = []
    model = make_model("cnn-sg-composition", epochs=2, batch_size=64, random_state=3)
    model.fit(X_train, y_train, validation_data=(X_val, y_val), progress_callback=lambda *a: progress.append(a))
    return {"model": model, "progress": progress, "train": (X_train, y_train), "validation": (X_val, y_val)}


@pytest.fixture(scope="package")
def seeded_cnns(composition_cnn):
    """Two sparse and one dense "cnn" model trained with the same seed and data."""
    from mlcore.models import make_model

    X_train, y_train = composition_cnn["train"]
    X_train, y_train = X_train.subset(np.arange(200)), y_train[:200]
    settings = {"epochs": 1, "batch_size": 128, "random_state": 9}
    return {
        "first": make_model("cnn", **settings).fit(X_train, y_train),
        "second": make_model("cnn", **settings).fit(X_train, y_train),
        "dense": make_model("cnn", formulation="dense", **settings).fit(X_train, y_train),
    }
