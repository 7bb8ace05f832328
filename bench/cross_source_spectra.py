"""Compute FEFF K-edge XANES of the cross-source reference materials, once, as reference files.

Usage: nice python bench/cross_source_spectra.py [--preset fast|mp ...] [--material licoo2|anatase ...]

The Materials Project's LiCoO2 Co K spectrum (``data/reference/licoo2_co_k_mp.json``) and the
measured anatase Ti K spectrum (``data/measured/anatase_ti_k_measured.txt``) are compared in
``bench/cross_source.py`` with FEFF spectra of the same structures at both presets. FEFF's
``mp`` preset takes ~20 minutes for LiCoO2, so the spectra are computed here once and written to
``data/reference/feff_<material>_<element>_k_<preset>.json`` (energies, mu, FEFF provenance);
an existing file is kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MATERIALS = {
    "licoo2": (REPO / "data" / "structures" / "LiCoO2_mp24850.cif", "Co"),
    "anatase": (REPO / "data" / "structures" / "mp-390.POSCAR", "Ti"),
}
#: The other elements' spectra at ``fast`` (the bundled training preset), so that the
#: material can also be classified with complete spectra: one source varies, the rest is fixed.
OTHER_ELEMENTS = {"licoo2": ("Li", "O"), "anatase": ("O",)}


def reference_path(material: str, preset: str, element: str | None = None) -> Path:
    element = element or MATERIALS[material][1]
    return REPO / "data" / "reference" / f"feff_{material}_{element.lower()}_k_{preset}.json"


def compute(material: str, preset: str, element: str | None = None) -> dict:
    from pymatgen.core import Structure

    from materials.spectra.feff import compute_k_edge_xanes

    path, element = MATERIALS[material][0], element or MATERIALS[material][1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = Structure.from_file(path)
    result = compute_k_edge_xanes(structure, element, preset)
    return {
        "structure": str(path.relative_to(REPO)),
        "element": element,
        "edge": "K",
        "preset": preset,
        "energies_ev": [round(float(v), 4) for v in result.energies_ev],
        "mu": [float(f"{v:.6g}") for v in result.mu],
        "provenance": result.provenance(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", choices=["fast", "mp"])
    parser.add_argument("--material", action="append", choices=list(MATERIALS))
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--others", action="store_true", help="only the other elements, at fast")
    args = parser.parse_args(argv)
    if args.others:
        for material in args.material or list(MATERIALS):
            for element in OTHER_ELEMENTS[material]:
                target = reference_path(material, "fast", element)
                if target.exists() and not args.force:
                    continue
                started = time.perf_counter()
                target.write_text(json.dumps(compute(material, "fast", element)) + "\n")
                print(f"{target.relative_to(REPO)}: {time.perf_counter() - started:.1f} s", flush=True)
        return 0
    for preset in args.preset or ["fast", "mp"]:
        for material in args.material or list(MATERIALS):
            target = reference_path(material, preset)
            if target.exists() and not args.force:
                print(f"{target.relative_to(REPO)}: exists", flush=True)
                continue
            started = time.perf_counter()
            data = compute(material, preset)
            target.write_text(json.dumps(data) + "\n")
            print(f"{target.relative_to(REPO)}: {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
