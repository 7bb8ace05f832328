"""Starting a screening in the background: the only screening module that imports tasks.

Entry points (the API, the pages, the commands) call ``start_screening_batch``; the
domain modules (stage 1, stage 2) never import tasks.
"""

from __future__ import annotations


def start_screening_batch(batch_id: int) -> None:
    """Enqueue the screening of a stored batch once the transaction commits (without a
    broker it runs in-process, FEFF jobs included)."""
    from materials.tasks.base import enqueue_on_commit
    from materials.tasks.classify import screen_release

    enqueue_on_commit(screen_release, batch_id)
