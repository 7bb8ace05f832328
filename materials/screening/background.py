"""Starting a screening in the background (through ``materials.jobs``, the one module that
enqueues tasks).

Entry points (the API, the pages, the commands) call ``start_screening_batch``; the
domain modules (stage 1, stage 2) never import tasks.
"""

from __future__ import annotations


def start_screening_batch(batch_id: int) -> None:
    """Enqueue the screening of a stored batch once the transaction commits (without a
    broker it runs in-process, FEFF jobs included)."""
    from materials import jobs

    jobs.start_screening(batch_id)
