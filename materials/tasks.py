"""Celery tasks: thin wrappers that take ids, call one function of the app, and
record status on the tracked row (pending → running → done | failed).

Every task is safe to re-run: a finished row is left alone, and the functions they
call are idempotent. Enqueue with ``enqueue_on_commit`` so a worker never sees an id
before the transaction that created it has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import shared_task
from django.db import transaction

from materials.models import Job, Status, TopologyLabel

logger = logging.getLogger(__name__)


def enqueue_on_commit(task, *args, **options) -> None:
    """Send ``task`` with ``args`` once the current transaction commits."""
    transaction.on_commit(lambda: task.apply_async(args=args, **options))


def run_tracked(row, work: Callable[[], dict | None]) -> None:
    """Run ``work`` with ``row``'s status kept current; re-raise nothing a retry can't fix."""
    if row.status == Status.DONE:
        logger.info("%s already done; nothing to do", row)
        return
    row.mark_running()
    try:
        result = work()
    except Exception as error:
        logger.exception("%s failed", row)
        row.mark_failed(f"{type(error).__name__}: {error}")
        return
    if result is not None and hasattr(row, "result"):
        row.result = result
        row.save(update_fields=["result"])
    row.mark_done()


@shared_task(time_limit=600)
def refresh_material_labels(job_id: int) -> None:
    """Recompute every material's training label from its catalogue labels."""
    job = Job.objects.get(pk=job_id)
    run_tracked(job, lambda: {"changed": TopologyLabel.objects.refresh_material_labels()})
