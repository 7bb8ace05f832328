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
Energy scale check (``edge_offsets_ev``, ``off_scale``)
    The edge of a spectrum is where it rises fastest (``edge_energy_ev``). Fitting keeps,
    per element, the 5th, 50th and 95th percentiles of the training spectra's edges.
    Codes and settings put the same edge at different absolute energies (FEFF without
    SCF, the bundled ``fast`` preset, sits ~10 eV below the Materials Project's FEFF for
    LiCoO2's Co K edge; measured spectra differ again), and the model only knows the
    scale it was trained on, so a spectrum whose edge falls outside the training range
    and far from its median is reported as off scale instead of silently classified.
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
BATCH_ROWS = 512

# A spectrum must touch the region where the element's K edge can plausibly be:
# tabulated edge +-1 % plus an absolute margin. FEFF places K edges from about 20 eV
# below (F) to 480 eV above (Pu) the tabulated value, i.e. within 0.4 % for heavy atoms.
_K_REGION_RELATIVE = 0.01
_K_REGION_BELOW_EV = 50.0
_K_REGION_ABOVE_EV = 100.0

# Edge detection: the spectrum on a uniform grid this fine, smoothed over this many
# points (1.25 eV), so one noisy point of a measured spectrum cannot be "the edge".
_EDGE_GRID_EV = 0.25
_EDGE_SMOOTHING_POINTS = 5


def edge_energy_ev(energies_ev: np.ndarray, mu: np.ndarray) -> float:
    """Energy (eV) at which ``mu`` rises fastest: the absorption edge.

    Parameters
    ----------
    energies_ev, mu : numpy.ndarray
        A validated spectrum (sorted, finite energies).
    """
    energies_ev = np.asarray(energies_ev, dtype=np.float64)
    grid = np.arange(energies_ev[0], energies_ev[-1], _EDGE_GRID_EV)
    if grid.size < 2 * _EDGE_SMOOTHING_POINTS:
        grid = energies_ev
    smooth = np.convolve(
        np.interp(grid, energies_ev, np.asarray(mu, dtype=np.float64)),
        np.ones(_EDGE_SMOOTHING_POINTS) / _EDGE_SMOOTHING_POINTS,
        mode="same",
    )
    slope = np.gradient(smooth, grid)
    # The moving average is biased at both ends (zero padding): never an edge there.
    margin = _EDGE_SMOOTHING_POINTS // 2 + 1
    slope[:margin] = slope[-margin:] = -np.inf
    return float(grid[int(np.argmax(slope))])


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
        self.edges_ev_ = {}
        for element in sorted(by_element, key=ELEMENTS.index):
            pairs = by_element[element]
            edges = [edge_energy_ev(energies, mu) for energies, mu in pairs]
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
        workspace: dict = {}  # reusable buffers, per (spectrum length, grid length)
        offset = 0
        for energies_block, mu_block in zip(energy_blocks, mu_blocks, strict=True):
            size = energies_block.shape[0]
            if mu_block.shape[0] != size:
                raise ValueError("energies_ev and mu need one row per spectrum, in blocks of the same sizes")
            elements = element_index[offset : offset + size]
            materials = material_index[offset : offset + size]
            by_element = np.argsort(elements, kind="stable")
            cuts = np.flatnonzero(np.diff(elements[by_element])) + 1
            for rows in np.split(by_element, cuts) if size else []:
                code = int(elements[rows[0]])
                if not 0 <= code < N_ELEMENTS:
                    raise ValueError(f"material {materials[rows[0]]}: element index {code} is outside the vocabulary")
                adjacent = rows[-1] - rows[0] + 1 == rows.size
                if adjacent:  # one element's rows are adjacent: views, no copies
                    span = slice(int(rows[0]), int(rows[-1]) + 1)
                    x, y, target = energies_block[span], mu_block[span], out[offset + span.start : offset + span.stop]
                else:
                    x, y = np.take(energies_block, rows, axis=0), np.take(mu_block, rows, axis=0)
                    target = np.empty((rows.size, self.n_points), dtype=np.float32)
                bad = self._resample_block(ELEMENTS[code], x, y, shift_ev, target, workspace)
                if not adjacent:
                    out[offset + rows] = target
                if bad.size:
                    first = bad[np.argmin(materials[rows[bad]])]
                    failures.append((int(materials[rows[first]]), ELEMENTS[code], x[first], y[first]))
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

    # ---------------------------------------------------------- energy scale
    def edge_offsets_ev(self, spectra: Sequence[RawSpectrum]) -> dict[str, float]:
        """Each spectrum's edge minus the median edge of that element's training spectra (eV).

        Elements without training spectra (or a preprocessor saved before edges were
        recorded) are left out.
        """
        self._check_fitted()
        edges = getattr(self, "edges_ev_", {})
        return {
            spectrum.element: edge_energy_ev(*self._validated(0, spectrum)) - edges[spectrum.element][1]
            for spectrum in spectra
            if spectrum.element in edges
        }

    def off_scale(self, spectra: Sequence[RawSpectrum], tolerance_ev: float = 5.0) -> dict[str, str]:
        """Spectra whose edge is off the training energy scale, with the reason.

        Off scale: the edge lies outside the 5th–95th percentile range of the training
        edges and more than ``tolerance_ev`` from their median. Chemical shifts between
        compounds mostly stay inside the training range (1.8 % of the bundled FEFF spectra
        are flagged against all of them); a different code, preset or calibration usually
        does not (MP's LiCoO2 Co edge: +13 eV; a measured anatase Ti edge: +8.7 eV).
        """
        found = {}
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
        self, element: str, energies_ev: np.ndarray, mu: np.ndarray, shift_ev: float, out: np.ndarray, workspace: dict
    ) -> np.ndarray:
        """Validate and resample spectra of ``element`` (rows of ``energies_ev`` / ``mu``)
        into the rows of ``out``; returns the rows ``transform`` would reject (their
        output is left unspecified)."""
        n_rows, n_points = energies_ev.shape
        if mu.shape != energies_ev.shape or n_points < MIN_POINTS:
            return np.arange(n_rows)
        try:
            check_absorbing_element(element)
        except ValueError:
            return np.arange(n_rows)
        grid_ev = self._grid(element)
        center, scale = self._standardization(element)
        region_ev = k_edge_region_ev(element)
        window = (grid_ev[0], grid_ev[-1], self.min_window_coverage) if element in self.windows_ev_ else None
        interpolator = workspace.get((n_points, grid_ev.shape[0]))
        if interpolator is None or interpolator.max_rows < min(BATCH_ROWS, n_rows):
            interpolator = workspace[n_points, grid_ev.shape[0]] = _RowInterpolator(
                n_points, grid_ev.shape[0], min(BATCH_ROWS, n_rows)
            )
        bad_parts = []
        for start in range(0, n_rows, BATCH_ROWS):
            stop = min(start + BATCH_ROWS, n_rows)
            values, bad = interpolator.run(
                grid_ev, energies_ev[start:stop], mu[start:stop], region_ev, shift_ev, window
            )
            if bad.any():
                bad_parts.append(start + np.flatnonzero(bad))
            values -= center
            values /= scale
            out[start:stop] = values
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
                    **({"edge_ev": list(self.edges_ev_[element])} if element in getattr(self, "edges_ev_", {}) else {}),
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
        # Artifacts written before edges were recorded have none: no scale check for them.
        preprocessor.edges_ev_ = {
            e: tuple(float(v) for v in elements[e]["edge_ev"]) for e in elements if "edge_ev" in elements[e]
        }
        return preprocessor

    def save(self, path: str | Path) -> None:
        """Write the fitted state as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> SpectrumPreprocessor:
        """Read a preprocessor written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _blocks(values) -> list[np.ndarray]:
    blocks = [values] if isinstance(values, np.ndarray) else [np.asarray(block) for block in values]
    if any(block.ndim != 2 for block in blocks):
        raise ValueError("energies_ev and mu must be (spectra, points) arrays or sequences of them")
    return blocks


