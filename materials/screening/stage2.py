"""Stage 2: FEFF spectra for a budgeted shortlist, then the spectral model.

**Which materials get FEFF** (``plan_feff``): rows still at the prior stage whose
structure FEFF can take (ordered, no hydrogen, at most ``feff_max_sites`` (the batch's) sites
in the file's cell), that no catalogue labels, whose spectra are not all stored, and
whose elements all have K-edge data and a window in the spectral model; among them the
**most uncertain prior first** (smallest |P − threshold|), then the higher prior, then
the smaller cell (cheaper FEFF), then the row id. The first ``feff_budget`` of them
are planned; a re-run counts materials already planned against the budget.

Each planned material gets one ``Job`` per element that lacks a K-edge spectrum
(``parameters = {material_id, element, preset, screening}``), run by the ``feff``
queue's ``screening_spectrum`` task: ``compute_spectrum`` (skips a spectrum already
stored; acks late, so a killed worker's job is delivered again), then
``settle_feff_job`` here, which is idempotent: once every job of a material is done
and its spectra are complete, the spectral model classifies it and the row moves to
the spectral stage; once no job of the batch is left, the batch is done.
Materials whose spectra are already stored are classified at once, for free.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, FloatField, OuterRef, Subquery, Value
from django.db.models.functions import Abs, Concat

from materials.models import Job, Material, ModelVersion, Prediction, ScreeningBatch, ScreeningRow, Status
from materials.screening.processes import django_on_database
from materials.screening.release import read_files
from materials.screening.structures import parse_cif
from materials.spectra import feff
from materials.spectra.spectra_compute import missing_spectra

logger = logging.getLogger(__name__)

PRESET = "fast"
Stage = ScreeningRow.Stage
OUTSIDE_BUDGET = "prior only: outside the FEFF budget"
NO_SPECTRAL_MODEL = "spectra complete, but the production model is the prior: promote a spectral model"


def spectral_model() -> ModelVersion | None:
    """The production model when it reads spectra (stage 2's classifier), else None."""
    production = ModelVersion.objects.production()
    if production is None or production.kind == ModelVersion.Kind.TYPE_ONLY:
        return None
    return production


def model_elements(version: ModelVersion | None) -> set[str] | None:
    """Elements the spectral model has a fitted window for (None: no restriction)."""
    if version is None:
        return None
    from materials.learning.inference import load_bundle

    preprocessor = load_bundle(version).preprocessor
    windows = getattr(preprocessor, "windows_ev_", None)
    return set(windows) if windows else None


def batch_jobs(batch: ScreeningBatch):
    return Job.objects.filter(kind=Job.Kind.COMPUTE_SPECTRA, parameters__screening=batch.pk)


def classify_rows(batch: ScreeningBatch, version: ModelVersion, material_ids: list[int]) -> int:
    """Spectral predictions for materials with complete spectra; their rows move to the
    spectral stage. Returns how many rows moved."""
    from materials.learning.inference import classify_ids

    if not material_ids:
        return 0
    done = set(
        Prediction.objects.filter(model_version=version, material_id__in=material_ids).values_list(
            "material_id", flat=True
        )
    )
    classify_ids(version, [pk for pk in material_ids if pk not in done])
    prediction = Prediction.objects.filter(model_version=version, material_id=OuterRef("material_id"))
    rows = batch.rows.filter(material_id__in=material_ids, material__has_spectra=True)
    moved = rows.update(
        stage=Stage.SPECTRAL,
        spectral_probability=Subquery(prediction.values("probability")[:1]),
        reason=f"classified from spectra by {version}"[:300],
    )
    rows.update(probability=F("spectral_probability"))
    return moved


def classify_stored(batch: ScreeningBatch, version: ModelVersion | None) -> int:
    """Rows whose material already has complete spectra: classified now, no FEFF."""
    if version is None:
        return 0
    ids = list(
        batch.rows.filter(material__has_spectra=True)
        .exclude(stage=Stage.SPECTRAL)
        .values_list("material_id", flat=True)
    )
    return classify_rows(batch, version, ids)


def _candidates(batch: ScreeningBatch, threshold: float):
    return (
        batch.rows.filter(stage=Stage.PRIOR, feff_blocker="", material__label="", material__has_spectra=False)
        .filter(sites__lte=batch.feff_max_sites)
        .exclude(prior_probability=None)
        .annotate(uncertainty=Abs(F("prior_probability") - Value(threshold, output_field=FloatField())))
        .order_by("uncertainty", "-prior_probability", "sites", "id")
        .select_related("material")
    )


def plan_feff(batch: ScreeningBatch, location: str, prior: ModelVersion, version: ModelVersion | None) -> list[int]:
    """Choose the budget's materials, give each missing K edge a job; returns the ids of
    the batch's jobs not finished yet (new ones and ones a lost worker left)."""
    jobs = batch_jobs(batch)
    planned = {job.parameters["material_id"] for job in jobs.only("parameters")}
    remaining = batch.feff_budget - len(planned)
    known_elements = model_elements(version)
    offset = 0
    while remaining > 0:
        chunk = list(_candidates(batch, prior.threshold).exclude(material_id__in=planned)[offset : offset + 50])
        if not chunk:
            break
        chosen, skipped = [], 0
        for row in chunk:
            blocker = _element_blocker(row.material.elements, known_elements)
            if blocker:  # stays a candidate for another model: skip it in this pass
                row.reason = f"prior only: {blocker}"[:300]
                row.save(update_fields=["reason"])
                skipped += 1
            elif len(chosen) < remaining:
                chosen.append(row)
        chosen = _with_structures(batch, location, chosen)  # rows FEFF cannot take leave the candidates
        _create_jobs(batch, chosen)
        planned.update(row.material_id for row in chosen)
        remaining -= len(chosen)
        offset += skipped
    _write_reasons(batch)
    return list(batch_jobs(batch).exclude(status=Status.DONE).order_by("id").values_list("id", flat=True))


def _element_blocker(elements: list[str], known: set[str] | None) -> str:
    from pymatgen.core import Element

    without_edge = [e for e in elements if not feff.MIN_ABSORBER_Z <= Element(e).Z <= feff.MAX_FEFF_Z]
    if without_edge:
        return f"no K-edge data for {', '.join(without_edge)}"
    unseen = sorted(set(elements) - known) if known is not None else []
    if unseen:
        return f"the spectral model has never seen {', '.join(unseen)}"
    return ""


def _with_structures(batch: ScreeningBatch, location: str, rows: list[ScreeningRow]) -> list[ScreeningRow]:
    """Rows whose material has (or now gets, parsed from the release) an ordered
    structure FEFF accepts; the others get the reason."""
    need = [row for row in rows if row.material.structure is None]
    texts = read_files(location, [row.files[0] for row in need]) if need else {}
    kept = []
    for row in rows:
        material = row.material
        try:
            if material.structure is None:
                from materials.screening.release import ReleaseFile

                name = row.files[0]
                if name not in texts:
                    raise ValueError(f"{name} is no longer in the release")
                structure = parse_cif(ReleaseFile(name, texts[name])).structure
                if len(structure) > feff.MAX_PRIMITIVE_SITES:
                    raise ValueError(
                        f"{len(structure)} sites in the primitive cell (FEFF limit {feff.MAX_PRIMITIVE_SITES})"
                    )
                material.structure, material.structure_source, material.nsites = (
                    structure.as_dict(),
                    "cif",
                    len(structure),
                )
                material.save(update_fields=["structure", "structure_source", "nsites"])
        except ValueError as error:
            row.feff_blocker = str(error)[:200]
            row.reason = f"prior only: {error}"[:300]
            row.save(update_fields=["feff_blocker", "reason"])
            continue
        kept.append(row)
    return kept


def _create_jobs(batch: ScreeningBatch, rows: list[ScreeningRow]) -> None:
    if not rows:
        return
    missing = missing_spectra([row.material for row in rows])
    with transaction.atomic():
        Job.objects.bulk_create(
            [
                Job(
                    kind=Job.Kind.COMPUTE_SPECTRA,
                    parameters={"material_id": pk, "element": element, "preset": PRESET, "screening": batch.pk},
                    created_by=batch.created_by,
                )
                for pk, element in missing
            ]
        )
        counts: dict[int, int] = {}
        for pk, _ in missing:
            counts[pk] = counts.get(pk, 0) + 1
        for row in rows:
            row.stage = Stage.FEFF
            row.reason = f"FEFF: {counts.get(row.material_id, 0)} K edge(s) to compute"
        ScreeningRow.objects.bulk_update(rows, ["stage", "reason"])


def _write_reasons(batch: ScreeningBatch) -> None:
    """Why each row that stays at the prior stage stays there."""
    prior_rows = batch.rows.filter(stage=Stage.PRIOR)
    prior_rows.exclude(feff_blocker="").update(reason=Concat(Value("prior only: "), F("feff_blocker")))
    for label in ("topological", "trivial"):
        prior_rows.filter(feff_blocker="", material__label=label).update(reason=f"known: a catalogue labels it {label}")
    prior_rows.filter(reason="").update(reason=OUTSIDE_BUDGET)


# --- Running the FEFF jobs -------------------------------------------------------------------

#: The ``feff`` queue's task that runs one stage-2 job: ``compute_spectrum``, then ``settle_feff_job``.
SCREENING_SPECTRUM = "materials.screening_spectrum"


def run_feff_jobs(job_ids: list[int]) -> None:
    """Hand a screening's FEFF jobs to the ``feff`` queue; without a broker run them here,
    in ``SCREEN_FEFF_PROCESSES`` processes (each runs the task as a worker would)."""
    from celery import group

    from materials import jobs

    if not job_ids:
        return
    if not jobs.runs_in_process():
        group(jobs.task(SCREENING_SPECTRUM).s(job_id) for job_id in job_ids).apply_async()
        return
    processes = min(settings.SCREEN_FEFF_PROCESSES, len(job_ids))
    database = connection.settings_dict
    in_memory = connection.vendor == "sqlite" and ("memory" in str(database["NAME"]) or database["NAME"] == "")
    if processes <= 1 or in_memory or multiprocessing.current_process().daemon:
        for job_id in job_ids:
            _run_feff_job(job_id)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process holding TensorFlow threads and sockets
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=django_on_database, initargs=(database["NAME"],)
    ) as pool:
        list(pool.map(_run_feff_job, job_ids))


