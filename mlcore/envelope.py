"""Is a spectrum like the training spectra, as the model sees it (aligned, normalised,
resampled and standardised)?

Per element, fitted on the training spectra by :class:`mlcore.preprocess.SpectrumPreprocessor`:
the mean and standard deviation at each of the window's points (the deviation floored at
``STD_FLOOR`` standardised units, so that an element with a handful of near-identical training
spectra does not reject every newcomer), and the distance of every training spectrum from
that mean: the root mean square of its z-scores over the points its data cover. A spectrum is
off the training distribution when its distance exceeds the largest of
``LIMIT_QUANTILE`` of the training distances and ``MIN_LIMIT``.

Only covered points count: a measured table that stops 25 eV above the edge is judged on
what was measured, not on the constant the resampling repeats beyond it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

STD_FLOOR = 0.2
LIMIT_QUANTILE = 99.0
MIN_LIMIT = 3.0


def covered(grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Grid points inside the data's energy range."""
    return (grid >= x[0]) & (grid <= x[-1])


def distance(values: np.ndarray, mask: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    """RMS z-score of standardised ``values`` over the ``mask`` points."""
    if not mask.any():
        return float("inf")
    z = (np.asarray(values, dtype=np.float64)[mask] - mean[mask]) / std[mask]
    return float(np.sqrt(np.mean(z * z)))


def fit_element(values: np.ndarray, masks: np.ndarray) -> dict:
    """Envelope of one element from its training spectra: (n, P) standardised values and
    (n, P) covered-point masks."""
    values = np.asarray(values, dtype=np.float64)
    weights = masks.astype(np.float64)
    counts = np.maximum(weights.sum(axis=0), 1.0)
    mean = (values * weights).sum(axis=0) / counts
    std = np.sqrt(((values - mean) ** 2 * weights).sum(axis=0) / counts)
    std = np.maximum(std, STD_FLOOR)
    distances = [distance(v, m, mean, std) for v, m in zip(values, masks, strict=True)]
    limit = max(float(np.percentile(distances, LIMIT_QUANTILE)), MIN_LIMIT)
    return {"mean": mean, "std": std, "limit": limit}


def to_state(envelope: Mapping[str, dict]) -> dict:
    return {
        element: {
            "mean": [round(float(v), 5) for v in entry["mean"]],
            "std": [round(float(v), 5) for v in entry["std"]],
            "limit": entry["limit"],
        }
        for element, entry in envelope.items()
    }


def from_state(state: Mapping[str, Mapping]) -> dict:
    return {
        element: {
            "mean": np.asarray(entry["mean"], dtype=np.float64),
            "std": np.asarray(entry["std"], dtype=np.float64),
            "limit": float(entry["limit"]),
        }
        for element, entry in state.items()
    }


#: A spectrum covering less of the model's window than this is not decided on: the rest of the
#: window would be its last value repeated, which no training spectrum looks like. Training
#: spectra (FEFF) cover ~100 %, the Materials Project's ~77 %, a 25 eV measured table ~50 %.
MIN_DECIDED_COVERAGE = 0.7


def window_coverage(preprocessor, spectrum) -> float:
    """Fraction of the model's energy window (for the spectrum's element) its data cover, on
    the preprocessor's own energy scale (version 2: relative to the spectrum's E0)."""
    from mlcore.spectrum import find_e0, validate_spectrum

    energies, mu = validate_spectrum(spectrum.element, spectrum.energies_ev, spectrum.mu)
    x = energies - find_e0(energies, mu) if preprocessor.aligned else energies
    start, end = preprocessor.window_ev(spectrum.element)
    if not end > start:
        return 1.0
    return float(max(min(end, x[-1]) - max(start, x[0]), 0.0) / (end - start))
