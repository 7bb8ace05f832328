"""A screening's ranking: its rows, best first, as the page, the API and the CSV show them."""

from __future__ import annotations

import csv
import io

from django.db.models import F

from materials.models import ScreeningBatch, ScreeningRow

COLUMNS = [
    "rank",
    "material_id",
    "formula",
    "space_group",
    "files",
    "icsd_ids",
    "amcsd_id",
    "mp_id",
    "label",
    "stage",
    "prior_probability",
    "spectral_probability",
    "probability",
    "reason",
]
FIELDS = [
    "material_id",
    "material__reduced_formula",
    "material__space_group_number",
    "files",
    "material__icsd_ids",
    "material__amcsd_id",
    "material__mp_id",
    "material__label",
    "stage",
    "prior_probability",
    "spectral_probability",
    "probability",
    "reason",
]


def ranked_rows(
    batch: ScreeningBatch,
    *,
    stage: str | None = None,
    label: str | None = None,
    probability_min=None,
    ranked_only: bool = False,
):
    """The batch's rows by the probability they are ranked by (highest first; rows
    without one last, or left out with ``ranked_only``, which the ``screening_row_rank``
    index then serves), then id. ``label`` is "topological", "trivial" or "unlabelled"."""
    rows = ScreeningRow.objects.filter(batch=batch)
    if stage:
        rows = rows.filter(stage=stage)
    if label:
        rows = rows.filter(material__label="" if label == "unlabelled" else label)
    if probability_min is not None:
        rows = rows.filter(probability__gte=probability_min)
    if ranked_only:
        return rows.exclude(probability=None).order_by("-probability", "id")
    return rows.order_by(F("probability").desc(nulls_last=True), "id")


def ranking_values(rows):
    """``COLUMNS`` tuples of ``rows`` (from ``ranked_rows``), ranked from 1."""
    for rank, values in enumerate(rows.values_list(*FIELDS).iterator(chunk_size=5000), start=1):
        (pk, formula, number, files, icsd, amcsd, mp_id, label, stage, prior, spectral, probability, reason) = values
        yield (
            rank,
            pk,
            formula,
            number,
            " ".join(files or []),
            " ".join(str(i) for i in (icsd or [])),
            amcsd or "",
            mp_id or "",
            label or "unlabelled",
            stage,
            _round(prior),
            _round(spectral),
            _round(probability),
            reason,
        )


def _round(value):
    return None if value is None else round(value, 6)


def candidates_csv(batch: ScreeningBatch) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in ranking_values(ranked_rows(batch)):
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()


#: Stage counts as the page names them, in the order it lists them.
STAGE_LABELS = {
    "files": "files in the release",
    "parsed": "structures parsed",
    "unparseable": "files that could not be used",
    "passed_quality": "passed the ICSD quality filter",
    "disordered": "disordered structures (prior only)",
    "hydrogen": "hydrogen-bearing structures (prior only)",
    "compounds": "compounds (formula + space group)",
    "existing_materials": "already in the database",
    "new_materials": "new materials stored",
    "known": "known: a catalogue labels them",
    "ranked": "stage 1: ranked by the prior",
    "feff_budget": "stage 2: FEFF budget (materials)",
    "feff_materials": "stage 2: materials given FEFF jobs",
    "feff_jobs": "stage 2: FEFF jobs (material, element)",
    "feff_jobs_done": "stage 2: FEFF jobs done",
    "feff_jobs_failed": "stage 2: FEFF jobs failed",
    "spectral": "classified from spectra",
    "prior_only": "ranked by the prior only",
}


def stage_rows(counts: dict) -> list[tuple[str, str, int]]:
    """``(key, label, count)`` of a batch's stage counts, in ``STAGE_LABELS`` order."""
    ordered = [key for key in STAGE_LABELS if key in counts] + [key for key in counts if key not in STAGE_LABELS]
    return [(key, STAGE_LABELS.get(key, key.replace("_", " ")), counts[key]) for key in ordered]


def stage_two(counts: dict) -> dict:
    """Stage 2's progress: FEFF jobs finished of all, for the page's second bar."""
    jobs = counts.get("feff_jobs", 0)
    finished = counts.get("feff_jobs_done", 0) + counts.get("feff_jobs_failed", 0)
    return {"jobs": jobs, "finished": finished, "fraction": round(finished / jobs, 4) if jobs else 0.0}
