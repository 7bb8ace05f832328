"""K-edge XANES from a crystal structure with FEFF10 (``feff10-rs``), the Materials
Project way.

The pipeline, for one absorbing element of one structure:

1. check the structure (ordered, small enough, only elements FEFF has tables for);
2. find the element's crystallographically inequivalent sites (spglib, through
   pymatgen's ``SpacegroupAnalyzer``) and their multiplicities;
3. per site, write ``feff.inp`` with pymatgen's ``MPXANESSet`` (modified by a preset)
   and run every FEFF stage with ``feff10-rs``; read ``xmu.dat`` (omega, mu);
4. average the site spectra weighted by multiplicity, as the Materials Project builds
   its element spectra (``emmet.core.xas.XASDoc.from_task_docs`` →
   ``pymatgen.analysis.xas.spectrum.site_weighted_spectrum``): cubic interpolation of
   every site's mu onto a common grid spanning the intersection of their energy ranges
   (200 points, the builder's ``num_samples``), then the multiplicity-weighted mean.
   An element with a single inequivalent site keeps FEFF's own grid, as MP does.

Limits (each raises :class:`FeffError` with the reason, before FEFF runs)
--------------------------------------------------------------------------
* Partial occupancy or vacancies: FEFF needs one atom per position.
* More than :data:`MAX_PRIMITIVE_SITES` (64) sites in the primitive cell: every
  inequivalent site of the element is one FEFF run of 10 s to minutes, and a cell
  that large can hold tens of them; the bundled set uses a tighter 24.
* An absorber lighter than Li (H, He have no K-edge core level FEFF can model with
  a core hole) or any element beyond FEFF's atomic tables (Z > 103).
* An absorber that is not in the structure.

FEFF itself (presets, input, running one site) is in :mod:`materials.spectra.feff_run`; its names
are importable from here too. This module imports nothing from Django, so scripts and
workers can use it alone.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from materials.spectra.feff_run import (
    EDGE,
    PRESETS,
    FeffError,
    Preset,
    feff_description,
    feff_input,
    get_preset,
    library_versions,
    run_feff,
)

__all__ = [
    "EDGE",
    "PRESETS",
    "FeffError",
    "Preset",
    "SiteSpectrum",
    "XanesResult",
    "choose_sites",
    "compute_k_edge_xanes",
    "feff_description",
    "feff_input",
    "get_preset",
    "inequivalent_sites",
    "library_versions",
    "pearson_after_shift",
    "prepare_structure",
    "run_feff",
    "site_weighted_average",
]

#: Largest primitive cell, in sites, the pipeline accepts (see the module docstring).
MAX_PRIMITIVE_SITES = 64
#: Symmetry tolerance for finding equivalent sites, in Å (as for the head start).
SYMPREC_ANGSTROM = 0.1
#: Points of the common grid for a site-weighted average (MP's builder uses 200).
AVERAGE_GRID_POINTS = 200
#: K edges need a 1s core level with a spectator electron: from lithium on.
MIN_ABSORBER_Z = 3
#: FEFF10's atomic tables (and feff10-rs's input validation) stop at lawrencium.
MAX_FEFF_Z = 103

SITE_POLICIES = ("all", "largest")


@dataclass
class SiteSpectrum:
    """FEFF's spectrum of one absorbing site (an inequivalent-site representative)."""

    site_index: int
    multiplicity: int
    energies_ev: np.ndarray
    mu: np.ndarray
    seconds: float


@dataclass
class XanesResult:
    """An element's K-edge XANES and how it was computed.

    ``settings`` holds what is needed to reproduce it (preset, FEFF cards, symmetry
    tolerance, site policy, cell); :meth:`provenance` adds the sites, library versions
    and seconds, as a JSON-ready dict for ``Spectrum.settings``.
    """

    element: str
    edge: str
    preset: str
    energies_ev: np.ndarray
    mu: np.ndarray
    sites: list[SiteSpectrum]
    site_averaged: bool
    settings: dict
    library_versions: dict
    seconds: float
    n_inequivalent_sites: int
    n_sites: int
    primitive_formula: str
    warnings: list[str] = field(default_factory=list)

    @property
    def n_sites_computed(self) -> int:
        return len(self.sites)

    def provenance(self) -> dict:
        """Everything about the computation, JSON-serialisable."""
        return {
            **self.settings,
            "site_averaged": self.site_averaged,
            "sites": [
                {"site_index": s.site_index, "multiplicity": s.multiplicity, "seconds": round(s.seconds, 2)}
                for s in self.sites
            ],
            "n_inequivalent_sites": self.n_inequivalent_sites,
            "n_sites": self.n_sites,
            "primitive_formula": self.primitive_formula,
            "library_versions": self.library_versions,
            "seconds": round(self.seconds, 2),
            "feff": feff_description(self.preset),
            "warnings": self.warnings,
        }


