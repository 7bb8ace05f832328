"""FEFF regression, fast enough for every CI run (about ten seconds of FEFF).

The ``fast`` preset on one small structure (Sr2Sb, the Sr site of largest multiplicity)
against the stored reference of the same preset, ``tests/reference/feff_fast_sr2sb_sr_k.json``
(made by ``tests/reference/make_feff_reference.py``, which says how and when to re-make
it). A change in what FEFF10, pymatgen's input sets or our pipeline produce shows here,
where ``tests/test_feff_fidelity.py`` (against the Materials Project) is too slow for CI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pymatgen.core import Structure

from materials.spectra.feff import compute_k_edge_xanes
from mlcore.spectrum import edge_energy_ev
from tests.conftest import REPO

REFERENCE = REPO / "tests" / "reference" / "feff_fast_sr2sb_sr_k.json"
MIN_PEARSON_R = 0.999
MAX_EDGE_SHIFT_EV = 0.5


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def pearson_on_reference_grid(reference: dict, energies_ev, mu) -> float:
    grid = np.asarray(reference["energies_ev"])
    inside = (grid >= energies_ev[0]) & (grid <= energies_ev[-1])
    assert inside.sum() >= 0.9 * grid.size, "the spectra hardly overlap: the energy grid moved"
    ours = np.interp(grid[inside], energies_ev, mu)
    return float(np.corrcoef(ours, np.asarray(reference["mu"])[inside])[0, 1])


def test_the_fast_preset_reproduces_the_stored_reference_spectrum(reference, tmp_path):
    structure = Structure.from_dict(reference["structure"])

    result = compute_k_edge_xanes(
        structure, reference["element"], reference["preset"], sites=reference["sites"], work_dir=tmp_path
    )

    assert result.preset == "fast" and len(result.sites) == 1
    r = pearson_on_reference_grid(reference, result.energies_ev, result.mu)
    edge_ev = edge_energy_ev(result.energies_ev, result.mu)
    assert r >= MIN_PEARSON_R, f"Pearson r {r:.5f} against the reference"
    assert abs(edge_ev - reference["edge_ev"]) <= MAX_EDGE_SHIFT_EV, (edge_ev, reference["edge_ev"])
    assert result.provenance()["cards"] == reference["provenance"]["cards"]  # the same FEFF input


def test_the_comparison_notices_a_shifted_or_distorted_spectrum(reference):
    """The two criteria can fail: a 1 eV shift moves the edge, a distortion lowers r."""
    energies, mu = np.asarray(reference["energies_ev"]), np.asarray(reference["mu"])
    assert pearson_on_reference_grid(reference, energies, mu) == pytest.approx(1.0)
    assert abs(edge_energy_ev(energies + 1.0, mu) - reference["edge_ev"]) > MAX_EDGE_SHIFT_EV
    distorted = mu + 0.05 * np.sin(np.linspace(0, 12 * np.pi, mu.size))
    assert pearson_on_reference_grid(reference, energies, distorted) < MIN_PEARSON_R
