"""A screening's ranking as the page, the API and the CSV show it: its rows best first, each
with the calibrated probability and decision of the model that gave it (``materials.learning.ranking``
ranks; this module names the columns, the batch's models and the stage counts)."""

from __future__ import annotations

import csv
import io

from materials.learning.ranking import RankFilter, RankQuery, screening_rule_annotations
from materials.models import ScreeningBatch

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
    "calibrated_probability",
    "decision",
    "reasons",
    "reason",
]
#: A screening's rows, by default: every ranked material, labelled or not.
ALL_ROWS = RankFilter(label="all")


def batches():
    """ScreeningBatch rows carrying their two models' decision rules (for ``RankQuery``)."""
    return ScreeningBatch.objects.annotate(**screening_rule_annotations())


def ranked(batch: ScreeningBatch, rank_filter: RankFilter = ALL_ROWS) -> RankQuery:
    """The batch's ranked rows (``batch`` from ``batches()``)."""
    return RankQuery.for_screening(batch, rank_filter)


def candidate_values(query: RankQuery):
    """``COLUMNS`` tuples of every row of ``query``, streamed."""
    for row in query.iterate(chunk_size=5000):
        yield (
            row.rank,
            row.material_id,
            row.reduced_formula,
            row.space_group_number,
            " ".join(row.files),
            " ".join(str(i) for i in row.icsd_ids),
            row.amcsd_id or "",
            row.mp_id or "",
            row.label_out,
            row.stage,
            _round(row.prior_probability),
            _round(row.spectral_probability),
            _round(row.probability),
            _round(row.calibrated_probability),
            row.decision,
            row.reason_codes,
            row.reason,
        )


def _round(value):
    return None if value is None else round(value, 6)


def candidates_csv(batch: ScreeningBatch) -> str:
    """Every ranked row of ``batch`` as CSV (``batch`` from ``batches()``, or any: re-read then)."""
    if not hasattr(batch, "spectral_rule_threshold"):
        batch = batches().get(pk=batch.pk)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in candidate_values(ranked(batch)):
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
