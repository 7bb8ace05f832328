"""Screening a release of structures (an ICSD export): CIFs in, ranked candidates out.

Stages, each counted on the ScreeningBatch:

1. read the folder or zip (zip-bomb and size guards), parse each CIF with pymatgen;
   unparseable files are listed with the reason;
2. apply the paper's ICSD quality filter where a metadata CSV gives the fields;
3. dedupe against stored materials (same ICSD id, else same reduced formula and
   space group);
4. find spectra: stored first, then the Materials Project when an API key is
   configured and the material has an mp-id, then FEFF10 (preset ``fast``);
5. classify with the production model, rank by P(topological).
"""

from __future__ import annotations

import csv
import io
import logging
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction

from materials.chemistry import symmetry_of
from materials.models import Material, ModelVersion, Prediction, ScreeningBatch, elements_key
from mlcore.elements import ELEMENTS

logger = logging.getLogger(__name__)

MAX_MEMBERS = 20_000
MAX_UNCOMPRESSED_BYTES = 512 * 1024 * 1024
MAX_COMPRESSION_RATIO = 200  # a CIF compresses ~5-10x; far beyond that is a bomb
MAX_CIF_BYTES = 5 * 1024 * 1024
DEFAULT_PRESET = "fast"


class ReleaseError(ValueError):
    """The release as a whole cannot be read (not a zip, a zip bomb, no CIFs…)."""


@dataclass
class ReleaseFile:
    name: str
    text: str


@dataclass
class Release:
    cifs: list[ReleaseFile] = field(default_factory=list)
    metadata_csv: str | None = None
    rejected: list[dict] = field(default_factory=list)


def _decode(name: str, data: bytes, rejected: list[dict]) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("latin-1")  # old ICSD exports are Latin-1
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
            rejected.append({"file": name, "reason": "not text (cannot decode)"})
            return None


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One member's bytes; a corrupt or unsupported member makes the whole zip unreadable."""
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError, OSError) as error:
        raise ReleaseError(f"{path.name}: cannot read {info.filename[:100]} ({error})") from None


def read_release(path: Path) -> Release:
    """Read CIFs (and an optional metadata CSV) from a folder or a zip file.

    Raises
    ------
    ReleaseError
        For a file that is neither a folder nor a zip, a zip bomb, or no CIF at all.
    """
    path = Path(path)
    release = Release()
    if path.is_dir():
        files = [p for p in sorted(path.rglob("*")) if p.is_file()]
        members = [(p.relative_to(path).as_posix(), p.stat().st_size, p.read_bytes) for p in files]
    elif zipfile.is_zipfile(path):
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise ReleaseError(f"{path.name}: not a readable zip file ({error})") from None
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(infos) > MAX_MEMBERS:
            raise ReleaseError(f"{path.name}: {len(infos)} files in the zip; at most {MAX_MEMBERS} are accepted")
        total = sum(info.file_size for info in infos)
        compressed = sum(info.compress_size for info in infos) or 1
        if total > MAX_UNCOMPRESSED_BYTES or total / compressed > MAX_COMPRESSION_RATIO:
            raise ReleaseError(
                f"{path.name}: refusing to unpack {total} bytes from {compressed} compressed "
                f"(limit {MAX_UNCOMPRESSED_BYTES} bytes, ratio {MAX_COMPRESSION_RATIO}); this looks like a zip bomb"
            )
        encrypted = [info.filename for info in infos if info.flag_bits & 0x1]
        if encrypted:
            raise ReleaseError(f"{path.name}: {encrypted[0][:100]} is encrypted; send an unencrypted zip")
        members = [(info.filename, info.file_size, lambda i=info: _read_member(path, archive, i)) for info in infos]
    else:
        raise ReleaseError(f"{path.name}: not a folder or a zip file")
    for name, size, read in members:
        lower = name.lower()
        if "__macosx" in lower or Path(name).name.startswith("."):
            continue
        if lower.endswith(".csv") and release.metadata_csv is None:
            release.metadata_csv = _decode(name, read(), release.rejected)
        elif lower.endswith(".cif"):
            if size > MAX_CIF_BYTES:
                release.rejected.append({"file": name, "reason": f"CIF of {size} bytes exceeds {MAX_CIF_BYTES}"})
                continue
            text = _decode(name, read(), release.rejected)
            if text is not None:
                release.cifs.append(ReleaseFile(name, text))
        else:
            release.rejected.append({"file": name, "reason": "not a .cif or .csv file"})
    if not release.cifs:
        raise ReleaseError(f"{path.name}: no .cif files found")
    return release


