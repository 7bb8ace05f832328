"""Stage 1: every structure of a release gets the composition + symmetry prior.

Parsing runs in ``SCREEN_PARSE_PROCESSES`` spawned processes (each reads its own
chunk of the release: AMCSD entries straight from larixite's database); storing is
bulk: per chunk one query finds existing materials by AMCSD id, one by reduced
formula (then space group), one ``bulk_create`` stores the new ones, one their
screening rows. ICSD ids are matched against one read of every stored ICSD id. The
prior predicts every material of the release in one pass (``classify_ids``) and one
UPDATE copies its probabilities onto the rows.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction
from django.db.models import F, OuterRef, Subquery
from django.db.models.functions import Coalesce

from materials.models import Material, ModelVersion, Prediction, ScreeningBatch, ScreeningRow
from materials.screening.release import AMCSD_SOURCE, amcsd_ids, amcsd_version, read_release
from materials.screening.structures import StructureSummary, summarise_amcsd, summarise_files

PARSE_CHUNK = 200
STORE_CHUNK = 2000
MAX_FORMULA_LENGTH = 200  # Material.formula

DISORDERED = "disordered (partial occupancy): FEFF needs one atom per position"
HYDROGEN = "hydrogen-bearing: H positions are rarely refined and H has no K edge FEFF can compute"


class NoPriorError(RuntimeError):
    """No type-only model to rank with."""

    def __init__(self):
        super().__init__(
            "no composition + symmetry prior: train one first with "
            "`python manage.py train --kind type-only` (screening ranks every structure with it)"
        )


@dataclass
class Parsed:
    """What parsing a release gave: summaries, files set aside, and counts."""

    summaries: list[StructureSummary] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    files: int = 0
    metadata_csv: str | None = None


# --- Parsing ----------------------------------------------------------------------------------


def parse_release(location: str, processes: int = 1, progress: Callable[[int, int], None] | None = None) -> Parsed:
    """Summarise every structure of a release (``AMCSD_SOURCE``, a folder or a zip).

    With ``processes`` > 1 (and outside a daemon process such as a Celery pool
    worker) chunks are parsed in that many spawned processes.
    """
    parsed = Parsed()
    if location == AMCSD_SOURCE:
        ids = amcsd_ids()
        parsed.files = len(ids)
        work, chunks = summarise_amcsd, [ids[i : i + PARSE_CHUNK] for i in range(0, len(ids), PARSE_CHUNK)]
    else:
        release = read_release(Path(location))
        parsed.files = len(release.cifs) + len(release.rejected)
        parsed.rejected.extend(release.rejected)
        parsed.metadata_csv = release.metadata_csv
        cifs = release.cifs
        work, chunks = summarise_files, [cifs[i : i + PARSE_CHUNK] for i in range(0, len(cifs), PARSE_CHUNK)]
    processes = min(processes, len(chunks))
    done, total = 0, sum(map(len, chunks))
    if processes <= 1 or multiprocessing.current_process().daemon:
        results = map(work, chunks)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(work, chunks)
    try:
        for chunk, (summaries, rejected) in zip(chunks, results, strict=True):
            parsed.summaries.extend(summaries)
            parsed.rejected.extend(rejected)
            done += len(chunk)
            if progress:
                progress(done, total)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return parsed


def apply_quality_filter(summaries: list[StructureSummary], metadata_csv: str | None, rejected: list[dict]):
    """The paper's ICSD quality filter, for entries the metadata CSV describes."""
    if not metadata_csv:
        return summaries
    from materials.ingest.icsd_quality import metadata_by_icsd_id, passes_quality_filter

    metadata = metadata_by_icsd_id(metadata_csv)
    kept = []
    for entry in summaries:
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


# --- Storing -----------------------------------------------------------------------------------


def feff_blocker(summary: StructureSummary) -> str:
    if not summary.ordered:
        return DISORDERED
    if summary.has_hydrogen:
        return HYDROGEN
    return ""


def group_by_compound(summaries: list[StructureSummary]) -> list[list[StructureSummary]]:
    """Entries of one compound (reduced formula and space group) together; the entry
    FEFF would use (ordered, no hydrogen, fewest sites) first."""
    groups: dict[tuple[str, int], list[StructureSummary]] = {}
    for summary in summaries:
        groups.setdefault((summary.reduced_formula, summary.space_group_number), []).append(summary)
    return [sorted(members, key=lambda s: (bool(feff_blocker(s)), s.nsites, s.file)) for members in groups.values()]


def _icsd_index(groups) -> dict[int, int]:
    """Stored material of each ICSD id (one query, only when the release names ICSD ids)."""
    if not any(s.icsd_id for members in groups for s in members):
        return {}
    index: dict[int, int] = {}
    for pk, ids in Material.objects.exclude(icsd_ids=[]).values_list("pk", "icsd_ids").iterator(chunk_size=10000):
        for icsd in ids or []:
            index.setdefault(icsd, pk)
    return index


