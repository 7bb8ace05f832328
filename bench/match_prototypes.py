"""Find Materiae compounds among structures that ship in MIT-licensed packages.

Usage::

    .venv/bin/python bench/match_prototypes.py [--robocrys-db PATH]

Sources (both MIT-licensed; no GPL data):

* pymatgen's AFLOW prototype library,
  ``pymatgen/analysis/prototypes/aflow_prototypes.json.gz`` (pymatgen is a dependency);
* robocrys's mineral database, ``robocrys/condense/mineral_db.json.gz`` (robocrys is not
  a dependency: pass the file, e.g. unpacked from ``pip download --no-deps robocrys``).

A structure matches a Materiae entry when its reduced formula and its space group
(spglib through pymatgen, tolerance 0.1 Å, the bundled set's) equal the entry's and the
entry has a known class. Structures that are disordered, hold hydrogen, or duplicate a
compound of ``data/spectra/selection.csv`` or an earlier match are left out. The
primitive cell is stored, so FEFF site indices refer to the stored structure.

Writes ``data/structures/prototype_matches.jsonl`` in a class-balanced order
(topological and trivial alternate while topological ones last; within a class the
cheapest FEFF work first: fewest elements, then fewest sites), which
``bench/extend_bundled.py --structures`` computes and ``materials/ingest/bundled.py`` loads.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOPOLOGICAL_CLASSES = {"TI", "TCI", "HSP_SM", "HSL_SM"}
SYMPREC_ANGSTROM = 0.1
LICENCES = {
    "aflow": "pymatgen (MIT): AFLOW prototype library, Mehl et al., Comput. Mater. Sci. 136, S1 (2017)",
    "robocrys": "robocrys (MIT): mineral database, Ganose & Jain, MRS Commun. 9, 874 (2019)",
}


def aflow_structures():
    import pymatgen.analysis.prototypes as prototypes
    from pymatgen.core import Structure

    path = Path(prototypes.__file__).parent / "aflow_prototypes.json.gz"
    with gzip.open(path) as handle:
        entries = json.load(handle)
    for entry in entries:
        snl = entry["snl"]
        tags = entry.get("tags", {})
        name = tags.get("aflow") or snl.get("about", {}).get("remarks", [""])[0]
        structure = Structure.from_dict({k: v for k, v in snl.items() if k in ("lattice", "sites", "charge")})
        # One AFLOW prototype label serves several elements (A_oC8_64_f: Ga, I, P, ...).
        yield f"aflow:{name}:{structure.composition.reduced_formula}", tags.get("mineral", ""), structure


def robocrys_structures(path: Path):
    from pymatgen.core import Structure

    with gzip.open(path) as handle:
        table = json.load(handle)
    columns = table["columns"]
    for index, row in zip(table["index"], table["data"]):
        record = dict(zip(columns, row))
        structure = Structure.from_dict(record["structure"])
        yield f"robocrys:{index}:{structure.composition.reduced_formula}", record["mineral"], structure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robocrys-db", type=Path, default=None, help="robocrys/condense/mineral_db.json.gz")
    parser.add_argument("--output", type=Path, default=REPO / "data" / "structures" / "prototype_matches.jsonl")
    args = parser.parse_args(argv)

    from pymatgen.core import Composition
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    labels: dict[tuple[str, int], dict] = {}
    with open(REPO / "data" / "labels" / "materiae_labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if not row["soc_topo_class"]:
                continue
            try:
                key = (Composition(row["formula"]).reduced_formula, int(row["spacegroup"]))
            except Exception:
                continue
            labels.setdefault(key, row)  # the first (lowest id) entry of a compound
    with open(REPO / "data" / "spectra" / "selection.csv", newline="") as handle:
        taken = {(row["reduced_formula"], int(row["spacegroup"])) for row in csv.DictReader(handle)}

    sources = [("aflow", aflow_structures())]
    if args.robocrys_db:
        sources.append(("robocrys", robocrys_structures(args.robocrys_db)))
    matches = {"topological": [], "trivial": []}
    seen = set(taken)
    counts = {"structures": 0, "matched": 0}
    for source, structures in sources:
        for structure_id, name, structure in structures:
            counts["structures"] += 1
            if not structure.is_ordered or "H" in {el.symbol for el in structure.composition.elements}:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    analyzer = SpacegroupAnalyzer(structure, symprec=SYMPREC_ANGSTROM)
                    spacegroup = analyzer.get_space_group_number()
                    primitive = analyzer.find_primitive() or structure
                except Exception:
                    continue
            key = (structure.composition.reduced_formula, spacegroup)
            if key not in labels or key in seen:
                continue
            seen.add(key)
            row = labels[key]
            klass = "topological" if row["soc_topo_class"] in TOPOLOGICAL_CLASSES else "trivial"
            counts["matched"] += 1
            matches[klass].append(
                {
                    "structure_id": structure_id,
                    "structure_source": source,
                    "licence": LICENCES[source],
                    "name": name,
                    "reduced_formula": key[0],
                    "spacegroup": spacegroup,
                    "materiae_id": row["materiae_id"],
                    "mp_id": row["mp_id"],
                    "icsd_ids": row["icsd_ids"],
                    "soc_topo_class": row["soc_topo_class"],
                    "nsoc_topo_class": row["nsoc_topo_class"],
                    "n_sites": len(primitive),
                    "structure": json.loads(json.dumps(primitive.as_dict())),
                }
            )
    for klass in matches:  # FEFF costs one run per element: the most compounds per hour first
        matches[klass].sort(key=lambda record: (len(Composition(record["reduced_formula"])), record["n_sites"]))
    ordered = []
    for index in range(max(len(matches["topological"]), len(matches["trivial"]))):
        for klass in ("topological", "trivial"):
            if index < len(matches[klass]):
                ordered.append(matches[klass][index])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w") as handle:
        for record in ordered:
            handle.write(json.dumps(record) + "\n")
    print(
        f"structures: {counts['structures']}; new Materiae matches: {counts['matched']} "
        f"({len(matches['topological'])} topological, {len(matches['trivial'])} trivial) -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
