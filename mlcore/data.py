"""Containers passed between the application and mlcore.

``RawSpectrum`` is one measured or computed K-edge spectrum as stored (energies in eV,
absorption ``mu``). ``MaterialSpectra`` is the model-ready, ragged dataset: one row per
(material, absorbing element) spectrum, already interpolated onto the element's energy
window and standardized by :class:`mlcore.preprocess.SpectrumPreprocessor`, plus one
space group number and one composition vector per material.

The ragged layout is what makes training cheap: a material has about three spectra, so
storing (material, element) rows instead of a dense (materials, 81, 200) block keeps
memory and compute proportional to the spectra that exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mlcore.elements import ELEMENTS, N_ELEMENTS, element_index
from mlcore.symmetry import check_space_groups


@dataclass
class RawSpectrum:
    """One K-edge absorption spectrum before preprocessing.

    Attributes
    ----------
    element : str
        Absorbing element symbol, e.g. ``"Ti"``.
    energies_ev : numpy.ndarray
        Photon energies in eV, strictly increasing.
    mu : numpy.ndarray
        Absorption at each energy (arbitrary units), same length as ``energies_ev``.
    """

    element: str
    energies_ev: np.ndarray
    mu: np.ndarray


@dataclass
class MaterialSpectra:
    """Model-ready dataset of N materials with M element spectra in total.

    Spectra rows are kept sorted by (material, element); a material has at most one
    spectrum per element and may have none (composition/symmetry-only models).

    Attributes
    ----------
    material_index : numpy.ndarray
        (M,) int64, row of the material each spectrum belongs to (0..N-1).
    element_index : numpy.ndarray
        (M,) int64, absorbing element of each spectrum as an index into
        :data:`mlcore.elements.ELEMENTS`.
    spectra : numpy.ndarray
        (M, L) float32 intensities on the element's energy window (L = 200 by default),
        standardized per element.
    space_group : numpy.ndarray
        (N,) int64 space group numbers 1..230.
    composition : numpy.ndarray
        (N, len(ELEMENTS)) float32 element fractions (rows sum to 1, or are all zero
        when the composition is unknown).
    """

    material_index: np.ndarray
    element_index: np.ndarray
    spectra: np.ndarray
    space_group: np.ndarray
    composition: np.ndarray

    def __post_init__(self) -> None:
        # Validation and canonical ordering live here because every consumer (models,
        # pipeline, subset) relies on sorted rows and consistent shapes.
        self.space_group = check_space_groups(self.space_group).reshape(-1)
        n_materials = self.space_group.shape[0]
        self.material_index = np.asarray(self.material_index, dtype=np.int64).reshape(-1)
        self.element_index = np.asarray(self.element_index, dtype=np.int64).reshape(-1)
        self.spectra = np.asarray(self.spectra, dtype=np.float32)
        self.composition = np.asarray(self.composition, dtype=np.float32)
        n_spectra = self.material_index.shape[0]
        if self.spectra.ndim != 2 or self.spectra.shape[0] != n_spectra:
            raise ValueError(f"spectra must have shape ({n_spectra}, n_points), got {self.spectra.shape}")
        if self.element_index.shape[0] != n_spectra:
            raise ValueError("material_index and element_index must have the same length")
        if self.composition.shape != (n_materials, N_ELEMENTS):
            raise ValueError(f"composition must have shape ({n_materials}, {N_ELEMENTS}), got {self.composition.shape}")
        if n_spectra:
            if self.material_index.min() < 0 or self.material_index.max() >= n_materials:
                raise ValueError("material_index refers to a material outside 0..n_materials-1")
            if self.element_index.min() < 0 or self.element_index.max() >= N_ELEMENTS:
                raise ValueError("element_index refers to an element outside the vocabulary")
            if not np.all(np.isfinite(self.spectra)):
                raise ValueError("spectra contain NaN or infinite values")
        order = np.lexsort((self.element_index, self.material_index))
        if np.any(order != np.arange(n_spectra)):
            self.material_index = self.material_index[order]
            self.element_index = self.element_index[order]
            self.spectra = self.spectra[order]
        repeated = (np.diff(self.material_index) == 0) & (np.diff(self.element_index) == 0)
        if np.any(repeated):
            row = int(self.material_index[1:][repeated][0])
            symbol = ELEMENTS[int(self.element_index[1:][repeated][0])]
            raise ValueError(f"material {row} has more than one {symbol} spectrum")

    @property
    def n_materials(self) -> int:
        """Number of materials N."""
        return int(self.space_group.shape[0])

    @property
    def n_points(self) -> int:
        """Points per spectrum L."""
        return int(self.spectra.shape[1])

    def spectrum_counts(self) -> np.ndarray:
        """(N,) number of spectra of each material."""
        return np.bincount(self.material_index, minlength=self.n_materials)

    def element_sets(self) -> list[set[str]]:
        """Absorbing elements with a spectrum, per material."""
        sets: list[set[str]] = [set() for _ in range(self.n_materials)]
        for row, element in zip(self.material_index.tolist(), self.element_index.tolist(), strict=True):
            sets[row].add(ELEMENTS[element])
        return sets

    def subset(self, material_rows: Sequence[int] | np.ndarray) -> MaterialSpectra:
        """Materials ``material_rows`` (in that order; repeats allowed) as a new dataset."""
        rows = np.asarray(material_rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_materials):
            raise ValueError("material_rows refers to a material outside the dataset")
        counts = self.spectrum_counts()
        starts = np.cumsum(counts) - counts
        # Spectra rows of the selected materials in the new material order: each material's
        # first row repeated over its spectra, plus the position within the material.
        selected_counts = counts[rows]
        new_starts = np.cumsum(selected_counts) - selected_counts
        position = np.arange(int(selected_counts.sum())) - np.repeat(new_starts, selected_counts)
        spectrum_rows = np.repeat(starts[rows], selected_counts) + position
        return MaterialSpectra(
            material_index=np.repeat(np.arange(rows.size), selected_counts),
            element_index=self.element_index[spectrum_rows],
            spectra=self.spectra[spectrum_rows].reshape(-1, self.n_points),
            space_group=self.space_group[rows],
            composition=self.composition[rows],
        )

    @classmethod
    def concatenate(cls, parts: Sequence[MaterialSpectra]) -> MaterialSpectra:
        """Stack datasets; material rows of later parts follow those of earlier ones."""
        if not parts:
            raise ValueError("nothing to concatenate")
        offsets = np.cumsum([0] + [part.n_materials for part in parts[:-1]])
        return cls(
            material_index=np.concatenate([p.material_index + o for p, o in zip(parts, offsets, strict=True)]),
            element_index=np.concatenate([p.element_index for p in parts]),
            spectra=np.concatenate([p.spectra for p in parts]),
            space_group=np.concatenate([p.space_group for p in parts]),
            composition=np.concatenate([p.composition for p in parts]),
        )


def composition_matrix(compositions: Sequence[Mapping[str, float]]) -> np.ndarray:
    """(N, len(ELEMENTS)) float32 element fractions from ``{symbol: amount}`` mappings.

    Amounts may be atom counts or fractions; each row is normalized to sum to 1. An
    empty mapping gives a zero row (composition unknown).

    Raises
    ------
    ValueError
        For an unknown element symbol or a negative / non-finite amount.
    """
    matrix = np.zeros((len(compositions), N_ELEMENTS), dtype=np.float64)
    for row, composition in enumerate(compositions):
        for symbol, amount in composition.items():
            amount = float(amount)
            if not np.isfinite(amount) or amount < 0:
                raise ValueError(f"composition of material {row}: amount of {symbol} is {amount}, not a finite >= 0")
            matrix[row, element_index(symbol)] += amount
    totals = matrix.sum(axis=1, keepdims=True)
    np.divide(matrix, totals, out=matrix, where=totals > 0)
    return matrix.astype(np.float32)
