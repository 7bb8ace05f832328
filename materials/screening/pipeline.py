"""Screening one batch: stage 1 for the whole release, then stage 2's plan.

``screen_batch`` is what the ``screen_release`` task runs (and, without a broker, the
command and the upload in-process). It returns the ids of the FEFF jobs to run; the
task hands them to the ``feff`` queue. Re-running it resumes: rows, materials and
predictions already stored are kept, planned jobs are reused, nothing is computed
twice.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings

from materials.models import ScreeningBatch, Status
from materials.screening import stage1, stage2
from materials.screening.release import AMCSD_SOURCE, amcsd_version

logger = logging.getLogger(__name__)


def create_batch(
    name: str, source: str, upload=None, user=None, feff_budget: int = 0, feff_max_sites: int | None = None
) -> ScreeningBatch:
    batch = ScreeningBatch(name=name, source=source, created_by=user, feff_budget=feff_budget)
    if feff_max_sites is not None:
        batch.feff_max_sites = feff_max_sites
    if upload is not None:
        batch.upload.save(Path(upload.name).name, upload, save=False)
    batch.save()
    return batch


def create_amcsd_batch(name: str, feff_budget: int = 0, feff_max_sites: int | None = None) -> ScreeningBatch:
    """A screening of the AMCSD copy inside larixite."""
    return create_batch(name or amcsd_version(), AMCSD_SOURCE, feff_budget=feff_budget, feff_max_sites=feff_max_sites)


def release_location(batch: ScreeningBatch) -> str:
    """Where the batch's release is: ``AMCSD_SOURCE``, the uploaded zip, or a folder/zip path."""
    if batch.upload:
        return batch.upload.path
    return batch.source


def screen_batch(batch_id: int) -> list[int]:
    """Stage 1 and stage 2's plan for one batch; returns the FEFF job ids left to run.

    A failure is recorded on the batch (status ``failed`` with the reason), not raised.
    """
    batch = ScreeningBatch.objects.get(pk=batch_id)
    if batch.status == Status.DONE:
        return []
    batch.mark_running("stage 1: reading the release")
    try:
        return _screen(batch)
    except Exception as error:
        logger.exception("screening %s failed", batch)
        batch.mark_failed(
            f"{type(error).__name__}: {error}" if not isinstance(error, stage1.NoPriorError) else str(error)
        )
        return []


def _screen(batch: ScreeningBatch) -> list[int]:
    prior = stage1.prior_model()
    version = stage2.spectral_model()
    ScreeningBatch.objects.filter(pk=batch.pk).update(prior_version=prior, model_version=version)
    counts: dict[str, int] = {}

    def stage(fraction: float, message: str, **new_counts) -> None:
        counts.update(new_counts)
        ScreeningBatch.objects.filter(pk=batch.pk).update(stage_counts=dict(counts), rejected=list(parsed.rejected))
        batch.report_progress(fraction, message)

    location = release_location(batch)
    parsed = stage1.Parsed()
    parsed = stage1.parse_release(
        location,
        settings.SCREEN_PARSE_PROCESSES,
        progress=lambda done, total: batch.report_progress(
            0.3 * done / max(total, 1), f"stage 1: parsed {done} of {total} files"
        ),
    )
    summaries = stage1.apply_quality_filter(parsed.summaries, parsed.metadata_csv, parsed.rejected)
    stage(
        0.3,
        "stage 1: storing materials",
        files=parsed.files,
        parsed=len(parsed.summaries),
        unparseable=parsed.files - len(parsed.summaries),
        passed_quality=len(summaries),
        disordered=sum(not s.ordered for s in summaries),
        hydrogen=sum(s.has_hydrogen for s in summaries),
    )
    stored = stage1.store_release(
        batch,
        summaries,
        parsed.rejected,
        progress=lambda done, total: batch.report_progress(
            0.3 + 0.1 * done / max(total, 1), f"stage 1: stored {done} of {total} compounds"
        ),
    )
    stage(0.4, "stage 1: the prior", **stored)
    stage1.apply_prior(batch, prior)
    rows = batch.rows
    stage(
        0.5,
        "stage 1 done: every structure ranked by the prior",
        ranked=rows.exclude(prior_probability=None).count(),
        known=rows.exclude(material__label="").count(),
    )
    stage2.classify_stored(batch, version)
    jobs = stage2.plan_feff(batch, location, prior, version)
    stage2.refresh_progress(batch)
    return jobs
