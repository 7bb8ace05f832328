"""Grow the bundled FEFF spectra: compute more compounds of ``data/spectra/selection.csv``.

Usage::

    nohup nice -n 10 .venv/bin/python bench/extend_bundled.py [--max-hours H] [--max-compounds N] &
    # the Materiae matches among MIT-licensed structures (bench/match_prototypes.py):
    nohup nice -n 10 .venv/bin/python bench/extend_bundled.py --structures data/structures/prototype_matches.jsonl &

Each line appended to ``data/spectra/spectra_extra.jsonl`` (``spectra_prototypes.jsonl``
with ``--structures``) has the head start's format (``materials/ingest/bundled.py`` loads every
``spectra*.jsonl``) and its settings: the ``fast`` preset of ``materials/spectra/feff.py``, one
site per element (the inequivalent site of largest multiplicity, lowest index on a
tie), the primitive cell pymatgen builds from the AMCSD CIF (or the stored primitive
cell of a matched structure), symmetry tolerance 0.1 Å. The head start capped primitive
cells at 24 sites; the cap is now 200, because FEFF's cost per absorbing site does not
grow with the cell (a 28-site cell took 18.7 s, a 32-site cell 4 s) and the cap dropped
most topological compounds for no saving. Lines carry ``n_sites``.

Resumable: compounds are taken in the selection's class-balanced order, and an
(AMCSD id, element) already in any ``spectra*.jsonl`` is never recomputed, so a killed
run continues where it stopped. Every line is written whole and flushed; a line cut
short by a kill is removed at the next start. Compounds that cannot be computed (too
many sites, disorder, a FEFF failure) are recorded with the reason in
``var/extend_bundled_skipped.jsonl`` and not retried; one that hit the per-site time
limit is tried again by the next run. To stop cleanly, create the stop
file (``var/extend_bundled.stop``) or send SIGTERM: the run ends after the current
FEFF stage, and nothing computed is lost.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from materials.spectra.feff import FeffError, compute_k_edge_xanes, feff_description  # noqa: E402

TOPOLOGICAL_CLASSES = {"TI", "TCI", "HSP_SM", "HSL_SM"}
MAX_SITES_BUNDLED = 200  # the head start used 24; cost per site does not grow with the cell
PRESET = "fast"
SITE_POLICY = "largest"


class Stop(BaseException):
    """Asked to stop (SIGTERM or the stop file)."""


def binary_class(row: dict) -> str:
    return "topological" if row["soc_topo_class"] in TOPOLOGICAL_CLASSES else "trivial"


def repair_tail(path: Path) -> int:
    """Drop a last line that a kill cut short; returns the bytes removed."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1  # everything up to and including the last newline
    tail = data[keep:]
    if tail:
        with open(path, "r+b") as handle:
            handle.truncate(keep)
    return len(tail)


def compound_key(record: dict):
    """AMCSD id for a mineral of the selection, ``structure_id`` for a matched structure."""
    return record["structure_id"] if record.get("structure_id") else int(record["amcsd_id"])


def existing_spectra(spectra_dir: Path) -> dict[object, set[str]]:
    """(compound key → elements) already computed, over every ``spectra*.jsonl``."""
    done: dict[object, set[str]] = {}
    for path in sorted(spectra_dir.glob("spectra*.jsonl")):
        for text in path.read_text().splitlines():
            if text.strip():
                record = json.loads(text)
                done.setdefault(compound_key(record), set()).add(record["element"])
    return done


def read_skipped(path: Path) -> dict[int, str]:
    if not path.exists():
        return {}
    skipped = {}
    for text in path.read_text().splitlines():
        if text.strip():
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: the compound is simply tried again
            skipped[compound_key(record)] = record["reason"]
    return skipped


