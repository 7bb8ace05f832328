"""One spectrum: validation, the absorption edge E0, and edge-step normalisation.

Every source (FEFF at either preset, the Materials Project, a measured file) goes through
these functions before it reaches a model, so all of them end up on one energy scale
(energies relative to E0) and one intensity convention (pre-edge 0, edge step 1).

E0 (``find_e0``; Athena/Larch: "the maximum of the derivative")
    The slope of mu(E) at every measured point is the slope of a least-squares line through
    the points within +-1.5 eV (``E0_HALF_WIDTH_EV``): Larch's smoothed derivative, written
    so that two almost equal energies (digitised data) cannot make an infinite slope (a window
    needs 3 points with a standard deviation of 0.5 eV or more). E0 is
    the energy of the largest slope, away from the first and last ``max(3, 2 %)`` points
    (Larch's ``nmin``), refined by the vertex of the parabola through the slopes of that
    point and its two neighbours.
Pre-edge (Larch's ``pre_edge``, with windows that short XANES tables can satisfy)
    * a line fitted to mu in [E0 - 200, E0 - 30] eV when at least 5 points lie there
      (a full measured scan: Larch's ``npre=1``);
    * otherwise, when the spectrum starts at least 10 eV below E0, a constant: the mean of
      mu over its first 3 eV (Larch's ``npre=0``; the Materials Project's and most
      measured XANES tables start 15 eV below the edge);
    * otherwise none (0): a calculation that starts on the edge (FEFF ``fast`` starts
      1-5 eV below it), and FEFF's mu has no pre-edge background.
Edge step (post-edge)
    * a full scan (data beyond E0 + 150 eV, at least 5 points in [E0 + 50, end]): Larch's
      polynomial in [E0 + 50, end] (quadratic when that range exceeds 300 eV, else a line)
      of mu - pre-edge, evaluated at E0;
    * XANES only: the mean of mu - pre-edge over [E0 + 15, E0 + 45] eV, cut at the last
      point; the spectrum must reach E0 + 20 eV (3 points at least).
    The normalised spectrum is (mu - pre-edge) / step. A step that is not positive means
    there is no absorption edge in the data, and the spectrum is refused.

``normalise_rows`` does all of this for many spectra of one length at once; ``normalise``
is the same function for one spectrum (a single row), so the per-spectrum and the batch
paths of :mod:`mlcore.preprocess` give the same numbers to the last bit.

``edge_energy_ev`` is the edge rule of preprocessing version 1 (steepest rise on a 0.25 eV
grid smoothed over 1.25 eV), kept for models trained with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlcore.elements import K_EDGE_ENERGY_EV, check_absorbing_element

MIN_POINTS = 10

# A spectrum must touch the region where the element's K edge can plausibly be:
# tabulated edge +-1 % plus an absolute margin. FEFF places K edges from about 20 eV
# below (F) to 480 eV above (Pu) the tabulated value, i.e. within 0.4 % for heavy atoms.
_K_REGION_RELATIVE = 0.01
_K_REGION_BELOW_EV = 50.0
_K_REGION_ABOVE_EV = 100.0

#: The normalisation rule of preprocessing version 2, recorded with every model that uses it.
NORMALISATION = {
    "e0_rule": "max of the local-linear slope over +-1.5 eV, parabolic refinement",
    "e0_half_width_ev": 1.5,
    "pre_edge_line_ev": [-200.0, -30.0],
    "pre_edge_constant": "mean of the first 3 eV when the data start >= 10 eV below E0, else 0",
    "post_edge_polynomial_ev": [50.0, None],
    "post_edge_mean_ev": [15.0, 45.0],
    "min_post_edge_reach_ev": 20.0,
}
E0_HALF_WIDTH_EV = 1.5
MIN_SLOPE_SPREAD_EV = 0.5
#: Neighbours on each side a slope window may hold (a digitised table with points 1 meV apart
#: would otherwise make the window, and the cost, as long as the table).
MAX_NEIGHBOURS = 48
_PRE_LINE = (-200.0, -30.0)
_PRE_CONSTANT_START_EV = -10.0
_PRE_CONSTANT_SPAN_EV = 3.0
_POST_POLY_START_EV = 50.0
_POST_POLY_MIN_REACH_EV = 150.0
_POST_QUADRATIC_SPAN_EV = 300.0
_POST_MEAN = (15.0, 45.0)
MIN_POST_REACH_EV = 20.0

# Edge detection of version 1: the spectrum on a uniform grid this fine, smoothed over this
# many points (1.25 eV), so one noisy point of a measured spectrum cannot be "the edge".
_EDGE_GRID_EV = 0.25
_EDGE_SMOOTHING_POINTS = 5


def k_edge_region_ev(element: str) -> tuple[float, float]:
    """Energy range (eV) in which a K-edge spectrum of ``element`` must have points."""
    edge_ev = K_EDGE_ENERGY_EV[element]
    return (
        edge_ev * (1 - _K_REGION_RELATIVE) - _K_REGION_BELOW_EV,
        edge_ev * (1 + _K_REGION_RELATIVE) + _K_REGION_ABOVE_EV,
    )


class SpectrumError(ValueError):
    """A spectrum that cannot be read, naming what is wrong.

    ``str(error)`` is ``"<element> spectrum: <problem>"``; ``problem`` alone is the text an
    input form shows under ``field`` (``"energies_ev"``, ``"mu"``, or ``None`` for the
    spectrum as a whole); ``code`` says which check failed (``element``, ``shape``,
    ``too_few_points``, ``not_finite``, ``unsorted``, ``duplicate``, ``outside_k_edge``).
    """

    def __init__(self, element: str, problem: str, field: str | None = None, code: str = "") -> None:
        super().__init__(f"{element} spectrum: {problem}")
        self.element, self.problem, self.field, self.code = element, problem, field, code


def validate_spectrum(element: str, energies_ev: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check one raw spectrum and return it as float64 arrays: the one rule of what a valid
    spectrum is, for every source (a model's inputs, an upload, a Materials Project document).

    Raises
    ------
    SpectrumError
        A ``ValueError`` naming the problem and the field at fault: an unknown element,
        mismatched lengths, fewer than ``MIN_POINTS`` points, NaN/inf values (with the index
        of the first), unsorted or duplicate energies (with the energy and index), energies
        outside the element's K-edge region.
    """
    try:
        check_absorbing_element(element)
    except ValueError as error:
        raise SpectrumError(element, str(error), code="element") from None
    energies_ev = np.asarray(energies_ev, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    if energies_ev.ndim != 1 or mu.ndim != 1:
        raise SpectrumError(element, "energies_ev and mu must be 1-D arrays", code="shape")
    if energies_ev.shape != mu.shape:
        raise SpectrumError(
            element,
            f"{mu.size} mu values but {energies_ev.size} energies; give one mu value per energy",
            "mu",
            "shape",
        )
    if energies_ev.size < MIN_POINTS:
        raise SpectrumError(
            element, f"{energies_ev.size} points; at least {MIN_POINTS} are needed", "energies_ev", "too_few_points"
        )
    for name, values in (("energies_ev", energies_ev), ("mu", mu)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            index = int(bad[0])
            kind = "NaN" if np.isnan(values[index]) else "infinite"
            raise SpectrumError(
                element,
                f"{name}[{index}] is {kind} ({bad.size} non-finite value(s) in all); every value must be a finite "
                "number",
                name,
                "not_finite",
            )
    steps = np.diff(energies_ev)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        index = int(bad[0]) + 1
        repeats = steps[bad[0]] == 0
        what = "duplicate energies" if repeats else "energies are not sorted in increasing order"
        raise SpectrumError(
            element,
            f"{what}: energies must be strictly increasing; energy {energies_ev[index]:.6g} eV at index {index} "
            f"{'repeats' if repeats else 'decreases'}",
            "energies_ev",
            "duplicate" if repeats else "unsorted",
        )
    low_ev, high_ev = k_edge_region_ev(element)
    if energies_ev[-1] < low_ev or energies_ev[0] > high_ev:
        raise SpectrumError(
            element,
            f"energies {energies_ev[0]:.1f}-{energies_ev[-1]:.1f} eV are outside the {element} K-edge region "
            f"{low_ev:.1f}-{high_ev:.1f} eV",
            "energies_ev",
            "outside_k_edge",
        )
    return energies_ev, mu


def edge_energy_ev(energies_ev: np.ndarray, mu: np.ndarray) -> float:
    """Version-1 edge: energy (eV) at which ``mu``, smoothed over 1.25 eV, rises fastest."""
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


@dataclass(frozen=True)
class Normalised:
    """One spectrum on the common scale: ``energies_ev - e0_ev`` against ``norm``."""

    e0_ev: float
    edge_step: float
    pre_edge: str  # "line", "constant" or "none"
    post_edge: str  # "polynomial" or "mean"
    norm: np.ndarray

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.edge_step) and self.edge_step > 0)


