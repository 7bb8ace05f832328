"""Synthetic paper-scale datasets, for benchmarks and tests only (not physics).

Each absorbing element gets a fixed random template (an edge step plus three
Gaussian peaks); a material's spectrum of that element is the template with random
amplitude jitter and noise. Labels depend mildly on which elements a material
contains, like the real data, and ``signal_strength > 0`` plants a learnable
Gaussian bump in every spectrum of topological materials.
"""

from __future__ import annotations

import numpy as np

from mlcore.data import MaterialSpectra
from mlcore.elements import ABSORBING_ELEMENTS, N_ELEMENTS, element_index


def make_synthetic_dataset(
    n_materials: int = 16458,
    n_elements: int = 81,
    mean_elements_per_material: float = 3.0,
    positive_fraction: float = 0.19,
    signal_strength: float = 0.0,
    n_points: int = 200,
    random_state: int = 0,
) -> tuple[MaterialSpectra, np.ndarray]:
    """Synthetic materials with ragged element spectra and binary labels.

    Parameters
    ----------
    n_materials : int
        Number of materials N (the paper has 16,458; x3 with augmentation).
    n_elements : int
        Absorbing elements in use, the first ``n_elements`` of ``ABSORBING_ELEMENTS``
        (the paper's data span 81).
    mean_elements_per_material : float
        Mean number of spectra per material (at least 1, at most 8).
    positive_fraction : float
        Fraction of topological materials (paper: 3,121 / 16,458 = 0.19).
    signal_strength : float
        Height of the bump added to every spectrum of topological materials; 0 gives
        spectra that carry no label information.
    n_points : int
        Points per spectrum.
    random_state : int
        Seed.

    Returns
    -------
    X : MaterialSpectra
    y : numpy.ndarray
        (N,) int64 labels, 1 = topological.
    """
    if not 1 <= n_elements <= len(ABSORBING_ELEMENTS):
        raise ValueError(f"n_elements must be between 1 and {len(ABSORBING_ELEMENTS)}")
    rng = np.random.default_rng(random_state)
    element_ids = np.array([element_index(symbol) for symbol in ABSORBING_ELEMENTS[:n_elements]])

    # Zipf-like element abundance, shuffled so abundance does not follow atomic number.
    abundance = 1.0 / (np.arange(n_elements) + 3.0)
    abundance = rng.permutation(abundance / abundance.sum())
    counts = np.clip(1 + rng.poisson(mean_elements_per_material - 1, n_materials), 1, min(8, n_elements))
    # Weighted sampling without replacement for every material at once (Gumbel top-k).
    keys = np.log(abundance)[None, :] + rng.gumbel(size=(n_materials, n_elements))
    ranked = np.argsort(-keys, axis=1)
    chosen = ranked[np.arange(n_elements)[None, :] < counts[:, None]].reshape(-1)
    material_index = np.repeat(np.arange(n_materials), counts)
    # MaterialSpectra keeps rows sorted by (material, element); sorting the element
    # choice now avoids re-ordering (copying) the spectra later.
    chosen = chosen[np.lexsort((element_ids[chosen], material_index))]

    # Labels: the most "topological" materials by element propensity plus noise.
    propensity = rng.normal(0.0, 0.7, n_elements)
    score = np.bincount(material_index, weights=propensity[chosen], minlength=n_materials) / counts
    score += rng.normal(0.0, 1.0, n_materials)
    y = (score >= np.quantile(score, 1.0 - positive_fraction)).astype(np.int64)

    grid = np.linspace(0.0, 1.0, n_points)
    centers = rng.uniform(0.15, 0.9, (n_elements, 3))
    heights = rng.uniform(0.3, 1.5, (n_elements, 3))
    templates = 1.0 / (1.0 + np.exp(-(grid - 0.1) / 0.02))
    templates = templates + np.sum(heights[:, :, None] * np.exp(-(((grid - centers[:, :, None]) / 0.04) ** 2)), axis=1)
    # float32 and in-place updates keep the peak memory near one copy of the spectra.
    spectra = templates.astype(np.float32)[chosen]
    spectra *= rng.normal(1.0, 0.05, (chosen.size, 1)).astype(np.float32)
    spectra += np.float32(0.05) * rng.standard_normal(spectra.shape, dtype=np.float32)
    if signal_strength:
        positive_rows = np.flatnonzero(y[material_index])
        bump = np.exp(-(((grid - 0.55) / 0.03) ** 2)).astype(np.float32)
        spectra[positive_rows] += np.float32(signal_strength) * bump

    composition = np.zeros((n_materials, N_ELEMENTS), dtype=np.float32)
    fractions = rng.gamma(1.0, 1.0, chosen.size)
    np.add.at(composition, (material_index, element_ids[chosen]), fractions)
    composition /= composition.sum(axis=1, keepdims=True)

    X = MaterialSpectra(
        material_index=material_index,
        element_index=element_ids[chosen],
        spectra=spectra,
        space_group=rng.integers(1, 231, n_materials),
        composition=composition,
    )
    return X, y