def append_line(path: Path, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def parse_structure(database, row: dict):
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifParser

    if "structure" in row:
        return Structure.from_dict(row["structure"])
    amcsd_id = int(row["amcsd_id"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The same call as materials/ingest/bundled.py, so site indices match the stored structure.
        return CifParser.from_str(database.get_cif(amcsd_id).ciftext).parse_structures(primitive=True)[0]


def counts_by_class(selection: list[dict], done: dict[int, set[str]]) -> dict[str, int]:
    from pymatgen.core import Composition

    counts = {"topological": 0, "trivial": 0}
    for row in selection:
        elements = {el.symbol for el in Composition(row["reduced_formula"]).elements}
        if elements and elements <= done.get(compound_key(row), set()):
            counts[binary_class(row)] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "data")
    parser.add_argument("--output", type=Path, default=None, help="default: <data-dir>/spectra/spectra_extra.jsonl")
    parser.add_argument("--skip-log", type=Path, default=REPO / "var" / "extend_bundled_skipped.jsonl")
    parser.add_argument("--stop-file", type=Path, default=REPO / "var" / "extend_bundled.stop")
    parser.add_argument("--max-compounds", type=int, default=None, help="stop after completing this many")
    parser.add_argument("--max-hours", type=float, default=None, help="start no compound after this many hours")
    parser.add_argument("--max-mb", type=float, default=9.0, help="stop when the output file reaches this size")
    parser.add_argument("--site-timeout-s", type=float, default=1800.0, help="FEFF budget per site, seconds")
    parser.add_argument("--counts", action="store_true", help="print complete compounds by class and exit")
    parser.add_argument(
        "--structures",
        type=Path,
        default=None,
        help="compute a matches file (bench/match_prototypes.py) instead of the selection",
    )
    args = parser.parse_args(argv)

    spectra_dir = args.data_dir / "spectra"
    if args.structures:
        output = args.output or spectra_dir / "spectra_prototypes.jsonl"
        selection = [json.loads(text) for text in args.structures.read_text().splitlines() if text.strip()]
    else:
        output = args.output or spectra_dir / "spectra_extra.jsonl"
        with open(spectra_dir / "selection.csv", newline="") as handle:
            selection = list(csv.DictReader(handle))
    if args.counts:
        done = existing_spectra(spectra_dir)
        print(json.dumps(counts_by_class(selection, done)))
        return 0

    removed = repair_tail(output)
    if removed:
        print(f"removed a partial last line ({removed} bytes) from {output}", flush=True)
    args.skip_log.parent.mkdir(parents=True, exist_ok=True)
    done = existing_spectra(spectra_dir)
    skipped = read_skipped(args.skip_log)
    before = counts_by_class(selection, done)
    print(f"complete compounds before: {before}", flush=True)

    def on_term(signum, frame):
        raise Stop("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)
    from larixite.amcsd import get_amcsd
    from pymatgen.core import Composition

    database = get_amcsd()
    started = time.monotonic()
    completed = 0
    try:
        for row_number, row in enumerate(selection, start=1):
            key = compound_key(row)
            elements = sorted(el.symbol for el in Composition(row["reduced_formula"]).elements)
            missing = [el for el in elements if el not in done.get(key, set())]
            if not missing or key in skipped:
                continue
            if args.stop_file.exists():
                raise Stop(f"stop file {args.stop_file}")
            if args.max_hours is not None and time.monotonic() - started > args.max_hours * 3600:
                raise Stop(f"{args.max_hours} h elapsed")
            if args.max_compounds is not None and completed >= args.max_compounds:
                raise Stop(f"{completed} compounds completed")
            if output.exists() and output.stat().st_size > args.max_mb * 1e6:
                raise Stop(f"{output} reached {args.max_mb} MB")

            compound_started = time.monotonic()
            try:
                structure = parse_structure(database, row)
                reason = None
                if len(structure) > MAX_SITES_BUNDLED:
                    reason = f"primitive cell has {len(structure)} sites, over {MAX_SITES_BUNDLED}"
                elif {s.symbol for s in structure.composition.elements} != set(elements):
                    reason = f"CIF composition {structure.composition.reduced_formula} differs from the formula"
            except Exception as error:  # pymatgen raises many types on a bad CIF
                reason = f"cannot parse the CIF: {type(error).__name__}: {error}"
            lines = []
            if reason is None:
                for element in missing:
                    try:
                        result = compute_k_edge_xanes(
                            structure,
                            element,
                            PRESET,
                            sites=SITE_POLICY,
                            max_sites=MAX_SITES_BUNDLED,
                            timeout_s=args.site_timeout_s,
                        )
                    except FeffError as error:
                        reason = f"{element}: {error}"
                        break
                    site = result.sites[0]
                    record = {
                        **(
                            {"structure_id": key, "structure_source": row["structure_source"]}
                            if args.structures
                            else {"amcsd_id": key}
                        ),
                        "reduced_formula": row["reduced_formula"],
                        "spacegroup": int(row["spacegroup"]),
                        "materiae_id": row["materiae_id"],
                        "mp_id": row["mp_id"],
                        "icsd_ids": row["icsd_ids"],
                        "soc_topo_class": row["soc_topo_class"],
                        "nsoc_topo_class": row["nsoc_topo_class"],
                        "element": result.element,
                        "site_index": site.site_index,
                        "site_multiplicity": site.multiplicity,
                        "n_inequivalent_sites": result.n_inequivalent_sites,
                        "primitive_formula": result.primitive_formula,
                        "n_sites": result.n_sites,
                        "energies_ev": [round(float(x), 4) for x in site.energies_ev],
                        "mu": [float(x) for x in site.mu],
                        "seconds": round(site.seconds, 2),
                        "feff": feff_description(PRESET),
                        "preset": PRESET,
                        "site_policy": SITE_POLICY,
                        "site_averaged": False,
                        "symprec_angstrom": result.settings["symprec_angstrom"],
                        "library_versions": result.library_versions,
                    }
                    append_line(output, record)
                    done.setdefault(key, set()).add(element)
                    lines.append(f"{element} {site.seconds:.0f}s")
            if reason is not None:
                # A time limit says more about the machine's load than the compound: try it
                # again next run. Everything else would fail the same way again.
                if "time limit" not in reason:
                    where = {"structure_id": key} if args.structures else {"amcsd_id": key}
                    append_line(args.skip_log, {**where, "row": row_number, "reason": reason})
                skipped[key] = reason
                print(f"row {row_number} {key} {row['reduced_formula']}: skipped ({reason})", flush=True)
                continue
            completed += 1
            print(
                f"row {row_number} {key} {row['reduced_formula']} ({binary_class(row)}): "
                f"{', '.join(lines)}; {time.monotonic() - compound_started:.0f} s; {completed} new",
                flush=True,
            )
    except (Stop, KeyboardInterrupt) as reason:
        print(f"stopping: {reason or 'interrupted'}", flush=True)
    after = counts_by_class(selection, existing_spectra(spectra_dir))
    print(f"complete compounds after: {after} (before: {before}); {completed} completed this run", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
