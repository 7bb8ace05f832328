"""The ``feff`` queue: one task per (material, element, preset), tracked on a ``Job``.

A ``Job`` of kind ``compute_spectra`` carries ``parameters = {"material_id", "element",
"preset"}`` (and a ``batch`` id shared by the jobs one command enqueued); its status
moves pending → running → done | failed, with the reason on failure (``FeffError``'s
message: partial occupancy, too many sites, no K-edge data, a FEFF crash, the time
limit).

Why it is safe to re-run, and what happens when things go wrong:

* A spectrum that already exists is skipped (``compute_material_spectra``), and a
  finished job is left alone (``run_tracked``).
* ``acks_late`` and ``reject_on_worker_lost`` (global settings) put the message back
  on the queue when the worker process dies mid-run (kill -9, out of memory); the
  next delivery finds the job still ``running`` and counts an attempt. After
  ``MAX_ATTEMPTS`` lost attempts the job fails instead of looping on a poison input.
* FEFF gets a budget (``FEFF_BUDGET_S``) that bounds each of its stages, so a slow
  structure fails with a clear reason before Celery's soft limit, which is the
  backstop (``SoftTimeLimitExceeded`` is recorded like any error), and the hard limit
  after it.
* FEFF writes into a scratch directory that ``TemporaryDirectory`` removes on
  success and on failure. Only a hard kill can leave one behind; those are under
  one root and removed by the next task once older than twice the hard limit.
* Celery acknowledges a task its hard time limit killed without re-queueing it, so
  its job would stay ``running``; ``manage.py compute_spectra`` marks such a job
  failed once it has run longer than ``TIME_LIMIT_S``.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor

from celery import group, shared_task
from django.conf import settings
from django.db import connection

from materials.models import Job, Status
from materials.screening.processes import django_on_database
from materials.spectra_compute import (  # the time limits: also read by manage.py compute_spectra
    FEFF_BUDGET_S,
    SOFT_TIME_LIMIT_S,
    TIME_LIMIT_S,
    compute_material_spectra,
    remove_stale_scratch,
    scratch_root,
)
from materials.tasks.base import run_tracked

MAX_ATTEMPTS = 3


def _count_attempt(job: Job) -> int:
    """Record this delivery in ``job.result["attempts"]`` and return the count.

    A job found ``running`` was started by a delivery whose worker died.
    """
    attempts = int((job.result or {}).get("attempts", 0)) + 1
    if job.status != Status.RUNNING:  # a first delivery, or a failed job run again on purpose
        attempts = 1
    job.result = {**(job.result or {}), "attempts": attempts}
    Job.objects.filter(pk=job.pk).update(result=job.result)
    return attempts


@shared_task(name="materials.compute_spectrum", soft_time_limit=SOFT_TIME_LIMIT_S, time_limit=TIME_LIMIT_S)
def compute_spectrum(job_id: int) -> None:
    """Compute one K-edge spectrum: ``Job.parameters`` names the material, element and preset."""
    job = Job.objects.get(pk=job_id)
    if job.status == Status.DONE:
        return
    attempts = _count_attempt(job)
    if attempts > MAX_ATTEMPTS:
        job.mark_failed(
            f"gave up after {MAX_ATTEMPTS} attempts: the worker was lost each time (killed, or out of memory)"
        )
        return
    parameters = job.parameters
    root = scratch_root()
    remove_stale_scratch(root)

    def work() -> dict:
        def progress(done: int, total: int, message: str) -> None:
            job.report_progress(done / max(total, 1), message)

        with tempfile.TemporaryDirectory(prefix="feff-", dir=root) as scratch:
            outcome = compute_material_spectra(
                parameters["material_id"],
                parameters["element"],
                parameters.get("preset", "fast"),
                work_dir=scratch,
                timeout_s=FEFF_BUDGET_S,
                progress=progress,
            )
        return {**outcome.as_result(), "attempts": attempts}

    run_tracked(job, work)


@shared_task(name="materials.screening_spectrum", soft_time_limit=SOFT_TIME_LIMIT_S, time_limit=TIME_LIMIT_S)
def screening_spectrum(job_id: int) -> None:
    """One (material, element) of a screening's stage 2: compute it, then settle the row."""
    from materials.screening.stage2 import settle_feff_job

    compute_spectrum(job_id)
    settle_feff_job(job_id)


def run_screening_jobs(job_ids: list[int]) -> None:
    """Hand a screening's FEFF jobs to the ``feff`` queue; without a broker run them here,
    in ``SCREEN_FEFF_PROCESSES`` processes (each runs the task as a worker would)."""
    if not job_ids:
        return
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        group(screening_spectrum.s(job_id) for job_id in job_ids).apply_async()
        return
    processes = min(settings.SCREEN_FEFF_PROCESSES, len(job_ids))
    database = connection.settings_dict
    in_memory = connection.vendor == "sqlite" and ("memory" in str(database["NAME"]) or database["NAME"] == "")
    if processes <= 1 or in_memory or multiprocessing.current_process().daemon:
        for job_id in job_ids:
            screening_spectrum.apply(args=[job_id])
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process holding TensorFlow threads and sockets
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=django_on_database, initargs=(database["NAME"],)
    ) as pool:
        list(pool.map(_run_screening_job, job_ids))


def _run_screening_job(job_id: int) -> None:
    screening_spectrum.apply(args=[job_id])