def store_chunk(
    batch: ScreeningBatch,
    groups: list[list[StructureSummary]],
    icsd_index: dict[int, int],
    source: str,
    release: str,
) -> dict[str, int]:
    """Materials and screening rows for one chunk of compounds, in bulk."""
    amcsd = [s.amcsd_id for members in groups for s in members if s.amcsd_id is not None]
    by_amcsd = dict(Material.objects.filter(amcsd_id__in=amcsd).values_list("amcsd_id", "pk")) if amcsd else {}
    by_compound: dict[tuple[str, int], int] = {}
    formulas = sorted({members[0].reduced_formula for members in groups})
    for pk, formula, number in (
        Material.objects.filter(reduced_formula__in=formulas)
        .order_by("-has_spectra", "id")
        .values_list("pk", "reduced_formula", "space_group_number")
    ):
        by_compound.setdefault((formula, number), pk)
    matched: list[tuple[list[StructureSummary], int]] = []
    new: list[tuple[list[StructureSummary], Material]] = []
    for members in groups:
        first = members[0]
        pk = next((by_amcsd[s.amcsd_id] for s in members if s.amcsd_id in by_amcsd), None)
        pk = pk or next((icsd_index[s.icsd_id] for s in members if s.icsd_id in icsd_index), None)
        pk = pk or by_compound.get((first.reduced_formula, first.space_group_number))
        if pk is not None:
            matched.append((members, pk))
            continue
        material = Material.new(
            first.space_group_number,
            amcsd_id=next((s.amcsd_id for s in members if s.amcsd_id is not None), None),
            icsd_ids=sorted({s.icsd_id for s in members if s.icsd_id is not None}),
            formula=first.formula,
            reduced_formula=first.reduced_formula,
            elements=first.elements,
            source=source,
            source_release=release,
        )
        new.append((members, material))
    with transaction.atomic():
        created = Material.objects.bulk_create([material for _, material in new], batch_size=1000)
        pairs = matched + [(members, material.pk) for (members, _), material in zip(new, created, strict=True)]
        ScreeningRow.objects.bulk_create(
            [
                ScreeningRow(
                    batch=batch,
                    material_id=pk,
                    files=sorted(s.file for s in members),
                    sites=members[0].nsites,
                    feff_blocker=feff_blocker(members[0]),
                )
                for members, pk in pairs
            ],
            batch_size=1000,
            ignore_conflicts=True,  # a resumed screening keeps its rows
        )
        through = ScreeningBatch.materials.through
        through.objects.bulk_create(
            [through(screeningbatch_id=batch.pk, material_id=pk) for _, pk in pairs],
            batch_size=1000,
            ignore_conflicts=True,
        )
    return {"existing_materials": len(matched), "new_materials": len(created)}


def store_release(
    batch: ScreeningBatch, summaries: list[StructureSummary], rejected: list[dict], progress=None
) -> dict[str, int]:
    """Store the release's materials and rows in chunks; returns the counts."""
    kept = []
    for summary in summaries:
        if len(summary.formula) > MAX_FORMULA_LENGTH:
            rejected.append({"file": summary.file, "reason": f"formula of {len(summary.formula)} characters"})
        else:
            kept.append(summary)
    groups = group_by_compound(kept)
    icsd_index = _icsd_index(groups)
    amcsd = batch.source == AMCSD_SOURCE
    source = Material.Source.AMCSD if amcsd else Material.Source.ICSD
    release = amcsd_version() if amcsd else f"screening release {batch.source}"[:200]
    counts = {"compounds": len(groups), "existing_materials": 0, "new_materials": 0}
    for start in range(0, len(groups), STORE_CHUNK):
        for key, value in store_chunk(batch, groups[start : start + STORE_CHUNK], icsd_index, source, release).items():
            counts[key] += value
        if progress:
            progress(min(start + STORE_CHUNK, len(groups)), len(groups))
    return counts


# --- The prior --------------------------------------------------------------------------------


def prior_model() -> ModelVersion:
    prior = ModelVersion.objects.prior()
    if prior is None:
        raise NoPriorError()
    return prior


def apply_prior(batch: ScreeningBatch, prior: ModelVersion) -> int:
    """Predict every row's material with the prior (what is not predicted yet) and copy
    the probabilities onto the rows; returns how many predictions were written."""
    from materials.learning.inference import chunked, classify_ids

    ids = list(batch.rows.values_list("material_id", flat=True))
    written = 0
    for chunk in chunked(ids, 10_000):
        done = set(
            Prediction.objects.filter(model_version=prior, material_id__in=chunk).values_list("material_id", flat=True)
        )
        written += classify_ids(prior, [pk for pk in chunk if pk not in done])
    prediction = Prediction.objects.filter(model_version=prior, material_id=OuterRef("material_id"))
    batch.rows.update(prior_probability=Subquery(prediction.values("probability")[:1]))
    batch.rows.update(probability=Coalesce(F("spectral_probability"), F("prior_probability")))
    return written