@dataclass
class ParsedStructure:
    file: str
    structure: object
    icsd_id: int | None
    space_group_number: int


ICSD_CODE = re.compile(r"_database_code_ICSD\s+(\d+)")
ICSD_FILENAME = re.compile(r"(?:icsd[_-]?)?(\d+)", re.IGNORECASE)


def parse_cif(item: ReleaseFile) -> ParsedStructure:
    """Parse one CIF into a primitive structure with its space group.

    Raises
    ------
    ValueError
        With the reason the CIF cannot be used.
    """
    from pymatgen.io.cif import CifParser
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            structures = CifParser.from_str(item.text).parse_structures(primitive=True)
        except Exception as error:  # pymatgen raises many types for malformed CIFs
            raise ValueError(f"cannot parse CIF: {str(error).splitlines()[0][:200]}") from None
    if not structures:
        raise ValueError("the CIF holds no structure")
    structure = structures[0]
    unknown = sorted({getattr(s, "symbol", str(s)) for s in structure.composition.elements} - set(ELEMENTS))
    if unknown:
        raise ValueError(f"unknown element(s) {', '.join(unknown)}: not chemical elements from H to Pu")
    structure.remove_oxidation_states()  # ICSD CIFs name species (Co3+); the elements are what is stored
    if not structure.is_ordered:
        raise ValueError("partial occupancy (disordered structure); FEFF needs an ordered structure")
    try:
        number = SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number()
    except Exception as error:  # spglib failures surface as several types
        raise ValueError(f"symmetry analysis failed: {error}") from None
    # The ICSD collection code: from the CIF, else from a file name like "icsd_012345.cif".
    match = ICSD_CODE.search(item.text) or ICSD_FILENAME.fullmatch(Path(item.name).stem)
    icsd_id = int(match.group(1)) if match else None
    return ParsedStructure(file=item.name, structure=structure, icsd_id=icsd_id, space_group_number=number)


# --- The pipeline ---------------------------------------------------------------------


def create_batch(name: str, source: str, upload=None, user=None) -> ScreeningBatch:
    batch = ScreeningBatch(name=name, source=source, created_by=user)
    if upload is not None:
        batch.upload.save(Path(upload.name).name, upload, save=False)
    batch.save()
    return batch


def start_screening_batch(batch_id: int) -> None:
    """Enqueue the screening of a stored batch once the transaction commits."""
    from materials.tasks.base import enqueue_on_commit
    from materials.tasks.classify import screen_release

    enqueue_on_commit(screen_release, batch_id)


def release_path(batch: ScreeningBatch) -> Path:
    if batch.upload:
        return Path(batch.upload.path)
    return Path(batch.source)


def screen_batch(batch_id: int) -> dict:
    """Run every stage for one batch; returns the stage counts (also stored)."""
    batch = ScreeningBatch.objects.get(pk=batch_id)
    counts: dict[str, int] = {}
    rejected: list[dict] = []

    def stage(name: str, fraction: float, **new_counts) -> None:
        counts.update(new_counts)
        ScreeningBatch.objects.filter(pk=batch.pk).update(stage_counts=dict(counts), rejected=list(rejected))
        batch.report_progress(fraction, name)

    release = read_release(release_path(batch))
    rejected.extend(release.rejected)
    parsed: list[ParsedStructure] = []
    for item in release.cifs:
        try:
            parsed.append(parse_cif(item))
        except ValueError as error:
            rejected.append({"file": item.name, "reason": str(error)})
    stage(
        "parsed",
        0.1,
        files=len(release.cifs) + len(release.rejected),
        parsed=len(parsed),
        unparseable=len(release.cifs) - len(parsed),
    )

    passed = apply_quality_filter(parsed, release.metadata_csv, rejected)
    stage("quality filter", 0.2, quality_checked=len(parsed), passed_quality=len(passed))

    materials, existing = store_materials(passed)
    batch.materials.add(*materials)
    stage("deduplicated", 0.3, existing_materials=existing, new_materials=len(materials) - existing)

    found = find_spectra(materials, rejected, lambda f, m: stage(m, 0.3 + 0.6 * f))
    stage("spectra", 0.9, **found)

    version = ModelVersion.objects.production()
    if version is None:
        raise ValueError("no production model: train and promote one before screening")
    from materials.inference import classifiable_materials, classify_ids

    ids = list(classifiable_materials(version).filter(pk__in=[m.pk for m in materials]).values_list("id", flat=True))
    done = set(
        Prediction.objects.filter(model_version=version, material_id__in=ids).values_list("material_id", flat=True)
    )
    classify_ids(version, [pk for pk in ids if pk not in done])
    ScreeningBatch.objects.filter(pk=batch.pk).update(model_version=version)
    stage("classified", 1.0, classified=len(ids))
    return counts


