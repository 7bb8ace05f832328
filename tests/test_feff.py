"""The FEFF pipeline (``materials/spectra/feff.py``): checks before FEFF runs, symmetry,
site averaging, and real FEFF runs on tiny structures (seconds each)."""

from __future__ import annotations

import json
import warnings
from functools import cache

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from materials.spectra import feff
from materials.spectra.feff import FeffError, SiteSpectrum, compute_k_edge_xanes
from tests.conftest import DATA


@cache
def head_start_line(reduced_formula: str, element: str) -> dict:
    for text in (DATA / "spectra" / "spectra.jsonl").read_text().splitlines():
        record = json.loads(text)
        if record["reduced_formula"] == reduced_formula and record["element"] == element:
            return record
    raise LookupError(f"{reduced_formula} {element} is not in the head start")


def mineral(amcsd_id: int) -> Structure:
    """The primitive cell ``materials/ingest/bundled.py`` stores for an AMCSD compound."""
    from larixite.amcsd import get_amcsd
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CifParser.from_str(get_amcsd().get_cif(amcsd_id).ciftext).parse_structures(primitive=True)[0]


def rock_salt(a_angstrom: float = 4.2) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a_angstrom), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_it_rejects_partial_occupancy():
    structure = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(FeffError, match="partial occupancy at site 0"):
        compute_k_edge_xanes(structure, "O")


