"""Celery tasks, one module per queue (routing in settings.CELERY_TASK_ROUTES).

Tasks are thin: they take ids, call one function of the app, and record status on
the tracked row (pending → running → done | failed). Every task is safe to re-run:
a finished row is left alone and the functions they call are idempotent. Enqueue with
``enqueue_on_commit`` so a worker never sees an id before its transaction commits.
"""

from materials.tasks import classify, feff, ingest, maintenance, training  # noqa: F401  (registers the tasks)
