"""The batch path of :class:`mlcore.preprocess.SpectrumPreprocessor`: spectra held in
(M, L) arrays, validated, normalised and resampled one element at a time, with the same
arithmetic as the one-spectrum path (the same numbers to the last bit).
"""

from __future__ import annotations

import numpy as np

from mlcore.data import MaterialSpectra, RawSpectrum
from mlcore.elements import ELEMENTS, N_ELEMENTS, check_absorbing_element
from mlcore.spectrum import MIN_POINTS, MIN_POST_REACH_EV, k_edge_region_ev, normalise_rows

# Spectra per step of the batch path: (rows x n_points) float64 temporaries of a few
# tens of MB, large enough that NumPy's per-call overhead does not matter.
BATCH_ROWS = 512


def batch_transform(
    pre,
    material_index,
    element_index,
    energies_ev,
    mu,
    space_groups,
    compositions=None,
    shift_ev: float = 0.0,
) -> MaterialSpectra:
    """``SpectrumPreprocessor.transform_arrays`` (see there) of the fitted preprocessor ``pre``."""
    pre._check_fitted()
    material_index = np.asarray(material_index, dtype=np.int64).reshape(-1)
    element_index = np.asarray(element_index, dtype=np.int64).reshape(-1)
    energy_blocks, mu_blocks = blocks(energies_ev), blocks(mu)
    n_spectra = material_index.shape[0]
    if element_index.shape[0] != n_spectra:
        raise ValueError("material_index and element_index must have the same length")
    if len(energy_blocks) != len(mu_blocks) or sum(block.shape[0] for block in energy_blocks) != n_spectra:
        raise ValueError("energies_ev and mu need one row per spectrum, in blocks of the same sizes")
    n_materials = len(space_groups)
    if n_spectra and (material_index.min() < 0 or material_index.max() >= n_materials):
        raise ValueError("material_index refers to a material outside 0..len(space_groups)-1")
    out = np.empty((n_spectra, pre.n_points), dtype=np.float32)
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
                target = np.empty((rows.size, pre.n_points), dtype=np.float32)
            bad = _resample_block(pre, ELEMENTS[code], x, y, shift_ev, target, workspace)
            if not adjacent:
                out[offset + rows] = target
            if bad.size:
                first = bad[np.argmin(materials[rows[bad]])]
                failures.append((int(materials[rows[first]]), ELEMENTS[code], x[first], y[first]))
        offset += size
    if failures:
        row, element, energies, values = min(failures, key=lambda failure: failure[:2])
        # Replay the one spectrum through the per-spectrum path for its exact message.
        x, y, _ = pre._model_coordinates(row, RawSpectrum(element, energies, values))
        pre._resample(row, element, x + shift_ev, y)
        raise ValueError(f"material {row}: {element} spectrum was rejected")  # not reached
    return MaterialSpectra(
        material_index=material_index,
        element_index=element_index,
        spectra=out,
        space_group=np.asarray(space_groups),
        composition=pre._composition(compositions, n_materials),
    )


def _resample_block(
    pre, element: str, energies_ev: np.ndarray, mu: np.ndarray, shift_ev: float, out: np.ndarray, workspace: dict
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
    grid_ev = pre._grid(element)
    center, scale = pre._standardization(element)
    region_ev = k_edge_region_ev(element)
    window = (grid_ev[0], grid_ev[-1], pre.min_window_coverage) if element in pre.windows_ev_ else None
    interpolator = workspace.get((n_points, grid_ev.shape[0]))
    if interpolator is None or interpolator.max_rows < min(BATCH_ROWS, n_rows):
        interpolator = workspace[n_points, grid_ev.shape[0]] = RowInterpolator(
            n_points, grid_ev.shape[0], min(BATCH_ROWS, n_rows)
        )
    bad_parts = []
    for start in range(0, n_rows, BATCH_ROWS):
        stop = min(start + BATCH_ROWS, n_rows)
        x, y = energies_ev[start:stop], mu[start:stop]
        if pre.aligned:
            x, y, rejected = _aligned_rows(x, y, region_ev)
            values, bad = interpolator.run(grid_ev, x, y, (-np.inf, np.inf), shift_ev, window)
            bad |= rejected
        else:
            values, bad = interpolator.run(grid_ev, x, y, region_ev, shift_ev, window)
        if bad.any():
            bad_parts.append(start + np.flatnonzero(bad))
        values -= center
        values /= scale
        out[start:stop] = values
    return np.concatenate(bad_parts) if bad_parts else np.zeros(0, dtype=np.int64)


def _aligned_rows(energies_ev: np.ndarray, mu: np.ndarray, region_ev: tuple[float, float]):
    """Rows normalised and relative to their E0, as ``_model_coordinates`` makes them,
    plus the rows it would reject (invalid, off the K-edge region, not normalisable)."""
    x = np.array(energies_ev, dtype=np.float64)
    y = np.array(mu, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        rejected = ~(np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1))
        rejected |= ~(np.diff(x, axis=1).min(axis=1) > 0)
        rejected |= (x[:, -1] < region_ev[0]) | (x[:, 0] > region_ev[1])
    if rejected.any():  # reported, not used: any valid row will do
        x[rejected] = np.arange(x.shape[1], dtype=np.float64)
        y[rejected] = 0.0
    e0, step, _, _, norm = normalise_rows(x, y)
    with np.errstate(invalid="ignore"):
        rejected |= ~(step > 0) | (x[:, -1] - e0 < MIN_POST_REACH_EV)
    return x - e0[:, None], norm, rejected


def blocks(values) -> list[np.ndarray]:
    blocks = [values] if isinstance(values, np.ndarray) else [np.asarray(block) for block in values]
    if any(block.ndim != 2 for block in blocks):
        raise ValueError("energies_ev and mu must be (spectra, points) arrays or sequences of them")
    return blocks


class RowInterpolator:
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