# --- Checks -----------------------------------------------------------------------------


def _element_symbol(element: str) -> tuple[str, int]:
    from pymatgen.core import Element

    try:
        absorber = Element(str(element).strip())
    except ValueError:
        raise FeffError(f"{element!r} is not a chemical element") from None
    if absorber.Z < MIN_ABSORBER_Z:
        raise FeffError(
            f"no K-edge data for {absorber.symbol} (Z={absorber.Z}): FEFF K edges start at Li (Z={MIN_ABSORBER_Z})"
        )
    if absorber.Z > MAX_FEFF_Z:
        raise FeffError(
            f"no K-edge data for {absorber.symbol} (Z={absorber.Z}): FEFF's atomic tables stop at Z={MAX_FEFF_Z}"
        )
    return absorber.symbol, absorber.Z


def prepare_structure(structure, element: str, max_sites: int = MAX_PRIMITIVE_SITES):
    """Check ``structure`` for a K-edge computation of ``element`` and return the cell to use.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        Any cell of the crystal; oxidation states are ignored.
    element : str
        The absorbing element's symbol.
    max_sites : int
        Largest primitive cell accepted.

    Returns
    -------
    tuple[pymatgen.core.Structure, str]
        The structure to compute (the input itself when it is within ``max_sites``,
        so its site indices stay meaningful; otherwise its primitive cell) and the
        absorber's symbol.

    Raises
    ------
    FeffError
        For partial occupancy, too many sites, an element without K-edge data, an
        absorber absent from the structure, or a species FEFF cannot model.
    """
    from pymatgen.core import Element, Structure

    symbol, _ = _element_symbol(element)
    if not isinstance(structure, Structure):
        raise FeffError(f"expected a pymatgen Structure, got {type(structure).__name__}")
    if len(structure) == 0:
        raise FeffError("the structure has no sites")
    for index, site in enumerate(structure):
        if not site.is_ordered:
            occupancy = ", ".join(f"{sp}:{occ:g}" for sp, occ in site.species.items())
            raise FeffError(
                f"partial occupancy at site {index} ({occupancy}); FEFF needs an ordered structure with "
                "one atom per position"
            )
    structure = structure.copy()
    structure.remove_oxidation_states()  # FEFF takes neutral atoms; a net charge would make pymatgen refuse
    for specie in structure.composition:
        if not isinstance(specie, Element):
            raise FeffError(f"species {specie} is not a chemical element")
        if specie.Z > MAX_FEFF_Z:
            raise FeffError(f"{specie.symbol} (Z={specie.Z}) is beyond FEFF's atomic tables (Z ≤ {MAX_FEFF_Z})")
    if symbol not in {sp.symbol for sp in structure.composition}:
        raise FeffError(f"{symbol} is not in the structure ({structure.composition.reduced_formula})")
    if len(structure) > max_sites:
        # A conventional or super cell may reduce; only the primitive cell's size counts.
        primitive = structure.get_primitive_structure()
        if len(primitive) > max_sites:
            raise FeffError(
                f"too many sites: the primitive cell has {len(primitive)} sites, over the limit of {max_sites}"
            )
        structure = primitive
    return structure, symbol


