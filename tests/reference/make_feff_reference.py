"""Write the FEFF regression reference ``tests/reference/feff_fast_sr2sb_sr_k.json``.

The reference is this project's FEFF pipeline (``materials.spectra.feff.compute_k_edge_xanes``,
preset ``fast``, the inequivalent Sr site of largest multiplicity) on the primitive cell
of Sr2Sb (AMCSD 10911, larixite's copy): six sites, about ten seconds of FEFF. The file
keeps the structure itself, so the test does not depend on the AMCSD copy, and the
library versions it was made with. ``tests/test_feff_regression.py`` recomputes it and
asks for Pearson r >= 0.999 and the edge within 0.5 eV.

Re-make it only on purpose (a deliberate change of FEFF settings or versions), from the
repository root, and say why in the commit::

    .venv/bin/python tests/reference/make_feff_reference.py
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "feff_fast_sr2sb_sr_k.json"
AMCSD_ID, ELEMENT, PRESET, SITES = 10911, "Sr", "fast", "largest"


def main() -> None:
    sys.path.insert(0, str(HERE.parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "screening.settings")
    from larixite.amcsd import get_amcsd
    from pymatgen.io.cif import CifParser

    from materials.spectra.feff import compute_k_edge_xanes
    from mlcore.spectrum import edge_energy_ev

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = CifParser.from_str(get_amcsd().get_cif(AMCSD_ID).ciftext).parse_structures(primitive=True)[0]
    result = compute_k_edge_xanes(structure, ELEMENT, PRESET, sites=SITES)
    record = {
        "what": f"K-edge XANES of {ELEMENT} in Sr2Sb (AMCSD {AMCSD_ID}), preset {PRESET}, sites {SITES}",
        "made_by": "tests/reference/make_feff_reference.py",
        "made": datetime.now(UTC).strftime("%Y-%m-%d"),
        "element": ELEMENT,
        "preset": PRESET,
        "sites": SITES,
        "structure": json.loads(json.dumps(structure.as_dict())),
        "edge_ev": round(edge_energy_ev(result.energies_ev, result.mu), 4),
        "energies_ev": [round(float(e), 4) for e in result.energies_ev],
        "mu": [round(float(m), 7) for m in result.mu],
        "provenance": json.loads(json.dumps(result.provenance(), default=str)),
    }
    REFERENCE.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {REFERENCE.relative_to(HERE.parent.parent)}: {len(result.mu)} points, edge {record['edge_ev']} eV")


if __name__ == "__main__":
    main()
