"""Tasks on the ``ingest`` queue: Materials Project ingestion and catalogue imports.

Each takes a Job id; what to do is in ``job.parameters``. Both are safe to re-run:
ingestion skips materials already stored, label imports are upserts.
"""

from celery import shared_task

from materials.ingest.catalogues import import_catalogue_file
from materials.ingest.mp import run_job
from materials.models import Job
from materials.tasks.base import run_tracked

# Under the broker's visibility timeout (7200 s), or a running task would be redelivered.
INGEST_TIME_LIMIT = 3600
IMPORT_PARAMETERS = ("catalogue", "path", "release", "raw_class", "strict")


@shared_task(name="materials.ingest_mp", time_limit=INGEST_TIME_LIMIT)
def ingest_mp(job_id: int) -> None:
    """Fetch and store MP K-edge XANES for ``job.parameters["mp_ids"]`` (``run_job``)."""
    job = Job.objects.get(pk=job_id)
    run_tracked(job, lambda: run_job(job))


@shared_task(name="materials.import_labels", time_limit=INGEST_TIME_LIMIT)
def import_labels(job_id: int) -> None:
    """Import a catalogue file the worker can read: ``job.parameters`` holds
    ``catalogue`` and ``path``, optionally ``release``, ``raw_class``, ``strict``."""
    job = Job.objects.get(pk=job_id)
    arguments = {key: job.parameters[key] for key in IMPORT_PARAMETERS if job.parameters.get(key) is not None}
    run_tracked(job, lambda: import_catalogue_file(**arguments).as_dict())