def find_e0(energies_ev: np.ndarray, mu: np.ndarray) -> float:
    """E0 (eV) of one validated spectrum: where its smoothed slope is largest (NaN when
    mu nowhere rises)."""
    e0, rising = _e0_rows(_row(energies_ev), _row(mu))
    return float(e0[0]) if rising[0] else float("nan")


def normalise(energies_ev: np.ndarray, mu: np.ndarray) -> Normalised:
    """E0, pre-edge subtraction and edge-step normalisation of one validated spectrum."""
    e0, step, pre_kind, post_kind, norm = normalise_rows(_row(energies_ev), _row(mu))
    return Normalised(
        e0_ev=float(e0[0]),
        edge_step=float(step[0]),
        pre_edge=("none", "constant", "line")[int(pre_kind[0])],
        post_edge=("mean", "polynomial")[int(post_kind[0])],
        norm=norm[0],
    )


def normalisation_problem(element: str, energies_ev: np.ndarray, result: Normalised) -> str | None:
    """Why ``result`` cannot be used (no edge step, too little above the edge), or None."""
    if not np.isfinite(result.e0_ev):
        return f"{element} spectrum has no absorption edge: mu nowhere rises with energy"
    reach = float(energies_ev[-1]) - result.e0_ev
    if reach < MIN_POST_REACH_EV:
        return (
            f"{element} spectrum ends {reach:.1f} eV above its edge (E0 {result.e0_ev:.1f} eV); at least "
            f"{MIN_POST_REACH_EV:.0f} eV above the edge are needed to normalise it"
        )
    if not result.ok:
        if result.pre_edge == "none" and np.isfinite(result.edge_step):
            below = result.e0_ev - float(energies_ev[0])
            return (
                f"{element} spectrum starts {below:.1f} eV below its edge (E0 {result.e0_ev:.1f} eV), too close "
                f"to find its pre-edge level, and read as background-free it has no positive edge step "
                f"({result.edge_step:.3g}); give at least 10 eV below the edge"
            )
        return (
            f"{element} spectrum has no absorption edge: mu does not rise from below to above E0 "
            f"{result.e0_ev:.1f} eV (edge step {result.edge_step:.3g})"
        )
    return None


