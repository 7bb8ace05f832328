"""Fixed-length feature matrices for the non-neural models."""

from __future__ import annotations

import numpy as np

from mlcore.data import MaterialSpectra
from mlcore.models.base import channel_lookup
from mlcore.symmetry import crystal_system_index, point_group_index, symmetry_one_hot


def flattened_spectra(X: MaterialSpectra, elements: np.ndarray) -> np.ndarray:
    """(N, len(elements) * L) float32: each material's spectra in its element blocks, zeros elsewhere.

    Spectra of elements outside ``elements`` are dropped.
    """
    lookup = channel_lookup(elements)
    channel = lookup[X.element_index]
    keep = channel >= 0
    flat = np.zeros((X.n_materials, len(elements), X.n_points), dtype=np.float32)
    flat[X.material_index[keep], channel[keep]] = X.spectra[keep]
    return flat.reshape(X.n_materials, -1)


def spectra_and_symmetry(X: MaterialSpectra, elements: np.ndarray) -> np.ndarray:
    """Flattened spectra followed by the 269-long symmetry one-hot (the SVM-sg input)."""
    return np.hstack([flattened_spectra(X, elements), symmetry_one_hot(X.space_group)])


def composition_and_symmetry(X: MaterialSpectra) -> np.ndarray:
    """(N, len(ELEMENTS) + 3): element fractions, space group, crystal system and point group indices.

    Tree models split on the ordinal indices directly, so no one-hot is needed.
    """
    return np.hstack(
        [
            X.composition.astype(np.float64),
            X.space_group[:, None].astype(np.float64),
            crystal_system_index(X.space_group)[:, None].astype(np.float64),
            point_group_index(X.space_group)[:, None].astype(np.float64),
        ]
    )
