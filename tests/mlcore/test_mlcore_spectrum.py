"""Preprocessing version 2: E0, pre-edge subtraction and edge-step normalisation, on synthetic
spectra with known answers and on every bundled source (FEFF fast, MP, measured)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mlcore.data import RawSpectrum
from mlcore.preprocess import SpectrumPreprocessor
from mlcore.spectrum import NORMALISATION, find_e0, normalisation_problem, normalise

from .conftest import make_raw_spectrum

DATA = Path(__file__).resolve().parents[2] / "data"


def edge(energies, e0, width=1.0):
    """A unit absorption edge at ``e0``."""
    return 0.5 + np.arctan((energies - e0) / width) / np.pi


def test_e0_is_the_largest_slope_on_an_irregular_grid():
    rng = np.random.default_rng(0)
    energies = np.sort(rng.uniform(4950.0, 5050.0, 300))
    mu = edge(energies, 4981.3) + rng.normal(0, 0.002, energies.size)
    assert find_e0(energies, mu) == pytest.approx(4981.3, abs=0.5)


def test_e0_is_not_thrown_by_two_almost_equal_energies():
    """Digitised data: two points 1 meV apart with different values (an infinite raw slope)."""
    energies = np.linspace(4950.0, 5050.0, 201)
    mu = edge(energies, 4981.3)
    energies = np.insert(energies, 150, energies[150] - 0.001)
    mu = np.insert(mu, 150, mu[150] - 0.05)
    assert find_e0(energies, mu) == pytest.approx(4981.3, abs=0.3)


def test_full_scan_background_and_scale_are_removed_like_larch():
    """A sloped pre-edge line and a scale are undone: a line in [E0-200, E0-30], Larch's
    polynomial above E0+50, edge step measured at E0."""
    energies = np.linspace(4700.0, 5600.0, 1800)
    truth = edge(energies, 4981.0)
    mu = 7.0 * truth + 0.3 - 2e-4 * (energies - 4700.0)
    result = normalise(energies, mu)
    assert (result.pre_edge, result.post_edge) == ("line", "polynomial")
    assert result.e0_ev == pytest.approx(4981.0, abs=0.2)
    assert result.edge_step == pytest.approx(7.0, rel=0.05)
    far = np.abs(energies - 4981.0) > 30
    assert np.max(np.abs(result.norm - truth)[far]) < 0.06


def test_xanes_tables_use_a_constant_pre_edge_or_none():
    mp_like = np.linspace(4966.0, 5022.0, 120)  # starts 15 eV below the edge, like MP's tables
    result = normalise(mp_like, 2.0 * edge(mp_like, 4981.0, 0.5) + 0.1)
    assert (result.pre_edge, result.post_edge) == ("constant", "mean")
    assert result.norm[:5].mean() == pytest.approx(0.0, abs=0.03)
    assert result.edge_step == pytest.approx(2.0, rel=0.05)
    fast_like = np.linspace(4978.5, 5034.0, 100)  # FEFF "fast": starts on the edge, no background
    result = normalise(fast_like, edge(fast_like, 4981.0, 0.5))
    assert result.pre_edge == "none"
    assert result.edge_step == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize(
    ("energies", "mu", "message"),
    [
        (np.linspace(4960.0, 4995.0, 80), None, "ends .* above its edge"),
        (np.linspace(4960.0, 5030.0, 80), "falling", "no absorption edge"),
        (np.linspace(4978.0, 5030.0, 80), "offset", "too close to find its pre-edge level"),
    ],
)
def test_spectra_that_cannot_be_normalised_are_refused_with_the_reason(energies, mu, message):
    if mu is None:
        mu = edge(energies, 4985.0)
    elif mu == "falling":
        mu = np.linspace(1.0, 0.0, energies.size)
    else:
        mu = edge(energies, 4981.0) - 3.0
    problem = normalisation_problem("Ti", energies, normalise(energies, mu))
    assert problem is not None and problem.startswith("Ti spectrum")
    assert re.search(message, problem)
    with pytest.raises(ValueError, match=f"material 0: .*{message}"):
        SpectrumPreprocessor().fit([[make_raw_spectrum("Ti")]]).transform([[RawSpectrum("Ti", energies, mu)]], [1])


def test_two_energy_scales_and_intensity_scales_give_one_model_input(raw_materials):
    """The same spectrum from another code (edge 12 eV higher) and another detector (scaled,
    offset) is the same model input after version 2, and a different one before."""
    spectrum = make_raw_spectrum("Ti", offset_ev=3.0, seed=99)
    other = RawSpectrum("Ti", spectrum.energies_ev + 12.0, 40.0 * spectrum.mu)
    v2 = SpectrumPreprocessor().fit(raw_materials)
    a, b = (v2.transform([[s]], [1]).spectra[0] for s in (spectrum, other))
    assert np.max(np.abs(a - b)) < 1e-4
    v1 = SpectrumPreprocessor(version=1).fit(raw_materials)
    a, b = (v1.transform([[s]], [1]).spectra[0] for s in (spectrum, other))
    assert np.max(np.abs(a - b)) > 1.0


def test_version_2_windows_are_relative_to_e0(raw_materials):
    preprocessor = SpectrumPreprocessor().fit(raw_materials)
    ti = [s for spectra in raw_materials for s in spectra if s.element == "Ti"]
    e0 = [find_e0(s.energies_ev, s.mu) for s in ti]
    start_ev, end_ev = preprocessor.windows_ev_["Ti"]
    assert start_ev == pytest.approx(np.median([s.energies_ev[0] - e for s, e in zip(ti, e0, strict=True)]))
    assert end_ev == pytest.approx(np.median([s.energies_ev[-1] - e for s, e in zip(ti, e0, strict=True)]))
    # An element without training spectra gets the fitted elements' mean window.
    windows = np.array(list(preprocessor.windows_ev_.values()))
    assert preprocessor.window_ev("Fe") == pytest.approx(tuple(windows.mean(axis=0)))


def test_version_and_rule_are_saved_and_old_states_stay_version_1(raw_materials):
    preprocessor = SpectrumPreprocessor().fit(raw_materials)
    state = preprocessor.to_dict()
    assert state["version"] == 2 and state["normalisation"] == NORMALISATION
    restored = SpectrumPreprocessor.from_dict(json.loads(json.dumps(state)))
    assert np.array_equal(
        restored.transform(raw_materials, [1] * 12).spectra, preprocessor.transform(raw_materials, [1] * 12).spectra
    )
    old = SpectrumPreprocessor(version=1).fit(raw_materials).to_dict()
    del old["version"]  # what models stored before versions existed look like
    legacy = SpectrumPreprocessor.from_dict(old)
    assert legacy.version == 1
    assert np.array_equal(
        legacy.transform(raw_materials, [1] * 12).spectra,
        SpectrumPreprocessor(version=1).fit(raw_materials).transform(raw_materials, [1] * 12).spectra,
    )
    with pytest.raises(ValueError, match="unknown preprocessing version 3"):
        SpectrumPreprocessor(version=3)


def _measured_anatase():
    table = np.loadtxt(DATA / "measured" / "anatase_ti_k_measured.txt")
    table = table[np.argsort(table[:, 0], kind="stable")]
    return table[:, 0], table[:, 1]


def _bundled_fast(formula: str, space_group: int, element: str):
    for line in (DATA / "spectra" / "spectra.jsonl").read_text().splitlines():
        record = json.loads(line)
        if (record["reduced_formula"], record["spacegroup"], record["element"]) == (formula, space_group, element):
            return np.asarray(record["energies_ev"]), np.asarray(record["mu"])
    pytest.skip(f"no bundled {formula} {element} spectrum")


def test_every_bundled_source_normalises_to_a_unit_edge_step():
    """FEFF fast (bundled), FEFF at MP's settings, the Materials Project and a measured
    spectrum: each gets an E0 inside its data, a positive step, and ~1 above the edge."""
    reference = json.loads((DATA / "reference" / "licoo2_co_k_mp.json").read_text())
    feff_mp = np.loadtxt(DATA / "reference" / "anatase_ti_k_feff_mp.txt")
    sources = {
        "FEFF fast rutile": _bundled_fast("TiO2", 136, "Ti"),
        "FEFF mp anatase": (feff_mp[:, 0], feff_mp[:, 1]),
        "MP LiCoO2": (np.asarray(reference["energies_ev"]), np.asarray(reference["mu"])),
        "measured anatase": _measured_anatase(),
    }
    results = {}
    for name, (energies, mu) in sources.items():
        result = normalise(energies, mu)
        assert normalisation_problem("Ti", energies, result) is None, name
        after = (energies > result.e0_ev + 15) & (energies < result.e0_ev + 45)
        assert result.norm[after].mean() == pytest.approx(1.0, abs=1e-9), name
        results[name] = result
    # The same material from a calculation at MP's settings and a measurement: one E0.
    assert results["FEFF mp anatase"].e0_ev == pytest.approx(results["measured anatase"].e0_ev, abs=1.0)
