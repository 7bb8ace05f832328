"""Starting background work: the one home of "create the tracking row, enqueue on commit".

Every entry point (API, pages, admin, commands) and every domain module that starts work
(``training.request_training``, the screening) calls a function here; none of them imports
``materials.tasks``. This module does not import the task modules either: it sends tasks by
their explicit names (``materials.train_model``, …), which the Celery app registers from
``CELERY_IMPORTS``, so no import cycle can run through a task, and a task module can move
without breaking routes (``CELERY_TASK_ROUTES``) or messages already queued.

Work is enqueued when the current transaction commits, so a worker never sees an id before
its row exists. Without a broker (``CELERY_TASK_ALWAYS_EAGER``) it runs in-process then.
"""

from __future__ import annotations

from django.db import transaction

from materials.models import Job, ModelVersion, TrainingRun
from materials.tasks import base
from screening.celery import app

#: One Celery task per name; ``CELERY_TASK_ROUTES`` maps each to its queue.
TRAIN_MODEL = "materials.train_model"
CLASSIFY_ALL = "materials.classify_all"
PROMOTE_MODEL = "materials.promote_model"
SCREEN_RELEASE = "materials.screen_release"
INGEST_MP = "materials.ingest_mp"
COMPUTE_SPECTRUM = "materials.compute_spectrum"


def task(name: str):
    """The registered Celery task called ``name``."""
    if name not in app.tasks:
        app.loader.import_default_modules()  # CELERY_IMPORTS: what a worker imports when it starts
    return app.tasks[name]


def runs_in_process() -> bool:
    """Whether enqueued tasks run here, in-process (no broker), rather than on a worker."""
    return bool(app.conf.task_always_eager)


def enqueue(name: str, *args, **options) -> None:
    """Send task ``name`` with ``args`` once the current transaction commits."""
    base.enqueue_on_commit(task(name), *args, **options)


# --- Training and models --------------------------------------------------------------


def enqueue_training(run: TrainingRun) -> None:
    """Train ``run``'s model version on the ``train`` queue once its rows are committed."""
    enqueue(TRAIN_MODEL, run.pk)


def record_retraining(source: ModelVersion, run: TrainingRun, kind: str, hyperparameters: dict, user=None) -> Job:
    """A ``train`` job for the retraining of ``source`` (as ``kind`` with ``hyperparameters``) that
    ``request_training`` queued as ``run``; the job's status and progress are the run's."""
    return Job.objects.create(
        kind=Job.Kind.TRAIN,
        parameters={"model_version": source.pk, "kind": kind, "hyperparameters": hyperparameters},
        result={"training_run": run.pk, "model_version": run.model_version_id},
        created_by=user,
    )


def start_classify_all(version: ModelVersion, user=None, chunk_size: int = 10_000) -> Job:
    """Predict every material ``version`` has not predicted yet (a ``classify`` job)."""
    with transaction.atomic():
        job = Job.objects.create(kind=Job.Kind.CLASSIFY, parameters={"model_version": version.pk}, created_by=user)
        enqueue(CLASSIFY_ALL, job.pk, version.pk, chunk_size)
    return job


def promote(model_version_id: int, user=None) -> Job:
    """Make a model version the production model, now, recording a ``promote`` job.

    Every entry point (API, admin, ``manage.py promote``, ``train --promote``) promotes
    this way: synchronously, since the swap is one short transaction, and with a job whose
    ``status``/``error``/``result`` say what happened (``result = {"production": id}``).
    """
    job = Job.objects.create(kind=Job.Kind.PROMOTE, parameters={"model_version": model_version_id}, created_by=user)
    task(PROMOTE_MODEL).apply(args=(job.pk, model_version_id))
    job.refresh_from_db()
    return job


# --- Screening, ingestion, spectra ----------------------------------------------------------


def start_screening(batch_id: int) -> None:
    """Screen a stored batch (stage 1, then stage 2's FEFF jobs on the ``feff`` queue)."""
    enqueue(SCREEN_RELEASE, batch_id)


def start_ingest_mp(parameters: dict, queue: str | None = None) -> Job:
    """Fetch and store Materials Project spectra (``parameters`` as ``ingest.mp.run_job`` reads them)."""
    with transaction.atomic():
        job = Job.objects.create(kind=Job.Kind.INGEST_MP, parameters=parameters)
        enqueue(INGEST_MP, job.pk, **({"queue": queue} if queue else {}))
    return job


def create_spectrum_jobs(pairs: list[tuple[int, str]], preset: str, batch: str) -> list[Job]:
    """One ``compute_spectra`` job per (material id, element), not yet sent."""
    with transaction.atomic():
        return [
            Job.objects.create(
                kind=Job.Kind.COMPUTE_SPECTRA,
                parameters={"material_id": material_id, "element": element, "preset": preset, "batch": batch},
            )
            for material_id, element in pairs
        ]


def send_spectrum_job(job: Job, queue: str | None = None) -> None:
    """Compute one spectrum job on the ``feff`` queue (outside a transaction: sent, or run, at once)."""
    enqueue(COMPUTE_SPECTRUM, job.pk, **({"queue": queue} if queue else {}))
