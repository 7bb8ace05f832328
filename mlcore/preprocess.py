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
Batch path
    ``SpectrumPreprocessor.transform_arrays`` does what ``transform`` does for spectra
    already held in (M, L) arrays (screening hundreds of thousands of stored spectra):
    all spectra of one element are validated and resampled at once, with the same
    arithmetic as ``numpy.interp``, so the results are the same to the last bit.
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

# Spectra per step of the batch path: (rows x n_points) float64 temporaries of a few
# tens of MB, large enough that NumPy's per-call overhead does not matter.
BATCH_ROWS = 8192

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
        self._check_fitted()
        material_index = np.asarray(material_index, dtype=np.int64).reshape(-1)
        element_index = np.asarray(element_index, dtype=np.int64).reshape(-1)
        energy_blocks, mu_blocks = _blocks(energies_ev), _blocks(mu)
        n_spectra = material_index.shape[0]
        if element_index.shape[0] != n_spectra:
            raise ValueError("material_index and element_index must have the same length")
        if len(energy_blocks) != len(mu_blocks) or sum(block.shape[0] for block in energy_blocks) != n_spectra:
            raise ValueError("energies_ev and mu need one row per spectrum, in blocks of the same sizes")
        n_materials = len(space_groups)
        if n_spectra and (material_index.min() < 0 or material_index.max() >= n_materials):
            raise ValueError("material_index refers to a material outside 0..len(space_groups)-1")
        out = np.empty((n_spectra, self.n_points), dtype=np.float32)
        failures: list[tuple[int, str, np.ndarray, np.ndarray]] = []
        offset = 0
        for energies_block, mu_block in zip(energy_blocks, mu_blocks, strict=True):
            size = energies_block.shape[0]
            block_rows = slice(offset, offset + size)
            if mu_block.shape[0] != size:
                raise ValueError("energies_ev and mu need one row per spectrum, in blocks of the same sizes")
            elements = element_index[block_rows]
            for code in np.unique(elements).tolist():
                local = np.flatnonzero(elements == code)
                materials = material_index[block_rows][local]
                if not 0 <= code < N_ELEMENTS:
                    raise ValueError(f"material {materials[0]}: element index {code} is outside the vocabulary")
                bad = self._resample_block(ELEMENTS[code], energies_block, mu_block, local, shift_ev, out, offset)
                if bad.size:
                    first = int(np.argmin(materials[bad]))
                    row = local[bad[first]]
                    failures.append((int(materials[bad][first]), ELEMENTS[code], energies_block[row], mu_block[row]))
            offset += size
        if failures:
            row, element, energies, values = min(failures, key=lambda failure: failure[:2])
            # Replay the one spectrum through the per-spectrum path for its exact message.
            energies, values = self._validated(row, RawSpectrum(element, energies, values))
            self._resample(row, element, energies + shift_ev, values)
            raise ValueError(f"material {row}: {element} spectrum was rejected")  # not reached
        return MaterialSpectra(
            material_index=material_index,
            element_index=element_index,
            spectra=out,
            space_group=np.asarray(space_groups),
            composition=self._composition(compositions, n_materials),
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

    def _resample_block(
        self,
        element: str,
        energies_ev: np.ndarray,
        mu: np.ndarray,
        rows: np.ndarray,
        shift_ev: float,
        out: np.ndarray,
        offset: int,
    ) -> np.ndarray:
        """Validate and resample ``rows`` of one block, all spectra of ``element``, into
        ``out[offset + rows]``; returns the positions in ``rows`` of spectra that
        ``transform`` would reject (their output rows are left unspecified)."""
        n_points = energies_ev.shape[1] if energies_ev.ndim == 2 else 0
        if energies_ev.ndim != 2 or mu.shape != energies_ev.shape or n_points < MIN_POINTS:
            return np.arange(rows.size)
        try:
            check_absorbing_element(element)
        except ValueError:
            return np.arange(rows.size)
        grid_ev = self._grid(element)
        start_ev, end_ev = grid_ev[0], grid_ev[-1]
        low_ev, high_ev = k_edge_region_ev(element)
        center, scale = self._standardization(element)
        check_coverage = element in self.windows_ev_
        bad_parts = []
        for start in range(0, rows.size, BATCH_ROWS):
            chunk = rows[start : start + BATCH_ROWS]
            x = energies_ev[chunk].astype(np.float64)
            y = mu[chunk].astype(np.float64)
            # validate_spectrum's checks, row-wise
            steps = np.diff(x, axis=1)
            bad = ~np.isfinite(x).all(axis=1) | ~np.isfinite(y).all(axis=1) | ~(steps > 0).all(axis=1)
            bad |= (x[:, -1] < low_ev) | (x[:, 0] > high_ev)
            if shift_ev:
                x += shift_ev
                steps = np.diff(x, axis=1)
            if check_coverage:
                overlap_ev = np.minimum(end_ev, x[:, -1]) - np.maximum(start_ev, x[:, 0])
                if end_ev > start_ev:
                    bad |= np.maximum(overlap_ev, 0.0) / (end_ev - start_ev) < self.min_window_coverage
            if bad.any():
                bad_parts.append(start + np.flatnonzero(bad))
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                values = _interp_rows(grid_ev, x, y, steps)
            # numpy.interp's answers where the slope formula breaks down (an infinite
            # slope between two almost equal energies); bad rows are reported instead.
            broken = ~np.isfinite(values).all(axis=1) & ~bad
            for row in np.flatnonzero(broken).tolist():
                values[row] = np.interp(grid_ev, x[row], y[row])
            values -= center
            values /= scale
            out[offset + chunk] = values
        return np.concatenate(bad_parts) if bad_parts else np.zeros(0, dtype=np.int64)

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


def _blocks(values) -> list[np.ndarray]:
    if isinstance(values, np.ndarray):
        return [values if values.ndim == 2 else values.reshape(-1, values.shape[-1] if values.ndim else 0)]
    return [np.asarray(block) for block in values]


def _interp_rows(grid: np.ndarray, x: np.ndarray, y: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """``numpy.interp(grid, x[i], y[i])`` for every row i at once (float64, same arithmetic).

    ``x`` rows must be increasing. Instead of one binary search per (row, grid point),
    every energy is located on the (shared, sorted) grid; counting energies per grid
    cell and accumulating gives, for each grid point g, the number of a row's energies
    <= grid[g], which is the interval ``numpy.interp`` evaluates.
    """
    m, n = x.shape
    n_grid = grid.shape[0]
    # cells[i, j]: grid points strictly below x[i, j]; x[i, j] <= grid[g] <=> cells[i, j] <= g
    cells = np.searchsorted(grid, x.ravel(), side="left").reshape(m, n)
    cells += (np.arange(m, dtype=np.intp) * (n_grid + 1))[:, None]
    counts = np.bincount(cells.ravel(), minlength=m * (n_grid + 1)).reshape(m, n_grid + 1)
    at_or_below = np.cumsum(counts[:, :n_grid], axis=1)  # (m, n_grid): energies <= grid[g]
    interval = np.clip(at_or_below - 1, 0, n - 2)
    interval += (np.arange(m, dtype=np.intp) * n)[:, None]
    slopes = np.empty((m, n), dtype=np.float64)  # row-padded so one flat index serves x, y and slopes
    np.subtract(y[:, 1:], y[:, :-1], out=slopes[:, :-1])
    slopes[:, :-1] /= steps
    slopes[:, -1] = 0.0
    flat = interval.ravel()
    values = np.take(slopes.ravel(), flat).reshape(m, n_grid)
    values *= grid - np.take(x.ravel(), flat).reshape(m, n_grid)
    values += np.take(y.ravel(), flat).reshape(m, n_grid)
    # Outside a row's energies numpy.interp repeats the end values; at its last energy
    # it returns the last value.
    np.copyto(values, y[:, :1], where=at_or_below == 0)
    np.copyto(values, y[:, -1:], where=at_or_below == n)
    return values
