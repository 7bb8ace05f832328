"""Loading the bundled real dataset in ``data/`` (see ``data/README.md``).

Everything is read and checked before anything is written, and the writes run in
one transaction: a malformed file stops the load with ``file:line: reason`` and
leaves no rows behind. Every write is an upsert, so a second load changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction

from materials.chemistry import parse_formula
from materials.ingest import catalogues
from materials.ingest.catalogues import read_text
from materials.ingest.structure_files import StructureFileError, read_structure
from materials.models import Material, Spectrum
from mlcore.spectrum import SpectrumError, validate_spectrum

DEFAULT_DATA_DIR = settings.BASE_DIR / "data"
FEFF_HEAD_START_RELEASE = "bundled FEFF10 head start (feff10-rs 0.2.4, preset fast)"
#: ``spectra_extra.jsonl``: computed for this project by ``bench/extend_bundled.py``, same settings.
FEFF_EXTENSION_RELEASE = "bundled FEFF10 extension (feff10-rs 0.2.4, preset fast, bench/extend_bundled.py)"
#: ``spectra_prototypes.jsonl``: the same settings on structures of ``structures/prototype_matches.jsonl``.
FEFF_PROTOTYPE_RELEASE = "bundled FEFF10 on AFLOW prototypes (feff10-rs 0.2.4, preset fast, bench/extend_bundled.py)"
#: Materiae matches among structures shipped in MIT-licensed packages (``bench/match_prototypes.py``).
PROTOTYPE_MATCHES = Path("structures") / "prototype_matches.jsonl"
MATERIAE_RELEASE = "Materiae (Zhang et al. 2019), junbozhu copy"
ARSENAL_RELEASE = "Topological Materials Arsenal (Tang et al. 2019), topogivity copy"

# Ti–O structures from Lightshow (Materials Project structures) and LiCoO2.
MP_STRUCTURE_FILES = {
    "mp-10734": "mp-10734.POSCAR",
    "mp-1215": "mp-1215.POSCAR",
    "mp-1840": "mp-1840.POSCAR",
    "mp-2657": "mp-2657.POSCAR",
    "mp-2664": "mp-2664.POSCAR",
    "mp-390": "mp-390.POSCAR",
    "mp-430": "mp-430.POSCAR",
    "mp-458": "mp-458.POSCAR",
    "mp-24850": "LiCoO2_mp24850.cif",
}


class BundledDataError(ValueError):
    """A bundled file is malformed; the message names the file and line."""


@dataclass
class SpectrumRow:
    """One spectrum to store, keyed by whatever identifies its material."""

    key: tuple[str, object]  # ("materiae_id", "MAT…") or ("mp_id", "mp-390")
    element: str
    energies_ev: list[float]
    mu: list[float]
    source: str
    release: str
    settings: dict = field(default_factory=dict)


@dataclass
class LoadReport:
    materials: int = 0
    spectra: int = 0
    labels: int = 0
    created: dict = field(default_factory=dict)

    def line(self) -> str:
        made = ", ".join(f"{k} {v}" for k, v in self.created.items())
        return f"{self.materials} materials, {self.spectra} spectra, {self.labels} labels (new this run: {made})"


def _fail(path: Path, line: int, reason: str):
    raise BundledDataError(f"{path}:{line}: {reason}")


def _check_spectrum(path: Path, line: int, element, energies, mu) -> None:
    """The one spectrum rule (``mlcore.validate_spectrum``), reported against the file and line."""
    try:
        validate_spectrum(str(element), energies, mu)
    except SpectrumError as error:
        _fail(path, line, str(error))
    except (TypeError, ValueError):
        _fail(path, line, "energies_ev and mu must be lists of numbers")


def _release_of(path: Path) -> str:
    if path.name == "spectra.jsonl":
        return FEFF_HEAD_START_RELEASE
    return FEFF_PROTOTYPE_RELEASE if path.name == "spectra_prototypes.jsonl" else FEFF_EXTENSION_RELEASE


def read_head_start(path: Path) -> tuple[list[SpectrumRow], dict[int, dict]]:
    """FEFF spectra of bundled compounds (one JSON object per line).

    A line names its structure by ``amcsd_id`` (a mineral of larixite's AMCSD copy) or
    by ``structure_id`` (an entry of ``structures/prototype_matches.jsonl``). Returns
    the spectra and, per AMCSD id, the compound's selection fields.
    """
    required = ("materiae_id", "reduced_formula", "element", "energies_ev", "mu")
    rows, compounds = [], {}
    for line, text in enumerate(read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            _fail(path, line, f"invalid JSON ({error.msg} at column {error.colno})")
        if not isinstance(record, dict):
            _fail(path, line, "expected a JSON object")
        missing = [k for k in required if k not in record]
        if "amcsd_id" not in record and "structure_id" not in record:
            missing.append("amcsd_id (or structure_id)")
        if missing:
            _fail(path, line, f"missing field(s) {', '.join(missing)}")
        formula_elements = set(parse_formula(str(record.get("reduced_formula", ""))).elements)
        if record["element"] not in formula_elements:
            _fail(
                path, line, f"absorbing element {record['element']!r} is not in the formula {record['reduced_formula']}"
            )
        _check_spectrum(path, line, record["element"], record["energies_ev"], record["mu"])
        if "amcsd_id" in record:
            compounds.setdefault(int(record["amcsd_id"]), record)
            where = {"amcsd_id": record["amcsd_id"]}
        else:
            where = {"structure_id": record["structure_id"]}
        rows.append(
            SpectrumRow(
                key=("materiae_id", record["materiae_id"]),
                element=str(record["element"]),
                energies_ev=record["energies_ev"],
                mu=record["mu"],
                source=Spectrum.Source.FEFF,
                release=_release_of(path),
                settings={
                    "preset": "fast",
                    "feff": record.get("feff", ""),
                    **where,
                    "site_index": record.get("site_index"),
                    "site_multiplicity": record.get("site_multiplicity"),
                    "n_inequivalent_sites": record.get("n_inequivalent_sites"),
                    "n_sites": record.get("n_sites"),
                    "site_averaged": False,
                    "seconds": record.get("seconds"),
                    "library_versions": record.get("library_versions", {}),
                },
            )
        )
    return rows, compounds


def read_two_column(path: Path, element: str, sort: bool = False) -> tuple[list[float], list[float]]:
    """A whitespace-separated energy/absorption text file.

    ``sort=True`` orders the points by energy first: the bundled measured anatase
    spectrum was digitised and has three points out of order.
    """
    energies, mu = [], []
    for line, text in enumerate(read_text(path).splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        parts = text.split()
        if len(parts) < 2:
            _fail(path, line, "expected two columns: energy (eV) and absorption")
        try:
            energies.append(float(parts[0]))
            mu.append(float(parts[1]))
        except ValueError:
            _fail(path, line, f"not a number in {text.strip()[:60]!r}")
    if sort:
        energies, mu = (list(values) for values in zip(*sorted(zip(energies, mu)))) if energies else ([], [])
    _check_spectrum(path, 1, element, energies, mu)
    return energies, mu


def read_reference_spectra(data_dir: Path) -> list[SpectrumRow]:
    rows = []
    path = data_dir / "reference" / "licoo2_co_k_mp.json"
    if path.exists():
        try:
            record = json.loads(read_text(path))
        except json.JSONDecodeError as error:
            _fail(path, error.lineno, f"invalid JSON ({error.msg})")
        _check_spectrum(path, 1, record.get("absorbing_element"), record.get("energies_ev"), record.get("mu"))
        rows.append(
            SpectrumRow(
                key=("mp_id", record["material_id"]),
                element=record["absorbing_element"],
                energies_ev=record["energies_ev"],
                mu=record["mu"],
                source=Spectrum.Source.MATERIALS_PROJECT,
                release="pymatgen test files (MP XAS, site-averaged)",
                settings={"provenance": record.get("source", "")},
            )
        )
    path = data_dir / "reference" / "anatase_ti_k_feff_mp.txt"
    if path.exists():
        energies, mu = read_two_column(path, "Ti")
        rows.append(
            SpectrumRow(("mp_id", "mp-390"), "Ti", energies, mu, Spectrum.Source.FEFF, "Lightshow (FEFF, MP grid)")
        )
    path = data_dir / "measured" / "anatase_ti_k_measured.txt"
    if path.exists():
        energies, mu = read_two_column(path, "Ti", sort=True)
        rows.append(
            SpectrumRow(
                ("mp_id", "mp-390"),
                "Ti",
                energies,
                mu,
                Spectrum.Source.MEASURED,
                "Lightshow (measured)",
                settings={"note": "digitised; points sorted by energy on load"},
            )
        )
    return rows


def _parse_structure(text: str, fmt: str, where: str):
    try:  # the stored structure keeps the file's species as they are (oxidation states included)
        return read_structure(text, fmt, primitive=True, keep_oxidation_states=True)
    except StructureFileError as error:
        raise BundledDataError(f"{where}: {error}") from None


def read_prototype_matches(path: Path) -> dict[tuple, tuple]:
    """Structures of ``structures/prototype_matches.jsonl`` by material key (primitive cells)."""
    from pymatgen.core import Structure

    structures = {}
    if not path.exists():
        return structures
    for line, text in enumerate(read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
            structure = Structure.from_dict(record["structure"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            _fail(path, line, f"not a structure record ({type(error).__name__}: {error})")
        structures[("materiae_id", record["materiae_id"])] = (structure, record["structure_source"], None)
    return structures


def read_structures(data_dir: Path, compounds: dict[int, dict], progress=None) -> dict[tuple, tuple]:
    """Structures by material key: mineral CIFs from larixite's AMCSD copy, the
    Materials Project structures shipped in ``data/structures``, and the Materiae
    matches among AFLOW prototypes (``structures/prototype_matches.jsonl``)."""
    structures = read_prototype_matches(data_dir / PROTOTYPE_MATCHES)
    for mp_id, name in MP_STRUCTURE_FILES.items():
        path = data_dir / "structures" / name
        if path.exists():
            fmt = "cif" if name.endswith(".cif") else "poscar"
            structures[("mp_id", mp_id)] = (
                _parse_structure(read_text(path), fmt, str(path)),
                "materials_project",
                None,
            )
    if compounds:
        from larixite.amcsd import get_amcsd

        database = get_amcsd()
        for count, (amcsd_id, record) in enumerate(sorted(compounds.items())):
            if progress:
                progress(count, len(compounds))
            cif = database.get_cif(amcsd_id)
            structure = _parse_structure(cif.ciftext, "cif", f"AMCSD {amcsd_id}")
            structures[("materiae_id", record["materiae_id"])] = (structure, "amcsd", amcsd_id)
    return structures


def read_selection(path: Path) -> dict[int, dict]:
    """``spectra/selection.csv``: the mineral compounds, by AMCSD id."""
    compounds = {}
    for line, row in catalogues._csv_rows(path, ["amcsd_id", "materiae_id", "reduced_formula", "spacegroup"]):
        try:
            compounds[int(row["amcsd_id"])] = row
        except ValueError:
            _fail(path, line, f"amcsd_id {row['amcsd_id']!r} is not an integer")
    return compounds


def read_all(data_dir: Path, progress=None):
    """Read and check every bundled file; no database access."""
    data_dir = Path(data_dir)

    def strict(result):
        rows, rejected = result
        if rejected:
            raise BundledDataError(str(rejected[0]) + (f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""))
        return rows

    try:
        materiae = strict(catalogues.read_materiae(data_dir / "labels" / "materiae_labels.csv"))
        arsenal = [
            (path, strict(catalogues.read_arsenal(path)))
            for path in sorted((data_dir / "labels").glob("arsenal_*.txt"))
        ]
    except catalogues.CatalogueFormatError as error:
        raise BundledDataError(str(error)) from None
    spectra, compounds = [], {}
    for path in sorted((data_dir / "spectra").glob("spectra*.jsonl")):
        rows, found = read_head_start(path)
        spectra.extend(rows)
        compounds.update(found)
    selection_path = data_dir / "spectra" / "selection.csv"
    if selection_path.exists():
        for amcsd_id, row in read_selection(selection_path).items():
            compounds.setdefault(amcsd_id, row)
    spectra.extend(read_reference_spectra(data_dir))
    structures = read_structures(data_dir, compounds, progress)
    return materiae, arsenal, spectra, structures


def load_bundled(data_dir: Path = DEFAULT_DATA_DIR, progress=None) -> LoadReport:
    """Load (or re-load, idempotently) the bundled dataset.

    Parameters
    ----------
    data_dir
        The folder laid out as ``data/`` (labels/, spectra/, reference/, measured/,
        structures/).
    progress
        Optional ``callable(stage: str, done: int, total: int)``.

    Raises
    ------
    BundledDataError
        If any file is malformed; nothing is written then.
    """

    def stage(name):
        return (lambda done, total: progress(name, done, total)) if progress else None

    materiae, arsenal, spectra, structures = read_all(data_dir, stage("structures"))
    before = _counts()
    with transaction.atomic():
        catalogues.upsert_labels("materiae", materiae, MATERIAE_RELEASE, stage("materiae"))
        for path, rows in arsenal:
            catalogues.upsert_labels("arsenal", rows, ARSENAL_RELEASE, stage(path.name))
        _store_structures(structures)
        _store_spectra(spectra, stage("spectra"))
        Material.objects.refresh_has_spectra()
    after = _counts()
    return LoadReport(
        materials=after["materials"],
        spectra=after["spectra"],
        labels=after["labels"],
        created={k: after[k] - before[k] for k in after},
    )


def _counts() -> dict[str, int]:
    from materials.models import TopologyLabel

    return {
        "materials": Material.objects.count(),
        "spectra": Spectrum.objects.count(),
        "labels": TopologyLabel.objects.count(),
    }


def _material_ids(keys) -> dict[tuple, int]:
    ids = {}
    for field_name in ("materiae_id", "mp_id"):
        wanted = {value for kind, value in keys if kind == field_name}
        if wanted:
            for pk, value in Material.objects.filter(**{f"{field_name}__in": wanted}).values_list("pk", field_name):
                ids[(field_name, value)] = pk
    return ids


def _store_structures(structures: dict[tuple, tuple]) -> None:
    ids = _material_ids(structures)
    materials = Material.objects.in_bulk(ids.values())
    changed, placed = [], set()
    # A mineral CIF wins over an MP structure of the same material: the bundled FEFF
    # spectra were computed from the mineral structure.
    ordered = sorted(structures.items(), key=lambda item: item[1][1] != "amcsd")
    for key, (structure, source, amcsd_id) in ordered:
        material = materials.get(ids.get(key))
        if material is None:
            raise BundledDataError(f"structure for {key[1]}: no such material in the bundled catalogues")
        if material.pk in placed:
            continue
        placed.add(material.pk)
        as_dict = json.loads(json.dumps(structure.as_dict()))  # plain JSON types, as stored
        values = {"structure": as_dict, "structure_source": source, "nsites": len(structure)}
        if amcsd_id is not None:
            values["amcsd_id"] = amcsd_id
        if any(getattr(material, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(material, k, v)
            changed.append(material)
    Material.objects.bulk_update(changed, ["structure", "structure_source", "nsites", "amcsd_id"], batch_size=200)


def _store_spectra(rows: list[SpectrumRow], progress=None) -> None:
    ids = _material_ids({row.key for row in rows})
    existing = set(
        Spectrum.objects.filter(material_id__in=set(ids.values())).values_list("material_id", "element", "source")
    )
    new = []
    for count, row in enumerate(rows):
        if progress and count % 100 == 0:
            progress(count, len(rows))
        material_id = ids.get(row.key)
        if material_id is None:
            raise BundledDataError(f"spectrum of {row.element} for {row.key[1]}: no such material")
        if (material_id, row.element, row.source) in existing:
            continue
        existing.add((material_id, row.element, row.source))
        new.append(
            Spectrum(
                material_id=material_id,
                element=row.element,
                edge="K",
                energies_ev=row.energies_ev,
                mu=row.mu,
                source=row.source,
                settings=row.settings,
                source_release=row.release,
            )
        )
    Spectrum.objects.bulk_create(new, batch_size=500)