def normalise_rows(energies_ev: np.ndarray, mu: np.ndarray):
    """:func:`normalise` for (m, L) arrays of validated spectra, one row each.

    Returns
    -------
    e0_ev, edge_step : (m,) float64
        A row without a usable edge has a step that is not positive, or NaN (and E0 NaN
        where mu nowhere rises).
    pre_kind : (m,) int8
        0 none, 1 constant, 2 line.
    post_kind : (m,) int8
        0 mean, 1 polynomial.
    norm : (m, L) float64
    """
    x = np.asarray(energies_ev, dtype=np.float64)
    y = np.asarray(mu, dtype=np.float64)
    e0, rising = _e0_rows(x, y)
    e0 = np.where(rising, e0, np.nan)  # mu nowhere rises: no edge, nothing to normalise
    rel = x - e0[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        # Pre-edge: a line where a full scan allows it, else a constant, else nothing.
        in_line = (rel >= _PRE_LINE[0]) & (rel <= _PRE_LINE[1])
        slope, intercept, n_line = _line_fit(rel, y, in_line)
        start = rel[:, :1]
        in_constant = (rel <= start + _PRE_CONSTANT_SPAN_EV) & (start <= _PRE_CONSTANT_START_EV)
        n_constant = in_constant.sum(axis=1)
        constant = np.where(in_constant, y, 0.0).sum(axis=1) / np.maximum(n_constant, 1)
        use_line = n_line >= 5
        use_constant = ~use_line & (n_constant >= 1)
        pre_kind = np.where(use_line, 2, np.where(use_constant, 1, 0)).astype(np.int8)
        pre = np.where(
            use_line[:, None],
            intercept[:, None] + slope[:, None] * rel,
            np.where(use_constant, constant, 0.0)[:, None],
        )
        above = y - pre
        # Post-edge: Larch's polynomial on a full scan, else a mean over a fixed XANES window.
        reach = rel[:, -1]
        in_poly = rel >= _POST_POLY_START_EV
        n_poly = in_poly.sum(axis=1)
        use_poly = (reach >= _POST_POLY_MIN_REACH_EV) & (n_poly >= 5)
        post_kind = use_poly.astype(np.int8)
        step = np.full(x.shape[0], np.nan)
        if use_poly.any():
            quadratic = reach - _POST_POLY_START_EV > _POST_QUADRATIC_SPAN_EV
            step_poly = _polynomial_at_zero(rel, above, in_poly, quadratic)
            step = np.where(use_poly, step_poly, step)
        in_mean = (rel >= _POST_MEAN[0]) & (rel <= _POST_MEAN[1])
        n_mean = in_mean.sum(axis=1)
        step_mean = np.where(in_mean, above, 0.0).sum(axis=1) / n_mean
        step_mean = np.where((n_mean >= 3) & (reach >= MIN_POST_REACH_EV), step_mean, np.nan)
        step = np.where(use_poly, step, step_mean)
        norm = above / np.where(step > 0, step, 1.0)[:, None]
    return e0, step, pre_kind, post_kind, norm


def _row(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(1, -1)


def _e0_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(m,) E0 of (m, L) rows (largest local-linear slope over +-1.5 eV, refined), and
    whether that slope is positive (no rise at all: no edge)."""
    m, length = x.shape
    half = E0_HALF_WIDTH_EV
    # Each point's neighbours within +-half, [low, high): counted by comparing each point with
    # its k-th neighbour for k = 1, 2, ... while any row of the block has one that close
    # (energies increase, so none is closer after the first that is not), up to MAX_NEIGHBOURS
    # on each side. The counts of a row do not depend on the other rows of the block.
    n_left = np.zeros((m, length), dtype=np.intp)
    n_right = np.zeros((m, length), dtype=np.intp)
    for k in range(1, min(length, MAX_NEIGHBOURS + 1)):
        close = x[:, k:] - x[:, :-k] <= half
        if not close.any():
            break
        n_left[:, k:] += close
        n_right[:, :-k] += close
    index = np.arange(length)
    low, high = index - n_left, index + n_right + 1
    # Window sums from running sums (energies taken from each row's first point).
    c = x - x[:, :1]
    values = np.empty((5, m, length))
    values[0] = 1.0
    values[1] = c
    np.multiply(c, c, out=values[2])
    values[3] = y
    np.multiply(c, y, out=values[4])
    running = np.zeros((5, m, length + 1))
    np.cumsum(values, axis=2, out=running[:, :, 1:])
    flat = running.reshape(5, m * (length + 1))
    offsets = (np.arange(m, dtype=np.intp) * (length + 1))[:, None]
    sums = (flat[:, (high + offsets).ravel()] - flat[:, (low + offsets).ravel()]).reshape(5, m, length)
    s0, s1, s2, sy, sxy = sums
    with np.errstate(invalid="ignore", divide="ignore"):
        denominator = s0 * s2 - s1 * s1
        # Only windows of 3 points or more, spread over +-0.5 eV (standard deviation), make a
        # slope: two or three points bunched together on a noisy spectrum would not.
        spread = (s0 >= 3) & (denominator >= MIN_SLOPE_SPREAD_EV**2 * s0 * s0)
        slope = np.where(spread, (s0 * sxy - s1 * sy) / denominator, -np.inf)
    slope[~np.isfinite(slope)] = -np.inf
    n_min = max(3, int(length * 0.02))
    if length > 2 * n_min:
        slope[:, :n_min] = -np.inf
        slope[:, length - n_min :] = -np.inf
    best = np.argmax(slope, axis=1)
    rows = np.arange(m)
    e0 = x[rows, best]
    rising = slope[rows, best] > 0
    # Vertex of the parabola through (x, slope) at best-1, best, best+1 (inside the data).
    inner = (best > 0) & (best < length - 1)
    left, right = np.clip(best - 1, 0, length - 1), np.clip(best + 1, 0, length - 1)
    xa, xb, xc = x[rows, left], e0, x[rows, right]
    fa, fb, fc = slope[rows, left], slope[rows, best], slope[rows, right]
    with np.errstate(invalid="ignore", divide="ignore"):
        numerator = (xb - xa) ** 2 * (fb - fc) - (xb - xc) ** 2 * (fb - fa)
        denominator = (xb - xa) * (fb - fc) - (xb - xc) * (fb - fa)
        vertex = xb - 0.5 * numerator / denominator
    refine = inner & np.isfinite(fa) & np.isfinite(fc) & np.isfinite(vertex) & (denominator != 0)
    vertex = np.clip(np.where(refine, vertex, e0), xa, xc)
    return np.where(refine, vertex, e0), rising


def _line_fit(x: np.ndarray, y: np.ndarray, mask: np.ndarray):
    """Least-squares line through the masked points of each row: (slope, intercept, n)."""
    n = mask.sum(axis=1)
    w = mask.astype(np.float64)
    count = np.maximum(n, 1)
    mean_x = (w * x).sum(axis=1) / count
    mean_y = (w * y).sum(axis=1) / count
    dx = (x - mean_x[:, None]) * w
    sxx = (dx * dx).sum(axis=1)
    sxy = (dx * (y - mean_y[:, None])).sum(axis=1)
    slope = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), 0.0)
    return slope, mean_y - slope * mean_x, n


def _polynomial_at_zero(x: np.ndarray, y: np.ndarray, mask: np.ndarray, quadratic: np.ndarray) -> np.ndarray:
    """Value at x = 0 of a least-squares line (or, where ``quadratic``, parabola) through
    the masked points of each row."""
    slope, intercept, _ = _line_fit(x, y, mask)
    out = intercept.copy()
    for row in np.flatnonzero(quadratic):
        coefficients = np.polyfit(x[row][mask[row]], y[row][mask[row]], 2)
        out[row] = coefficients[-1]
    return out
