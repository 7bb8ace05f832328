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

from celery import shared_task

from materials.models import Job, Status
from materials.spectra.spectra_compute import SOFT_TIME_LIMIT_S, TIME_LIMIT_S, compute_job_spectrum
from materials.tasks.base import run_tracked

MAX_ATTEMPTS = 3
WORKER_LOST = "the worker was lost each time (killed, or out of memory)"


@shared_task(name="materials.compute_spectrum", soft_time_limit=SOFT_TIME_LIMIT_S, time_limit=TIME_LIMIT_S)
def compute_spectrum(job_id: int) -> None:
    """Compute one K-edge spectrum: ``Job.parameters`` names the material, element and preset."""
    job = Job.objects.get(pk=job_id)
    if job.status == Status.DONE:
        return
    attempts = job.count_delivery()
    if attempts > MAX_ATTEMPTS:
        job.mark_failed(f"gave up after {MAX_ATTEMPTS} attempts: {WORKER_LOST}")
        return
    run_tracked(job, lambda: {**compute_job_spectrum(job), "attempts": attempts})


@shared_task(name="materials.screening_spectrum", soft_time_limit=SOFT_TIME_LIMIT_S, time_limit=TIME_LIMIT_S)
def screening_spectrum(job_id: int) -> None:
    """One (material, element) of a screening's stage 2: compute it, then settle the row."""
    from materials.screening.stage2 import settle_feff_job

    compute_spectrum(job_id)
    settle_feff_job(job_id)
