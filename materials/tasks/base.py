"""What every task shares: status tracking and enqueueing on commit."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

from materials.models import Status

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