def test_it_rejects_vacancies_as_partial_occupancy():
    structure = Structure(Lattice.cubic(4.0), [{"Fe": 0.9}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(FeffError, match="partial occupancy"):
        compute_k_edge_xanes(structure, "Fe")


def test_it_rejects_a_primitive_cell_over_the_site_limit():
    rng = np.random.default_rng(0)
    # Random positions on a coarse grid: no symmetry, so the primitive cell is the cell.
    grid = rng.choice(10**3, size=feff.MAX_PRIMITIVE_SITES + 6, replace=False)
    coords = np.stack([grid // 100, (grid // 10) % 10, grid % 10], axis=1) / 10 + rng.uniform(0, 0.02, (len(grid), 3))
    structure = Structure(Lattice.cubic(25.0), ["Ti", "O"] * (len(grid) // 2), coords)
    with pytest.raises(FeffError, match=r"too many sites: the primitive cell has 70 sites, over the limit of 64"):
        compute_k_edge_xanes(structure, "Ti")


def test_it_measures_the_site_limit_on_the_primitive_cell():
    conventional = rock_salt()  # 8 sites; its primitive cell has 2
    prepared, symbol = feff.prepare_structure(conventional, "Mg", max_sites=4)
    assert (len(prepared), symbol) == (2, "Mg")
    with pytest.raises(FeffError, match="too many sites"):
        feff.prepare_structure(conventional * (2, 1, 1), "Mg", max_sites=1)


@pytest.mark.parametrize(
    "element, message",
    [
        ("H", r"no K-edge data for H \(Z=1\)"),
        ("He", r"no K-edge data for He \(Z=2\)"),
        ("Og", r"no K-edge data for Og \(Z=118\): FEFF's atomic tables stop at Z=103"),
        ("Xx", "'Xx' is not a chemical element"),
    ],
)
def test_it_rejects_elements_without_k_edge_data(element, message):
    with pytest.raises(FeffError, match=message):
        compute_k_edge_xanes(rock_salt(), element)


def test_it_rejects_a_structure_with_an_element_beyond_feffs_tables():
    structure = Structure(Lattice.cubic(5.0), ["Og", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(FeffError, match=r"Og \(Z=118\) is beyond FEFF's atomic tables"):
        compute_k_edge_xanes(structure, "O")


def test_it_rejects_an_element_not_in_the_structure():
    with pytest.raises(FeffError, match="Co is not in the structure \\(MgO\\)"):
        compute_k_edge_xanes(rock_salt(), "Co")


def test_it_rejects_an_unknown_preset_or_site_policy():
    with pytest.raises(FeffError, match="unknown preset 'slowest'; choose one of mp, fast"):
        compute_k_edge_xanes(rock_salt(), "Mg", "slowest")
    with pytest.raises(FeffError, match="unknown site policy"):
        compute_k_edge_xanes(rock_salt(), "Mg", sites="some")


def test_feff_error_is_a_value_error():
    assert issubclass(FeffError, ValueError)


def test_it_ignores_oxidation_states():
    structure = rock_salt()
    structure.add_oxidation_state_by_element({"Mg": 2, "O": -2})
    prepared, _ = feff.prepare_structure(structure, "O")
    assert {str(specie) for specie in prepared.composition} == {"Mg", "O"}


def test_it_finds_inequivalent_sites_with_their_multiplicities():
    record = head_start_line("Sr2Sb", "Sr")
    structure = mineral(record["amcsd_id"])
    assert feff.inequivalent_sites(structure, "Sr") == [(2, 2), (4, 2)]
    assert feff.inequivalent_sites(structure, "Sb") == [(0, 2)]
    # The head start's rule: the largest multiplicity, lowest index on a tie.
    assert feff.choose_sites([(2, 2), (4, 2)], "largest") == [(2, 2)]
    assert feff.choose_sites([(0, 1), (3, 4), (7, 4)], "largest") == [(3, 4)]


def test_site_weighted_average_weights_by_multiplicity_on_the_common_range():
    energies_a = np.linspace(100.0, 200.0, 101)
    energies_b = np.linspace(110.0, 210.0, 51)
    a = SiteSpectrum(0, 1, energies_a, np.full_like(energies_a, 1.0), 1.0)
    b = SiteSpectrum(3, 3, energies_b, np.full_like(energies_b, 5.0), 1.0)
    grid_ev, mu = feff.site_weighted_average([a, b], n_points=200)
    assert (grid_ev[0], grid_ev[-1], len(grid_ev)) == (110.0, 200.0, 200)
    np.testing.assert_allclose(mu, (1 * 1.0 + 3 * 5.0) / 4)


def test_a_single_site_keeps_feffs_own_grid():
    energies = np.linspace(100.0, 200.0, 101)
    site = SiteSpectrum(0, 2, energies, np.sin(energies), 1.0)
    grid_ev, mu = feff.site_weighted_average([site])
    assert grid_ev is energies and mu is site.mu


def test_pearson_after_shift_recovers_a_known_shift():
    energies = np.linspace(7700.0, 7770.0, 300)
    reference = np.exp(-(((energies - 7730.0) / 3.0) ** 2))
    shifted = np.exp(-(((energies - 7729.6) / 3.0) ** 2))  # 0.4 eV too low
    r, r_best, shift_ev = feff.pearson_after_shift(energies, reference, energies, shifted)
    assert r < r_best and r_best > 0.9999
    assert shift_ev == pytest.approx(0.4, abs=0.011)


def test_it_reproduces_a_head_start_spectrum_at_the_fast_preset():
    record = head_start_line("Sr2Sb", "Sr")
    result = compute_k_edge_xanes(mineral(record["amcsd_id"]), "Sr", "fast", sites="largest")
    assert [s.site_index for s in result.sites] == [record["site_index"]]
    assert result.sites[0].multiplicity == record["site_multiplicity"]
    assert result.n_inequivalent_sites == record["n_inequivalent_sites"]
    np.testing.assert_allclose(result.energies_ev, record["energies_ev"], atol=1e-3)
    # The head start was computed on another machine: FEFF's floating point differs there in
    # the fifth significant digit at the end of the grid (1.0097113 here, 1.009654 stored).
    np.testing.assert_allclose(result.mu, record["mu"], rtol=1e-4, atol=1e-6)
    assert feff.feff_description("fast") == record["feff"]
    assert result.warnings == ["one of 2 inequivalent Sr sites computed; not a site average"]


def test_it_averages_every_inequivalent_site_and_records_how(tmp_path):
    record = head_start_line("Sr2Sb", "Sr")
    result = compute_k_edge_xanes(mineral(record["amcsd_id"]), "Sr", "fast", work_dir=tmp_path)
    assert result.site_averaged and [(s.site_index, s.multiplicity) for s in result.sites] == [(2, 2), (4, 2)]
    assert len(result.energies_ev) == feff.AVERAGE_GRID_POINTS
    # Equal multiplicities: the average is the mean of the two site spectra.
    expected = np.mean([np.interp(result.energies_ev, s.energies_ev, s.mu) for s in result.sites], axis=0)
    np.testing.assert_allclose(result.mu, expected, rtol=0.02, atol=0.01)
    provenance = json.loads(json.dumps(result.provenance()))  # JSON-serialisable as stored
    assert provenance["preset"] == "fast" and provenance["site_policy"] == "all"
    assert provenance["cards"]["FMS"] == [6.0, 0] and "SCF" not in provenance["cards"]
    assert "LDOS" not in provenance["cards"]
    assert provenance["library_versions"]["feff10-rs"] == "0.2.4"
    assert provenance["seconds"] > 0 and all(site["seconds"] > 0 for site in provenance["sites"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["site0002", "site0004"]


def test_the_mp_preset_keeps_scf_and_drops_only_ldos(tmp_path):
    _, cards = feff.feff_input(rock_salt(), 0, "mp", tmp_path)
    assert cards["SCF"] and cards["FMS"] and "LDOS" not in cards
    assert cards["XANES"] and cards["COREHOLE"] == "FSR"


def test_it_fails_clearly_when_feff_exceeds_its_time_budget():
    record = head_start_line("Sr2Sb", "Sr")
    with pytest.raises(FeffError, match="time limit of 0.3 s reached"):
        compute_k_edge_xanes(mineral(record["amcsd_id"]), "Sr", "fast", timeout_s=0.3)


def test_a_temporary_scratch_directory_is_removed_even_on_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # make tempfile re-read TMPDIR
    record = head_start_line("Sr2Sb", "Sr")
    with pytest.raises(FeffError):
        compute_k_edge_xanes(mineral(record["amcsd_id"]), "Sr", "fast", timeout_s=0.3)
    assert list(tmp_path.iterdir()) == []