def apply_quality_filter(parsed: list[ParsedStructure], metadata_csv: str | None, rejected: list[dict]):
    """The paper's ICSD quality filter, for entries the metadata CSV describes."""
    if not metadata_csv:
        return parsed
    from materials.icsd_quality import metadata_by_icsd_id, passes_quality_filter

    metadata = metadata_by_icsd_id(metadata_csv)
    kept = []
    for entry in parsed:
        row = metadata.get(entry.icsd_id) if entry.icsd_id is not None else None
        if row is None:
            kept.append(entry)  # no metadata: nothing to filter on
            continue
        ok, reason = passes_quality_filter(row)
        if ok:
            kept.append(entry)
        else:
            rejected.append({"file": entry.file, "reason": f"ICSD quality filter: {reason}"})
    return kept


@transaction.atomic
def store_materials(parsed: list[ParsedStructure]) -> tuple[list[Material], int]:
    """Materials for the parsed structures: existing ones reused, new ones created."""
    by_icsd: dict[int, int] = {}
    for pk, icsd_ids in Material.objects.exclude(icsd_ids=[]).values_list("pk", "icsd_ids").iterator(chunk_size=10000):
        for icsd in icsd_ids or []:
            by_icsd.setdefault(icsd, pk)
    materials: dict[int, Material] = {}
    existing = 0
    for entry in parsed:
        composition = entry.structure.composition
        reduced = composition.reduced_formula
        pk = by_icsd.get(entry.icsd_id) if entry.icsd_id is not None else None
        match = (
            Material.objects.filter(pk=pk).first()
            if pk
            else Material.objects.filter(reduced_formula=reduced, space_group_number=entry.space_group_number)
            .order_by("-has_spectra", "id")
            .first()
        )
        if match is not None:
            if match.structure is None:
                match.structure = entry.structure.as_dict()
                match.structure_source = "icsd"
                match.nsites = len(entry.structure)
                match.save(update_fields=["structure", "structure_source", "nsites"])
            if match.pk not in materials:
                existing += 1
            materials[match.pk] = match
            continue
        symmetry = symmetry_of(entry.space_group_number)
        elements = sorted(str(el) for el in composition.elements)
        material = Material.objects.create(
            icsd_ids=[entry.icsd_id] if entry.icsd_id is not None else [],
            formula=composition.formula.replace(" ", ""),
            reduced_formula=reduced,
            elements=elements,
            elements_key=elements_key(elements),
            nsites=len(entry.structure),
            structure=entry.structure.as_dict(),
            structure_source="icsd",
            space_group_number=symmetry.number,
            space_group_symbol=symmetry.symbol,
            point_group=symmetry.point_group,
            crystal_system=symmetry.crystal_system,
            source=Material.Source.ICSD,
        )
        materials[material.pk] = material
        if entry.icsd_id is not None:
            by_icsd[entry.icsd_id] = material.pk
    return list(materials.values()), existing