def inequivalent_sites(structure, element: str, symprec_angstrom: float = SYMPREC_ANGSTROM) -> list[tuple[int, int]]:
    """``(site_index, multiplicity)`` of each symmetry-inequivalent site of ``element``.

    The representative is the lowest index of its orbit; the list is in index order.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        symmetrized = SpacegroupAnalyzer(structure, symprec=symprec_angstrom).get_symmetrized_structure()
    except Exception as error:  # spglib signals failure with several exception types
        raise FeffError(f"symmetry analysis failed: {error}") from None
    sites = [
        (min(orbit), len(orbit))
        for orbit in symmetrized.equivalent_indices
        if structure[orbit[0]].specie.symbol == element
    ]
    return sorted(sites)


def choose_sites(sites: list[tuple[int, int]], policy: str) -> list[tuple[int, int]]:
    """All inequivalent sites, or the one of largest multiplicity (lowest index on a tie)."""
    if policy == "all":
        return list(sites)
    if policy == "largest":
        return [max(sites, key=lambda site: (site[1], -site[0]))]
    raise FeffError(f"unknown site policy {policy!r}; choose one of {', '.join(SITE_POLICIES)}")


def site_weighted_average(
    sites: list[SiteSpectrum], n_points: int = AVERAGE_GRID_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """The multiplicity-weighted mean of site spectra, the Materials Project way.

    Each site's mu is interpolated (cubic spline, as in pymatgen's
    ``site_weighted_spectrum``) onto ``n_points`` evenly spaced energies spanning the
    intersection of the sites' energy ranges, so no site is extrapolated.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        Energies (eV) and mu.
    """
    from scipy.interpolate import interp1d

    if not sites:
        raise FeffError("no site spectra to average")
    if len(sites) == 1:
        return sites[0].energies_ev, sites[0].mu
    low_ev = max(float(s.energies_ev.min()) for s in sites)
    high_ev = min(float(s.energies_ev.max()) for s in sites)
    if not high_ev > low_ev:
        raise FeffError("the site spectra have no energy range in common")
    grid_ev = np.linspace(low_ev, high_ev, n_points)
    total = sum(s.multiplicity for s in sites)
    mu = np.zeros(n_points)
    for site in sites:
        mu += site.multiplicity * interp1d(site.energies_ev, site.mu, kind="cubic")(grid_ev) / total
    return grid_ev, mu


def compute_k_edge_xanes(
    structure,
    element: str,
    preset: str = "fast",
    *,
    sites: str = "all",
    work_dir: Path | str | None = None,
    timeout_s: float | None = None,
    max_sites: int = MAX_PRIMITIVE_SITES,
    symprec_angstrom: float = SYMPREC_ANGSTROM,
    progress: Callable[[int, int, str], None] | None = None,
) -> XanesResult:
    """The K-edge XANES of ``element`` in ``structure``.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        An ordered crystal structure.
    element : str
        The absorbing element's symbol.
    preset : {"fast", "mp"}
        FEFF settings; see :mod:`materials.spectra.feff_run`.
    sites : {"all", "largest"}
        ``"all"`` averages every inequivalent site by multiplicity (the Materials
        Project's element spectrum); ``"largest"`` computes only the site of largest
        multiplicity (how the bundled head start was made).
    work_dir : path, optional
        Scratch folder for FEFF's files (one sub-folder per site). The caller owns
        it; without one a temporary folder is made and removed.
    timeout_s : float, optional
        Budget for the whole computation, in seconds. It bounds every FEFF stage
        and is checked between sites.
    max_sites : int
        Largest primitive cell accepted.
    symprec_angstrom : float
        Symmetry tolerance for equivalent sites, in Å.
    progress : callable, optional
        ``progress(sites_done, sites_total, message)``, called before each site and
        at the end.

    Returns
    -------
    XanesResult

    Raises
    ------
    FeffError
        With a clear reason, for a structure or element that cannot be computed,
        a FEFF failure, or an exhausted time budget.
    """
    chosen_preset = get_preset(preset)
    if sites not in SITE_POLICIES:
        raise FeffError(f"unknown site policy {sites!r}; choose one of {', '.join(SITE_POLICIES)}")
    started = time.perf_counter()
    deadline = None if timeout_s is None else started + timeout_s
    structure, symbol = prepare_structure(structure, element, max_sites)
    all_sites = inequivalent_sites(structure, symbol, symprec_angstrom)
    if not all_sites:
        raise FeffError(f"symmetry analysis found no {symbol} site")
    chosen = choose_sites(all_sites, sites)

    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="feff-"))
        work_dir = Path(work_dir)
        site_spectra, cards = [], {}
        for done, (site_index, multiplicity) in enumerate(chosen):
            if progress:
                progress(done, len(chosen), f"{symbol} site {site_index} ({done + 1}/{len(chosen)})")
            remaining_s = None if deadline is None else deadline - time.perf_counter()
            if remaining_s is not None and remaining_s <= 0:
                raise FeffError(f"time limit of {timeout_s:g} s reached after {done} of {len(chosen)} {symbol} sites")
            site_dir = work_dir / f"site{site_index:04d}"
            site_dir.mkdir(parents=True, exist_ok=True)
            text, cards = feff_input(structure, site_index, chosen_preset.name, site_dir)
            try:
                energies_ev, mu, seconds = run_feff(text, site_dir, remaining_s)
            except FeffError as error:
                if remaining_s is not None and "timed out" in str(error):
                    raise FeffError(
                        f"time limit of {timeout_s:g} s reached in FEFF for {symbol} site {site_index} "
                        f"({done} of {len(chosen)} sites done)"
                    ) from None
                raise FeffError(f"{symbol} site {site_index}: {error}") from None
            site_spectra.append(SiteSpectrum(site_index, multiplicity, energies_ev, mu, seconds))

    energies_ev, mu = site_weighted_average(site_spectra)
    notes = []
    if sites == "largest" and len(all_sites) > 1:
        notes.append(f"one of {len(all_sites)} inequivalent {symbol} sites computed; not a site average")
    if progress:
        progress(len(chosen), len(chosen), f"{symbol}: {len(chosen)} site(s) done")
    return XanesResult(
        element=symbol,
        edge=EDGE,
        preset=chosen_preset.name,
        energies_ev=energies_ev,
        mu=mu,
        sites=site_spectra,
        site_averaged=len(site_spectra) > 1,
        settings={
            "preset": chosen_preset.name,
            "edge": EDGE,
            "input_set": "pymatgen MPXANESSet",
            "cards": cards,
            "cluster_radius_angstrom": chosen_preset.cluster_radius_angstrom,
            "symprec_angstrom": symprec_angstrom,
            "site_policy": sites,
            "average_grid_points": AVERAGE_GRID_POINTS if len(site_spectra) > 1 else None,
        },
        library_versions=dict(library_versions()),
        seconds=time.perf_counter() - started,
        n_inequivalent_sites=len(all_sites),
        n_sites=len(structure),
        primitive_formula=structure.composition.formula,
        warnings=notes,
    )


# --- Comparing spectra -------------------------------------------------------------------


def pearson_after_shift(
    reference_energies_ev: np.ndarray,
    reference_mu: np.ndarray,
    energies_ev: np.ndarray,
    mu: np.ndarray,
    max_shift_ev: float = 1.0,
    step_ev: float = 0.01,
) -> tuple[float, float, float]:
    """Pearson r between a spectrum and a reference, unshifted and at the best shift.

    The spectrum is linearly interpolated onto the reference's energies (only where
    they overlap) after adding a shift in ``[-max_shift_ev, max_shift_ev]``.

    Returns
    -------
    tuple[float, float, float]
        r without a shift, the best r, and the shift (eV) that gives it, i.e. the
        amount to add to ``energies_ev`` to match the reference.
    """
    reference_energies_ev = np.asarray(reference_energies_ev, dtype=float)
    reference_mu = np.asarray(reference_mu, dtype=float)
    energies_ev, mu = np.asarray(energies_ev, dtype=float), np.asarray(mu, dtype=float)

    def r_at(shift_ev: float) -> float:
        shifted = energies_ev + shift_ev
        inside = (reference_energies_ev >= shifted[0]) & (reference_energies_ev <= shifted[-1])
        if inside.sum() < 10:
            return math.nan
        ours = np.interp(reference_energies_ev[inside], shifted, mu)
        return float(np.corrcoef(ours, reference_mu[inside])[0, 1])

    n_steps = int(round(max_shift_ev / step_ev))
    shifts = [k * step_ev for k in range(-n_steps, n_steps + 1)]
    scored = [(r_at(s), s) for s in shifts]
    best_r, best_shift = max((r, s) for r, s in scored if not math.isnan(r))
    return r_at(0.0), best_r, round(best_shift, 6)
