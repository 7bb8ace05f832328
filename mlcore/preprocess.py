"""Validation, energy windows, interpolation and per-element standardization of spectra.

Energy window (one per absorbing element, fitted on training spectra only)
    start = median over that element's training spectra of the lowest energy,
    end   = median of the highest energy.
    Materials Project / FEFF K-edge XANES share one convention (about 100 points over
    roughly 55 eV from just below the edge), so the median range is the range almost
    every spectrum covers and needs no extrapolation. Elements absent from training get
    a window placed relative to their tabulated K edge, with the offset and width
    interpolated in atomic number between fitted elements (FEFF's absolute edge
    positions drift smoothly with Z, by up to a few hundred eV for actinides).
Resampling
    ``numpy.interp`` onto ``n_points`` (200) evenly spaced energies of the window.
    Beyond the measured range ``numpy.interp`` repeats the end values; a spectrum must
    cover at least ``min_window_coverage`` (25 %) of a fitted window or it is rejected.
    The bar is low on purpose: FEFF places one element's edge differently from compound
    to compound (one bundled Hg spectrum sits 37 eV above the Hg median, covering 33 %
    of the window; the next worst covers 85 %), and measured spectra are offset from
    FEFF's absolute scale by ~15 eV. It still catches wrong elements, edges or units.
Standardization (the paper's Methods)
    Per element: subtract the mean over training spectra of each spectrum's mean
    intensity and divide by the mean over training spectra of each spectrum's standard
    deviation.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mlcore.data import MaterialSpectra, RawSpectrum, composition_matrix
from mlcore.elements import ELEMENTS, K_EDGE_ENERGY_EV, N_ELEMENTS, check_absorbing_element

MIN_POINTS = 10

# A spectrum must touch the region where the element's K edge can plausibly be:
# tabulated edge +-1 % plus an absolute margin. FEFF places K edges from about 20 eV
# below (F) to 480 eV above (Pu) the tabulated value, i.e. within 0.4 % for heavy atoms.
_K_REGION_RELATIVE = 0.01
_K_REGION_BELOW_EV = 50.0
_K_REGION_ABOVE_EV = 100.0


def k_edge_region_ev(element: str) -> tuple[float, float]:
    """Energy range (eV) in which a K-edge spectrum of ``element`` must have points."""
    edge_ev = K_EDGE_ENERGY_EV[element]
    return (
        edge_ev * (1 - _K_REGION_RELATIVE) - _K_REGION_BELOW_EV,
        edge_ev * (1 + _K_REGION_RELATIVE) + _K_REGION_ABOVE_EV,
    )


def validate_spectrum(element: str, energies_ev: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check one raw spectrum and return it as float64 arrays.

    Parameters
    ----------
    element : str
        Absorbing element symbol (Li ... Pu).
    energies_ev : array_like
        Energies in eV, strictly increasing.
    mu : array_like
        Absorption values, same length as ``energies_ev``.

    Returns
    -------
    energies_ev, mu : numpy.ndarray
        1-D float64 copies.

    Raises
    ------
    ValueError
        Naming the problem: unknown element, shape mismatch, fewer than 10 points,
        NaN/inf values, unsorted or duplicate energies, energies outside the element's
        K-edge region.
    """
    check_absorbing_element(element)
    energies_ev = np.asarray(energies_ev, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    if energies_ev.ndim != 1 or mu.ndim != 1:
        raise ValueError(f"{element} spectrum: energies_ev and mu must be 1-D arrays")
    if energies_ev.shape != mu.shape:
        raise ValueError(f"{element} spectrum: {energies_ev.size} energies but {mu.size} mu values")
    if energies_ev.size < MIN_POINTS:
        raise ValueError(f"{element} spectrum has {energies_ev.size} points, fewer than {MIN_POINTS}")
    if not np.all(np.isfinite(energies_ev)):
        raise ValueError(f"{element} spectrum: energies_ev contains NaN or infinite values")
    if not np.all(np.isfinite(mu)):
        raise ValueError(f"{element} spectrum: mu contains NaN or infinite values")
    steps = np.diff(energies_ev)
    if np.any(steps == 0):
        raise ValueError(f"{element} spectrum has duplicate energies (e.g. {energies_ev[1:][steps == 0][0]} eV)")
    if np.any(steps < 0):
        raise ValueError(f"{element} spectrum: energies are not sorted in increasing order")
    low_ev, high_ev = k_edge_region_ev(element)
    if energies_ev[-1] < low_ev or energies_ev[0] > high_ev:
        raise ValueError(
            f"{element} spectrum: energies {energies_ev[0]:.1f}-{energies_ev[-1]:.1f} eV are outside the element's "
            f"K-edge region {low_ev:.1f}-{high_ev:.1f} eV"
        )
    return energies_ev, mu


class SpectrumPreprocessor:
    """Fit per-element energy windows and standardization on training spectra.

    Parameters
    ----------
    n_points : int, default 200
        Points per resampled spectrum.
    min_window_coverage : float, default 0.25
        Minimum fraction of a fitted window a spectrum's energy range must cover.

    Attributes
    ----------
    windows_ev_ : dict[str, tuple[float, float]]
        Fitted (start, end) energy window per element seen in training.
    center_ : dict[str, float]
        Per-element centering constant.
    scale_ : dict[str, float]
        Per-element scaling constant.
    n_spectra_ : dict[str, int]
        Training spectra per element.
    """

    def __init__(self, n_points: int = 200, min_window_coverage: float = 0.25) -> None:
        self.n_points = n_points
        self.min_window_coverage = min_window_coverage

    # ------------------------------------------------------------------ fitting
    def fit(self, raw_spectra_per_material: Sequence[Sequence[RawSpectrum]]) -> SpectrumPreprocessor:
        """Fit windows and standardization constants on training materials' spectra."""
        if self.n_points < 2:
            raise ValueError("n_points must be at least 2")
        by_element: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        for row, spectra in enumerate(raw_spectra_per_material):
            for spectrum in spectra:
                by_element[spectrum.element].append(self._validated(row, spectrum))
        if not by_element:
            raise ValueError("no training spectra to fit the preprocessor on")
        self.windows_ev_ = {}
        self.center_ = {}
        self.scale_ = {}
        self.n_spectra_ = {}
        for element in sorted(by_element, key=ELEMENTS.index):
            pairs = by_element[element]
            start_ev = float(np.median([energies[0] for energies, _ in pairs]))
            end_ev = float(np.median([energies[-1] for energies, _ in pairs]))
            self.windows_ev_[element] = (start_ev, end_ev)
            resampled = np.stack([np.interp(self._grid(element), e, m) for e, m in pairs])
            self.center_[element] = float(resampled.mean(axis=1).mean())
            scale = float(resampled.std(axis=1).mean())
            # A single flat training spectrum has zero spread; do not divide by zero.
            self.scale_[element] = scale if scale > 1e-12 else 1.0
            self.n_spectra_[element] = len(pairs)
        return self

    # ------------------------------------------------------------- transforming
    def transform(
        self,
        raw_spectra_per_material: Sequence[Sequence[RawSpectrum]],
        space_groups: Sequence[int] | np.ndarray,
        compositions: Sequence[Mapping[str, float]] | np.ndarray | None = None,
        shift_ev: float = 0.0,
    ) -> MaterialSpectra:
        """Resample and standardize every material's spectra into a :class:`MaterialSpectra`.

        Parameters
        ----------
        raw_spectra_per_material : sequence of sequences of RawSpectrum
            Spectra of each material (may be empty for a material).
        space_groups : sequence of int
            Space group number (1..230) per material.
        compositions : sequence of {symbol: amount} or (N, len(ELEMENTS)) array, optional
            Formula amounts per material; zeros when omitted.
        shift_ev : float, default 0
            Energy shift added to every spectrum before resampling (augmentation).
        """
        self._check_fitted()
        n_materials = len(raw_spectra_per_material)
        material_rows: list[int] = []
        element_rows: list[int] = []
        resampled: list[np.ndarray] = []
        for row, spectra in enumerate(raw_spectra_per_material):
            for spectrum in spectra:
                energies_ev, mu = self._validated(row, spectrum)
                resampled.append(self._resample(row, spectrum.element, energies_ev + shift_ev, mu))
                material_rows.append(row)
                element_rows.append(ELEMENTS.index(spectrum.element))
        if compositions is None:
            composition = np.zeros((n_materials, N_ELEMENTS), dtype=np.float32)
        elif isinstance(compositions, np.ndarray):
            composition = compositions
        else:
            composition = composition_matrix(compositions)
        space_group = np.asarray(space_groups)
        if space_group.shape[0] != n_materials or composition.shape[0] != n_materials:
            raise ValueError("space_groups and compositions need one entry per material")
        return MaterialSpectra(
            material_index=np.asarray(material_rows, dtype=np.int64),
            element_index=np.asarray(element_rows, dtype=np.int64),
            spectra=np.stack(resampled) if resampled else np.zeros((0, self.n_points), dtype=np.float32),
            space_group=space_group,
            composition=composition,
        )

    def fit_transform(
        self,
        raw_spectra_per_material: Sequence[Sequence[RawSpectrum]],
        space_groups: Sequence[int] | np.ndarray,
        compositions: Sequence[Mapping[str, float]] | np.ndarray | None = None,
    ) -> MaterialSpectra:
        """``fit`` then ``transform`` the same (training) materials."""
        return self.fit(raw_spectra_per_material).transform(raw_spectra_per_material, space_groups, compositions)

    def shift_augment(
        self,
        raw_spectra_per_material: Sequence[Sequence[RawSpectrum]],
        space_groups: Sequence[int] | np.ndarray,
        compositions: Sequence[Mapping[str, float]] | np.ndarray | None = None,
        shifts_ev: Sequence[float] = (-1.0, 0.0, 1.0),
    ) -> tuple[MaterialSpectra, np.ndarray]:
        """Training-set augmentation: every material once per energy shift (paper: about +-1 eV, x3).

        Returns
        -------
        augmented : MaterialSpectra
            ``len(shifts_ev) * N`` materials, shift-major.
        source_rows : numpy.ndarray
            (len(shifts_ev) * N,) row of the original material, to repeat labels and weights.
        """
        if compositions is not None and not isinstance(compositions, np.ndarray):
            compositions = composition_matrix(compositions)  # once, not once per shift
        parts = [self.transform(raw_spectra_per_material, space_groups, compositions, shift) for shift in shifts_ev]
        source_rows = np.tile(np.arange(len(raw_spectra_per_material)), len(shifts_ev))
        return MaterialSpectra.concatenate(parts), source_rows

    # --------------------------------------------------------------- windows
    def window_ev(self, element: str) -> tuple[float, float]:
        """Energy window of ``element``: fitted, or estimated from the tabulated K edge."""
        self._check_fitted()
        check_absorbing_element(element)
        if element in self.windows_ev_:
            return self.windows_ev_[element]
        fitted = list(self.windows_ev_)
        atomic_numbers = [ELEMENTS.index(e) + 1 for e in fitted]
        start_offsets = [self.windows_ev_[e][0] - K_EDGE_ENERGY_EV[e] for e in fitted]
        widths = [self.windows_ev_[e][1] - self.windows_ev_[e][0] for e in fitted]
        z = ELEMENTS.index(element) + 1
        start_ev = K_EDGE_ENERGY_EV[element] + float(np.interp(z, atomic_numbers, start_offsets))
        return start_ev, start_ev + float(np.interp(z, atomic_numbers, widths))

    def energy_grid_ev(self, element: str) -> np.ndarray:
        """The ``n_points`` energies (eV) a spectrum of ``element`` is resampled onto."""
        return self._grid(element)

    def _grid(self, element: str) -> np.ndarray:
        return np.linspace(*self.window_ev(element), self.n_points)

    def _standardization(self, element: str) -> tuple[float, float]:
        if element in self.center_:
            return self.center_[element], self.scale_[element]
        # Unseen element: pooled constants keep its values on the same scale as the rest.
        return float(np.mean(list(self.center_.values()))), float(np.mean(list(self.scale_.values())))

    def _resample(self, row: int, element: str, energies_ev: np.ndarray, mu: np.ndarray) -> np.ndarray:
        grid_ev = self._grid(element)
        start_ev, end_ev = grid_ev[0], grid_ev[-1]
        if element in self.windows_ev_:
            overlap_ev = min(end_ev, energies_ev[-1]) - max(start_ev, energies_ev[0])
            coverage = max(overlap_ev, 0.0) / (end_ev - start_ev) if end_ev > start_ev else 1.0
            if coverage < self.min_window_coverage:
                raise ValueError(
                    f"material {row}: {element} energies {energies_ev[0]:.1f}-{energies_ev[-1]:.1f} eV cover "
                    f"{coverage:.0%} of the element's window {start_ev:.1f}-{end_ev:.1f} eV "
                    f"(at least {self.min_window_coverage:.0%} needed)"
                )
        center, scale = self._standardization(element)
        values = np.interp(grid_ev, energies_ev, mu)
        return ((values - center) / scale).astype(np.float32)

    def _validated(self, row: int, spectrum: RawSpectrum) -> tuple[np.ndarray, np.ndarray]:
        try:
            return validate_spectrum(spectrum.element, spectrum.energies_ev, spectrum.mu)
        except ValueError as error:
            raise ValueError(f"material {row}: {error}") from None

    def _check_fitted(self) -> None:
        if not hasattr(self, "windows_ev_"):
            raise ValueError("SpectrumPreprocessor is not fitted; call fit() first")

    # ----------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """JSON-serializable fitted state (parameters and per-element constants)."""
        self._check_fitted()
        return {
            "n_points": self.n_points,
            "min_window_coverage": self.min_window_coverage,
            "elements": {
                element: {
                    "window_ev": list(self.windows_ev_[element]),
                    "center": self.center_[element],
                    "scale": self.scale_[element],
                    "n_spectra": self.n_spectra_[element],
                }
                for element in self.windows_ev_
            },
        }

    @classmethod
    def from_dict(cls, state: Mapping) -> SpectrumPreprocessor:
        """Inverse of :meth:`to_dict`."""
        preprocessor = cls(n_points=int(state["n_points"]), min_window_coverage=float(state["min_window_coverage"]))
        elements = state["elements"]
        preprocessor.windows_ev_ = {e: tuple(float(v) for v in elements[e]["window_ev"]) for e in elements}
        preprocessor.center_ = {e: float(elements[e]["center"]) for e in elements}
        preprocessor.scale_ = {e: float(elements[e]["scale"]) for e in elements}
        preprocessor.n_spectra_ = {e: int(elements[e]["n_spectra"]) for e in elements}
        return preprocessor

    def save(self, path: str | Path) -> None:
        """Write the fitted state as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> SpectrumPreprocessor:
        """Read a preprocessor written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))