def find_spectra(materials: list[Material], rejected: list[dict], progress) -> dict[str, int]:
    """Make sure every material has a spectrum of each element: stored, MP, or FEFF."""
    from materials.spectra_compute import store_result

    counts = {"spectra_stored": 0, "spectra_from_mp": 0, "spectra_computed": 0, "spectra_failed": 0}
    jobs = []
    for material in materials:
        have = set(material.spectra.values_list("element", flat=True))
        missing = [element for element in material.elements if element not in have]
        counts["spectra_stored"] += len(have & set(material.elements))
        if missing and settings.MP_API_KEY and material.mp_id:
            missing = _spectra_from_mp(material, missing, counts, rejected)
        jobs.extend((material, element) for element in missing)
    for done, (material, element, outcome) in enumerate(feff_results(jobs), start=1):
        progress(done / len(jobs), f"FEFF: {material.reduced_formula} {element} K edge ({done} of {len(jobs)})")
        if isinstance(outcome, Exception):
            counts["spectra_failed"] += 1
            rejected.append({"file": str(material), "reason": f"{element} K edge: {outcome}"})
        else:
            store_result(material, outcome, DEFAULT_PRESET)
            counts["spectra_computed"] += 1
    Material.objects.filter(pk__in=[m.pk for m in materials]).refresh_has_spectra()
    return counts


def feff_results(jobs: list[tuple[Material, str]]):
    """Run FEFF for each (material, element), yielding ``(material, element, result or error)``
    as each finishes.

    FEFF is single-threaded, so with ``SCREEN_FEFF_PROCESSES`` > 1 the jobs run in that
    many spawned processes (FEFF redirects the process's own stdout, so threads would
    not do). Inside a Celery pool process (a daemon, which may not have children) they
    run one by one: there, more workers on the ``feff`` queue are the way to scale.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from materials import feff
    from materials.spectra_compute import structure_of

    runnable = []
    for material, element in jobs:
        try:
            runnable.append((material, element, structure_of(material)))
        except feff.FeffError as error:
            yield material, element, error
    processes = min(settings.SCREEN_FEFF_PROCESSES, len(runnable))
    if processes <= 1 or multiprocessing.current_process().daemon:
        for material, element, structure in runnable:
            try:
                yield material, element, feff.compute_k_edge_xanes(structure, element, DEFAULT_PRESET, sites="all")
            except feff.FeffError as error:
                yield material, element, error
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process holding TensorFlow threads and sockets
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        futures = {
            pool.submit(feff.compute_k_edge_xanes, structure, element, DEFAULT_PRESET, sites="all"): (material, element)
            for material, element, structure in runnable
        }
        for future in as_completed(futures):
            material, element = futures[future]
            try:
                yield material, element, future.result()
            except feff.FeffError as error:
                yield material, element, error


def _spectra_from_mp(material: Material, missing: list[str], counts: dict, rejected: list[dict]) -> list[str]:
    from materials.ingest_mp import ingest_material_spectra

    try:
        ingest_material_spectra(material.mp_id)
    except Exception as error:  # the network or MP may fail; FEFF is the fallback
        rejected.append({"file": str(material), "reason": f"Materials Project: {error}"})
        return missing
    have = set(material.spectra.values_list("element", flat=True))
    counts["spectra_from_mp"] += len(set(missing) & have)
    return [element for element in missing if element not in have]


CANDIDATE_COLUMNS = [
    "rank",
    "material_id",
    "formula",
    "space_group",
    "icsd_ids",
    "mp_id",
    "probability",
    "predicted_class",
    "label",
]


def candidate_rows(batch: ScreeningBatch):
    """The batch's materials ranked by P(topological) from the batch's model."""
    predictions = (
        Prediction.objects.filter(model_version_id=batch.model_version_id, material__screenings=batch)
        .select_related("material")
        .order_by("-probability", "material_id")
    )
    for rank, prediction in enumerate(predictions, start=1):
        material = prediction.material
        yield {
            "rank": rank,
            "material_id": material.pk,
            "formula": material.reduced_formula,
            "space_group": material.space_group_number,
            "icsd_ids": " ".join(map(str, material.icsd_ids or [])),
            "mp_id": material.mp_id or "",
            "probability": round(prediction.probability, 6),
            "predicted_class": prediction.predicted_class,
            "label": material.label,
        }


def candidates_csv(batch: ScreeningBatch) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CANDIDATE_COLUMNS)
    writer.writeheader()
    writer.writerows(candidate_rows(batch))
    return buffer.getvalue()