class _RowInterpolator:
    """``numpy.interp(grid, x[i], y[i])`` for many rows i at once, with numpy.interp's
    float64 arithmetic (same results to the last bit), plus validate_spectrum's checks.

    Each row's energies are first located on the grid (``cells``: grid points strictly
    below each energy; the grid is a linspace, so this is arithmetic plus an exact
    correction, not a binary search). Counting, per (row, grid point), the energies at
    or below it (a ``bincount`` of the cells and a running sum) gives the interval
    numpy.interp evaluates there, directly as a flat index into the padded rows: no
    binary search per output point. Rows are padded with a zero-slope interval on each
    side, which reproduces numpy.interp's constant extension outside the energies (and
    its answer ``y[-1]`` at the last energy).

    Rows are laid out (m, n + 1) contiguously so that every step is one pass over a
    flat array, and the buffers are allocated once and reused, small enough (a few
    hundred rows) to stay in cache.
    """

    def __init__(self, n_points: int, n_grid: int, max_rows: int) -> None:
        n, width = n_points, n_points + 1
        self.n, self.n_grid, self.max_rows = n, n_grid, max_rows
        self.x = np.empty((max_rows, width))  # [x0, x0, x1, ..., x_{n-1}]
        self.y = np.empty((max_rows, width))  # [y0, y0, y1, ..., y_{n-1}]
        self.slopes = np.empty((max_rows, width))  # [0, s_0, ..., s_{n-2}, 0]
        self.work = np.empty(max_rows * width)
        self.flags = np.empty(max_rows * width, dtype=bool)
        self.cells = np.empty(max_rows * width, dtype=np.intp)
        self.row_offsets = (np.arange(max_rows, dtype=np.intp) * n_grid)[:, None]
        self.flat = np.empty(max_rows * n_grid, dtype=np.intp)
        self.values = np.empty((max_rows, n_grid))
        self.gathered = np.empty((max_rows, n_grid))

    def run(
        self,
        grid: np.ndarray,
        energies: np.ndarray,
        mu: np.ndarray,
        region_ev: tuple[float, float],
        shift_ev: float,
        window: tuple[float, float, float] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(values: (m, n_grid) view of a reused buffer, rejected: (m,) bool)."""
        m, n, width = energies.shape[0], self.n, self.n + 1
        size = m * width
        xp, yp, sp = self.x[:m], self.y[:m], self.slopes[:m]
        xf, yf, sf = xp.reshape(-1), yp.reshape(-1), sp.reshape(-1)
        work = self.work[:size]
        xp[:, 1:] = energies
        yp[:, 1:] = mu
        xp[:, 0] = xp[:, 1]
        yp[:, 0] = yp[:, 1]
        # validate_spectrum, row-wise: finite values (a float64 row sum of finite values
        # overflows only for absurd magnitudes; suspects are checked exactly below) ...
        bad = ~np.isfinite(xp.sum(axis=1))
        bad |= ~np.isfinite(yp.sum(axis=1))
        if bad.any():
            bad = ~np.isfinite(xp).all(axis=1) | ~np.isfinite(yp).all(axis=1)
        # ... strictly increasing energies (sf[r, k] = x[r, k + 1] - x[r, k]) ...
        np.subtract(xf[1:], xf[:-1], out=sf[:-1])
        bad |= ~(sp[:, 1:n].min(axis=1) > 0.0)
        # ... and the K-edge region
        bad |= (xp[:, -1] < region_ev[0]) | (xp[:, 1] > region_ev[1])
        if shift_ev:
            xf += shift_ev
            np.subtract(xf[1:], xf[:-1], out=sf[:-1])
        if window is not None:  # the fitted window's coverage rule (SpectrumPreprocessor._resample)
            start_ev, end_ev, min_coverage = window
            if end_ev > start_ev:
                overlap_ev = np.minimum(end_ev, xp[:, -1]) - np.maximum(start_ev, xp[:, 1])
                bad |= np.maximum(overlap_ev, 0.0) / (end_ev - start_ev) < min_coverage
        if bad.any():  # reported, not used: any finite, ordered energies will do
            xp[bad] = grid[0]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            np.subtract(yf[1:], yf[:-1], out=work[:-1])
            np.divide(work[:-1], sf[:-1], out=sf[:-1])
        sp[:, 0] = 0.0
        sp[:, n] = 0.0
        # Interval of (row r, grid point g): its flat index r * width + k into the padded
        # rows, k = 1 + (energies of the row <= grid[g]). Mark, at output position
        # r * n_grid + c, each energy with c grid points below it and each row's padding
        # column (c = 0); the running count of marks is then that index, plus one.
        cells = self._cells(grid, xf, size).reshape(m, width)
        cells[:, 0] = 0
        cells += self.row_offsets[:m]
        marks = np.bincount(cells.reshape(-1), minlength=m * self.n_grid + 1)[: m * self.n_grid]
        marks[0] -= 1
        values, gathered = self.values[:m], self.gathered[:m]
        flat = np.cumsum(marks, out=self.flat[: m * self.n_grid])
        np.take(sf, flat, out=values.reshape(-1), mode="clip")
        np.take(xf, flat, out=gathered.reshape(-1), mode="clip")
        np.subtract(grid, gathered, out=gathered)
        values *= gathered
        np.take(yf, flat, out=gathered.reshape(-1), mode="clip")
        values += gathered
        if not np.isfinite(values.sum()):
            # numpy.interp's answers where the slope formula breaks down (an infinite
            # slope between two almost equal energies); rejected rows are reported instead.
            for row in np.flatnonzero(~np.isfinite(values).all(axis=1) & ~bad).tolist():
                values[row] = np.interp(grid, xp[row, 1:], yp[row, 1:])
        return values, bad

    def _cells(self, grid: np.ndarray, x: np.ndarray, size: int) -> np.ndarray:
        """(size,) grid points strictly below each of the ``size`` energies ``x``."""
        n_grid = grid.shape[0]
        cells = inner = self.cells[:size]
        uniform_step = (grid[-1] - grid[0]) / (n_grid - 1) if n_grid > 1 else 0.0
        if uniform_step > 0:
            # The grid is a linspace: estimate arithmetically, then correct the rounding
            # (at most one cell either way) with exact comparisons, and check.
            padded = np.concatenate([[-np.inf], grid, [np.inf]])  # padded[c], padded[c + 1] bracket cell c
            work, flags = self.work[:size], self.flags[:size]
            np.subtract(x, grid[0], out=work)
            work /= uniform_step
            np.ceil(work, out=work)
            np.clip(work, 0, n_grid, out=work)
            np.copyto(inner, work, casting="unsafe")
            np.take(padded, inner, out=work, mode="clip")  # grid[cell - 1]
            inner -= np.greater_equal(work, x, out=flags)
            np.take(padded[1:], inner, out=work, mode="clip")  # grid[cell]
            inner += np.less(work, x, out=flags)
            np.take(padded, inner, out=work, mode="clip")
            exact = np.less(work, x, out=flags).all()
            np.take(padded[1:], inner, out=work, mode="clip")
            if exact and np.greater_equal(work, x, out=flags).all():
                return cells
        inner[...] = np.searchsorted(grid, x, side="left")
        return cells