def _run_feff_job(job_id: int) -> None:
    from materials import jobs

    jobs.task(SCREENING_SPECTRUM).apply(args=[job_id])


# --- After each FEFF job ---------------------------------------------------------------------


def settle_feff_job(job_id: int) -> None:
    """Record what one screening FEFF job changed: classify its material once all of its
    spectra are there, note a failure on the row, finish the batch when nothing is left.
    Safe to run any number of times."""
    job = Job.objects.get(pk=job_id)
    batch_id = (job.parameters or {}).get("screening")
    if batch_id is None:
        return
    batch = ScreeningBatch.objects.get(pk=batch_id)
    material_id = job.parameters["material_id"]
    siblings = batch_jobs(batch).filter(parameters__material_id=material_id)
    if job.status == Status.FAILED:
        batch.rows.filter(material_id=material_id).exclude(stage=Stage.SPECTRAL).update(
            stage=Stage.PRIOR, reason=f"prior only: FEFF failed for {job.parameters['element']}: {job.error}"[:300]
        )
    elif not siblings.exclude(status=Status.DONE).exists():
        version = spectral_model()
        if not Material.objects.filter(pk=material_id, has_spectra=True).exists():
            batch.rows.filter(material_id=material_id).update(
                stage=Stage.PRIOR, reason="prior only: spectra computed but incomplete for the model"
            )
        elif version is None:
            batch.rows.filter(material_id=material_id).update(reason=NO_SPECTRAL_MODEL)
        else:
            try:
                classify_rows(batch, version, [material_id])
            except Exception as error:  # a model that cannot take these spectra: say so on the row
                logger.exception("classifying material %s failed", material_id)
                batch.rows.filter(material_id=material_id).update(
                    stage=Stage.PRIOR, reason=f"prior only: the spectral model failed: {error}"[:300]
                )
    refresh_progress(batch)


