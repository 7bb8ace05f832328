"""Celery tasks, one module per queue, each task named explicitly (``materials.<task>``).

Tasks are thin: they take ids, call one function of the app, and record status on
the tracked row (pending → running → done | failed). Every task is safe to re-run:
a finished row is left alone and the functions they call are idempotent.

Nothing outside this package imports it: ``materials/jobs.py`` creates the tracking
rows and sends tasks by name, on commit. Workers (and ``jobs.task``) register the
modules listed in ``settings.CELERY_IMPORTS``; routes (``settings.CELERY_TASK_ROUTES``)
go by task name, so a module can move without breaking routes or queued messages.
"""
