"""Fidelity of the FEFF pipeline against the Materials Project: the Co K edge of LiCoO2.

Usage: python bench/feff_fidelity.py [--preset mp|fast ...]

Computes the Co K-edge XANES of LiCoO2 (mp-24850, ``data/structures/LiCoO2_mp24850.cif``)
with ``materials.spectra.feff.compute_k_edge_xanes`` at each preset and compares it with MP's own
spectrum (``data/reference/licoo2_co_k_mp.json``): Pearson r on MP's energy grid, without
a shift, after the best shift of at most 1 eV (the acceptance test: r ≥ 0.99 at ``mp``),
and after the best shift of at most 15 eV (how far the edge sits). Prints
``name: value unit`` lines::

    feff_fidelity_r_licoo2_mp: 0.9966
    feff_fidelity_r_licoo2_mp_shifted: 0.9996
    feff_fidelity_shift_licoo2_mp: 0.40 eV

The ``mp`` preset takes minutes (SCF and an FMS radius of 7.5 Å); ``tests/test_feff_fidelity.py``
runs this under the ``slow`` marker.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from materials.spectra.feff import PRESETS, compute_k_edge_xanes, pearson_after_shift  # noqa: E402

STRUCTURE_PATH = REPO / "data" / "structures" / "LiCoO2_mp24850.cif"
REFERENCE_PATH = REPO / "data" / "reference" / "licoo2_co_k_mp.json"
MAX_SHIFT_EV = 1.0
#: A wider search, to say how far the ``fast`` preset's edge sits from MP's: without
#: SCF, FEFF's Fermi level (hence the absorption onset) comes out several eV lower.
WIDE_SHIFT_EV = 15.0
#: The issue's acceptance target at the ``mp`` preset.
TARGET_R = 0.99


@dataclass
class Fidelity:
    preset: str
    r: float
    r_shifted: float
    shift_ev: float
    r_wide: float
    shift_wide_ev: float
    n_sites: int
    seconds: float

    def lines(self) -> list[str]:
        return [
            f"feff_fidelity_r_licoo2_{self.preset}: {self.r:.4f}",
            f"feff_fidelity_r_licoo2_{self.preset}_shifted: {self.r_shifted:.4f}",
            f"feff_fidelity_shift_licoo2_{self.preset}: {self.shift_ev:+.2f} eV",
            f"feff_fidelity_r_licoo2_{self.preset}_wide_shift: {self.r_wide:.4f}",
            f"feff_fidelity_wide_shift_licoo2_{self.preset}: {self.shift_wide_ev:+.2f} eV",
            f"feff_fidelity_seconds_licoo2_{self.preset}: {self.seconds:.1f} s",
        ]


def licoo2_fidelity(preset: str) -> Fidelity:
    """Compute LiCoO2's Co K edge at ``preset`` and score it against MP's spectrum."""
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = Structure.from_file(STRUCTURE_PATH)
    reference = json.loads(REFERENCE_PATH.read_text())
    result = compute_k_edge_xanes(structure, "Co", preset)
    r, r_shifted, shift_ev = pearson_after_shift(
        reference["energies_ev"], reference["mu"], result.energies_ev, result.mu, max_shift_ev=MAX_SHIFT_EV
    )
    _, r_wide, shift_wide_ev = pearson_after_shift(
        reference["energies_ev"], reference["mu"], result.energies_ev, result.mu, max_shift_ev=WIDE_SHIFT_EV
    )
    return Fidelity(preset, r, r_shifted, shift_ev, r_wide, shift_wide_ev, result.n_sites_computed, result.seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", choices=list(PRESETS), help="default: mp and fast")
    args = parser.parse_args(argv)
    for preset in args.preset or ["mp", "fast"]:
        fidelity = licoo2_fidelity(preset)
        for line in fidelity.lines():
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