def stage2_counts(batch: ScreeningBatch) -> dict[str, int]:
    jobs = batch_jobs(batch)
    rows = batch.rows
    return {
        "feff_budget": batch.feff_budget,
        "feff_materials": len(set(jobs.values_list("parameters__material_id", flat=True))),
        "feff_jobs": jobs.count(),
        "feff_jobs_done": jobs.filter(status=Status.DONE).count(),
        "feff_jobs_failed": jobs.filter(status=Status.FAILED).count(),
        "spectral": rows.filter(stage=Stage.SPECTRAL).count(),
        "prior_only": rows.filter(stage=Stage.PRIOR).count(),
    }


def refresh_progress(batch: ScreeningBatch) -> dict[str, int]:
    """Recount stage 2 from the jobs and rows (idempotent); finish the batch when no job
    is left."""
    counts = stage2_counts(batch)
    finished = counts["feff_jobs_done"] + counts["feff_jobs_failed"]
    with transaction.atomic():
        locked = ScreeningBatch.objects.select_for_update().get(pk=batch.pk)
        locked.stage_counts = {**(locked.stage_counts or {}), **counts}
        locked.save(update_fields=["stage_counts"])
    if finished < counts["feff_jobs"]:
        batch.report_progress(
            0.5 + 0.5 * finished / counts["feff_jobs"],
            f"stage 2: {finished} of {counts['feff_jobs']} FEFF spectra ({counts['spectral']} classified from spectra)",
        )
    else:
        finish(batch, counts)
    return counts


def finish(batch: ScreeningBatch, counts: dict[str, int]) -> None:
    from django.utils import timezone

    message = f"{counts['spectral']} classified from spectra, {counts['prior_only']} ranked by the prior"
    ScreeningBatch.objects.filter(pk=batch.pk, status=Status.RUNNING).update(
        status=Status.DONE, progress=1.0, progress_message=message, finished=timezone.now()
    )
