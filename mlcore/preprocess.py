"""Energy windows, normalisation, resampling and per-element standardization of spectra.

Two preprocessing versions exist; every fitted preprocessor records its own, and one saved
before versions existed is version 1, so stored models keep giving the answers they gave.

Version 2 (the default): one energy scale and one intensity convention for every source
    Each spectrum is normalised first (:mod:`mlcore.spectrum`: E0 at the largest smoothed
    slope, pre-edge subtracted, edge step 1) and placed on energies relative to its E0.
    FEFF at either preset, the Materials Project and measured spectra then differ only by
    physics, not by where a code or a monochromator puts the edge. Energy window per
    element, fitted on training spectra: start = median of (first energy - E0), end =
    median of (last energy - E0); elements absent from training get the mean window of the
    fitted ones. The normalisation rule is recorded (``to_dict()["normalisation"]``).
Version 1: absolute energies, raw intensities
    start = median over that element's training spectra of the lowest energy, end = median
    of the highest; elements absent from training get a window placed relative to their
    tabulated K edge, with the offset and width interpolated in atomic number.
Resampling
    ``numpy.interp`` onto ``n_points`` (200) evenly spaced energies of the window.
    Beyond the measured range ``numpy.interp`` repeats the end values; a spectrum must
    cover at least ``min_window_coverage`` (25 %) of a fitted window or it is rejected.
    The bar is low on purpose: a measured XANES table often stops 25 eV above the edge,
    and (version 1) FEFF places one element's edge differently from compound to compound.
    It still catches wrong elements, edges or units.
Standardization (the paper's Methods)
    Per element: subtract the mean over training spectra of each spectrum's mean
    intensity and divide by the mean over training spectra of each spectrum's standard
    deviation.
Augmentation (``shift_augment``)
    Energies are shifted by a few eV before resampling; in version 2 the shift is applied
    after alignment (relative energies), so it still teaches tolerance to E0 errors.
Energy scale (``edge_offsets_ev``, ``off_scale``)
    Fitting keeps, per element, the 5th, 50th and 95th percentiles of the training
    spectra's absolute edges (version 2: E0; version 1: steepest rise). Version 1 models
    read absolute energies, so an edge far outside that range is another energy scale
    (FEFF without SCF sits ~10 eV below the Materials Project) and is reported. Version 2
    models read aligned spectra: the absolute offset is shown for information only.
Batch path
    ``SpectrumPreprocessor.transform_arrays`` does what ``transform`` does for spectra
    already held in (M, L) arrays (screening hundreds of thousands of stored spectra):
    all spectra of one element are validated, normalised and resampled at once, with the
    same arithmetic as the one-spectrum path, so the results are the same to the last bit.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mlcore import envelope
from mlcore.data import MaterialSpectra, RawSpectrum, composition_matrix
from mlcore.elements import ELEMENTS, K_EDGE_ENERGY_EV, N_ELEMENTS, check_absorbing_element
from mlcore.resample import BATCH_ROWS, batch_transform
from mlcore.spectrum import (
    MIN_POINTS,
    NORMALISATION,
    edge_energy_ev,
    find_e0,
    k_edge_region_ev,
    normalisation_problem,
    normalise,
    validate_spectrum,
)

__all__ = [
    "BATCH_ROWS",
    "MIN_POINTS",
    "PREPROCESSING_VERSION",
    "SpectrumPreprocessor",
    "edge_energy_ev",
    "find_e0",
    "k_edge_region_ev",
    "validate_spectrum",
]

#: Version of new preprocessors; see the module docstring.
PREPROCESSING_VERSION = 2
VERSIONS = (1, 2)


class SpectrumPreprocessor:
    """Fit per-element energy windows and standardization on training spectra.

    Parameters
    ----------
    n_points : int, default 200
        Points per resampled spectrum.
    min_window_coverage : float, default 0.25
        Minimum fraction of a fitted window a spectrum's energy range must cover.
    version : {1, 2}, default 2
        Preprocessing version (module docstring): 2 normalises every spectrum and aligns
        it on its E0; 1 reads absolute energies and raw intensities.

    Attributes
    ----------
    windows_ev_ : dict[str, tuple[float, float]]
        Fitted (start, end) energy window per element seen in training (version 2:
        relative to each spectrum's E0).
    edges_ev_ : dict[str, tuple[float, float, float]]
        5th, 50th and 95th percentiles of the training spectra's absolute edges.
    center_ : dict[str, float]
        Per-element centering constant.
    scale_ : dict[str, float]
        Per-element scaling constant.
    n_spectra_ : dict[str, int]
        Training spectra per element.
    """

    def __init__(
        self, n_points: int = 200, min_window_coverage: float = 0.25, version: int = PREPROCESSING_VERSION
    ) -> None:
        if version not in VERSIONS:
            raise ValueError(f"unknown preprocessing version {version!r}; expected one of {VERSIONS}")
        self.n_points = n_points
        self.min_window_coverage = min_window_coverage
        self.version = version

    @property
    def aligned(self) -> bool:
        """True when spectra are normalised and placed on energies relative to their E0."""
        return self.version >= 2

    # ------------------------------------------------------------------ fitting
    def fit(self, raw_spectra_per_material: Sequence[Sequence[RawSpectrum]]) -> SpectrumPreprocessor:
        """Fit windows and standardization constants on training materials' spectra."""
        if self.n_points < 2:
            raise ValueError("n_points must be at least 2")
        by_element: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        edges_by_element: dict[str, list[float]] = defaultdict(list)
        for row, spectra in enumerate(raw_spectra_per_material):
            for spectrum in spectra:
                x, y, edge = self._model_coordinates(row, spectrum)
                by_element[spectrum.element].append((x, y))
                edges_by_element[spectrum.element].append(edge)
        if not by_element:
            raise ValueError("no training spectra to fit the preprocessor on")
        self.windows_ev_ = {}
        self.center_ = {}
        self.scale_ = {}
        self.n_spectra_ = {}
        self.edges_ev_ = {}
        self.envelope_ = {}
        for element in sorted(by_element, key=ELEMENTS.index):
            pairs = by_element[element]
            edges = edges_by_element[element]
            self.edges_ev_[element] = tuple(float(v) for v in np.percentile(edges, [5, 50, 95]))
            start_ev = float(np.median([energies[0] for energies, _ in pairs]))
            end_ev = float(np.median([energies[-1] for energies, _ in pairs]))
            self.windows_ev_[element] = (start_ev, end_ev)
            resampled = np.stack([np.interp(self._grid(element), e, m) for e, m in pairs])
            self.center_[element] = float(resampled.mean(axis=1).mean())
            scale = float(resampled.std(axis=1).mean())
            # A single flat training spectrum has zero spread; do not divide by zero.
            self.scale_[element] = scale if scale > 1e-12 else 1.0
            self.n_spectra_[element] = len(pairs)
            grid = self._grid(element)
            masks = np.stack([envelope.covered(grid, e) for e, _ in pairs])
            standardised = (resampled - self.center_[element]) / self.scale_[element]
            self.envelope_[element] = envelope.fit_element(standardised, masks)
        return self

    def off_distribution(self, spectra: Sequence[RawSpectrum]) -> dict[str, str]:
        """Spectra that, as the model sees them, lie outside the training spectra of their
        element (:mod:`mlcore.envelope`), with the reason; elements without an envelope
        (unseen, or a preprocessor saved before envelopes) are left out."""
        self._check_fitted()
        found = {}
        for spectrum in spectra:
            entry = getattr(self, "envelope_", {}).get(spectrum.element)
            if entry is None:
                continue
            x, y, _ = self._model_coordinates(0, spectrum)
            values = self._resample(0, spectrum.element, x, y)
            d = envelope.distance(
                values, envelope.covered(self._grid(spectrum.element), x), entry["mean"], entry["std"]
            )
            if d > entry["limit"]:
                found[spectrum.element] = (
                    f"{spectrum.element} spectrum, {'aligned and normalised' if self.aligned else 'as given'}, lies "
                    f"outside the training spectra: distance {d:.1f} from their mean, where 99 % of them are "
                    f"within {entry['limit']:.1f}"
                )
        return found

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
                x, y, _ = self._model_coordinates(row, spectrum)
                resampled.append(self._resample(row, spectrum.element, x + shift_ev, y))
                material_rows.append(row)
                element_rows.append(ELEMENTS.index(spectrum.element))
        composition = self._composition(compositions, n_materials)
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

    def transform_arrays(
        self,
        material_index: Sequence[int] | np.ndarray,
        element_index: Sequence[int] | np.ndarray,
        energies_ev: np.ndarray | Sequence[np.ndarray],
        mu: np.ndarray | Sequence[np.ndarray],
        space_groups: Sequence[int] | np.ndarray,
        compositions: Sequence[Mapping[str, float]] | np.ndarray | None = None,
        shift_ev: float = 0.0,
    ) -> MaterialSpectra:
        """:meth:`transform` for spectra held in arrays: one vectorized pass per element.

        The result equals ``transform`` on the same spectra (each spectrum is resampled
        with ``numpy.interp``'s arithmetic, in float64), and bad input raises the same
        ``ValueError``: of all bad spectra, the one of the lowest material row (then
        element symbol) is reported, with ``transform``'s message.

        Parameters
        ----------
        material_index : (M,) int
            Material row (0..N-1) of each spectrum.
        element_index : (M,) int
            Absorbing element of each spectrum, as an index into
            :data:`mlcore.elements.ELEMENTS`.
        energies_ev, mu : (M, L) arrays, or sequences of (M_i, L_i) blocks
            Energies (eV) and absorption, any float dtype (float32 as stored is fine).
            Spectra of different lengths go in separate blocks; the blocks' rows, in
            order, are the M spectra of ``material_index`` / ``element_index``.
        space_groups, compositions, shift_ev
            As in :meth:`transform`.
        """
        return batch_transform(
            self, material_index, element_index, energies_ev, mu, space_groups, compositions, shift_ev
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

    # ---------------------------------------------------------- energy scale
    def edge_offsets_ev(self, spectra: Sequence[RawSpectrum]) -> dict[str, float]:
        """Each spectrum's edge minus the median edge of that element's training spectra (eV).

        Elements without training spectra (or a preprocessor saved before edges were
        recorded) are left out.
        """
        self._check_fitted()
        edges = getattr(self, "edges_ev_", {})
        return {
            spectrum.element: self.edge_ev(spectrum) - edges[spectrum.element][1]
            for spectrum in spectra
            if spectrum.element in edges
        }

    def edge_ev(self, spectrum: RawSpectrum) -> float:
        """The spectrum's absolute edge by this version's rule (2: E0; 1: steepest rise)."""
        energies_ev, mu = validate_spectrum(spectrum.element, spectrum.energies_ev, spectrum.mu)
        return find_e0(energies_ev, mu) if self.aligned else edge_energy_ev(energies_ev, mu)

    def off_scale(self, spectra: Sequence[RawSpectrum], tolerance_ev: float = 5.0) -> dict[str, str]:
        """Spectra whose edge is off the training energy scale, with the reason.

        Off scale: the edge lies outside the 5th–95th percentile range of the training
        edges and more than ``tolerance_ev`` from their median. Chemical shifts between
        compounds mostly stay inside the training range (1.8 % of the bundled FEFF spectra
        are flagged against all of them); a different code, preset or calibration usually
        does not (MP's LiCoO2 Co edge: +13 eV; a measured anatase Ti edge: +8.7 eV).

        Version 2 aligns every spectrum on its own E0 before the model sees it, so an
        absolute offset is no reason for caution there: nothing is reported.
        """
        found = {}
        if self.aligned:
            return found
        for element, offset in self.edge_offsets_ev(spectra).items():
            low, median, high = self.edges_ev_[element]
            edge = median + offset
            if abs(offset) > tolerance_ev and not low <= edge <= high:
                found[element] = (
                    f"{element} edge at {edge:.1f} eV is {offset:+.1f} eV from the training spectra's median "
                    f"({median:.1f} eV; 90 % of them between {low:.1f} and {high:.1f} eV): another energy scale "
                    "(code, preset or calibration) than the model was trained on, or an unusual chemical shift; "
                    "treat the prediction with caution"
                )
        return found

    # --------------------------------------------------------------- windows
    def window_ev(self, element: str) -> tuple[float, float]:
        """Energy window of ``element``: fitted, or estimated from the tabulated K edge."""
        self._check_fitted()
        check_absorbing_element(element)
        if element in self.windows_ev_:
            return self.windows_ev_[element]
        if self.aligned:  # relative to E0: the fitted elements' mean window
            windows = np.asarray(list(self.windows_ev_.values()))
            return float(windows[:, 0].mean()), float(windows[:, 1].mean())
        fitted = list(self.windows_ev_)
        atomic_numbers = [ELEMENTS.index(e) + 1 for e in fitted]
        start_offsets = [self.windows_ev_[e][0] - K_EDGE_ENERGY_EV[e] for e in fitted]
        widths = [self.windows_ev_[e][1] - self.windows_ev_[e][0] for e in fitted]
        z = ELEMENTS.index(element) + 1
        start_ev = K_EDGE_ENERGY_EV[element] + float(np.interp(z, atomic_numbers, start_offsets))
        return start_ev, start_ev + float(np.interp(z, atomic_numbers, widths))

    def energy_grid_ev(self, element: str) -> np.ndarray:
        """The ``n_points`` energies (eV) a spectrum of ``element`` is resampled onto
        (version 2: relative to the spectrum's E0)."""
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
                raise ValueError(f"material {row}: {self._coverage_message(element, energies_ev, coverage)}")
        center, scale = self._standardization(element)
        values = np.interp(grid_ev, energies_ev, mu)
        return ((values - center) / scale).astype(np.float32)

    def coverage_problem(self, element: str, energies_ev: Sequence[float], mu: Sequence[float]) -> str | None:
        """Why this spectrum cannot go through the model's window (too little of it is
        covered), or None. The one home of that rule for callers that check input early.
        Raises ``ValueError`` (as ``transform`` does) for a spectrum that is invalid or, in
        version 2, cannot be normalised."""
        self._check_fitted()
        energies_ev, mu = validate_spectrum(element, energies_ev, mu)
        x, _, _ = self._model_coordinates(0, RawSpectrum(element, energies_ev, mu))  # may not normalise
        if element not in self.windows_ev_:
            return None
        start_ev, end_ev = self.window_ev(element)
        overlap_ev = min(end_ev, x[-1]) - max(start_ev, x[0])
        coverage = max(overlap_ev, 0.0) / (end_ev - start_ev) if end_ev > start_ev else 1.0
        if coverage < self.min_window_coverage:
            return self._coverage_message(element, x, coverage)
        return None

    def _coverage_message(self, element: str, x: np.ndarray, coverage: float) -> str:
        start_ev, end_ev = self.window_ev(element)
        if self.aligned:
            return (
                f"{element} energies E0{x[0]:+.1f} to E0{x[-1]:+.1f} eV cover {coverage:.0%} of the model's "
                f"{element} window E0{start_ev:+.1f} to E0{end_ev:+.1f} eV (at least "
                f"{self.min_window_coverage:.0%} needed)"
            )
        return (
            f"{element} energies {x[0]:.1f}-{x[-1]:.1f} eV cover {coverage:.0%} of the element's window "
            f"{start_ev:.1f}-{end_ev:.1f} eV (at least {self.min_window_coverage:.0%} needed)"
        )

    def _model_coordinates(self, row: int, spectrum: RawSpectrum) -> tuple[np.ndarray, np.ndarray, float]:
        """(energies, intensities, absolute edge) of a spectrum as the windows read it:
        version 2 normalised and relative to E0, version 1 as given."""
        energies_ev, mu = self._validated(row, spectrum)
        if not self.aligned:
            return energies_ev, mu, edge_energy_ev(energies_ev, mu)
        result = normalise(energies_ev, mu)
        problem = normalisation_problem(spectrum.element, energies_ev, result)
        if problem:
            raise ValueError(f"material {row}: {problem}")
        return energies_ev - result.e0_ev, result.norm, result.e0_ev

    @staticmethod
    def _composition(compositions, n_materials: int) -> np.ndarray:
        if compositions is None:
            return np.zeros((n_materials, N_ELEMENTS), dtype=np.float32)
        if isinstance(compositions, np.ndarray):
            return compositions
        return composition_matrix(compositions)

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
            "version": self.version,
            **({"normalisation": NORMALISATION} if self.aligned else {}),
            "n_points": self.n_points,
            "min_window_coverage": self.min_window_coverage,
            "elements": {
                element: {
                    "window_ev": list(self.windows_ev_[element]),
                    "center": self.center_[element],
                    "scale": self.scale_[element],
                    "n_spectra": self.n_spectra_[element],
                    **({"edge_ev": list(self.edges_ev_[element])} if element in getattr(self, "edges_ev_", {}) else {}),
                }
                for element in self.windows_ev_
            },
            "envelope": envelope.to_state(getattr(self, "envelope_", {})),
        }

    @classmethod
    def from_dict(cls, state: Mapping) -> SpectrumPreprocessor:
        """Inverse of :meth:`to_dict`."""
        # A state saved before versions existed is version 1.
        preprocessor = cls(
            n_points=int(state["n_points"]),
            min_window_coverage=float(state["min_window_coverage"]),
            version=int(state.get("version", 1)),
        )
        elements = state["elements"]
        preprocessor.windows_ev_ = {e: tuple(float(v) for v in elements[e]["window_ev"]) for e in elements}
        preprocessor.center_ = {e: float(elements[e]["center"]) for e in elements}
        preprocessor.scale_ = {e: float(elements[e]["scale"]) for e in elements}
        preprocessor.n_spectra_ = {e: int(elements[e]["n_spectra"]) for e in elements}
        # Artifacts written before edges were recorded have none: no scale check for them.
        preprocessor.edges_ev_ = {
            e: tuple(float(v) for v in elements[e]["edge_ev"]) for e in elements if "edge_ev" in elements[e]
        }
        preprocessor.envelope_ = envelope.from_state(state.get("envelope", {}))
        return preprocessor

    def save(self, path: str | Path) -> None:
        """Write the fitted state as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> SpectrumPreprocessor:
        """Read a preprocessor written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))
