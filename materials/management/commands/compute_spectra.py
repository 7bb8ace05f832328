"""``manage.py compute_spectra``: compute the missing K-edge spectra of stored materials.

One ``Job`` (kind ``compute_spectra``) and one ``feff`` task per (material, element).
With a broker the tasks go to the workers and the command polls the jobs, drawing a
progress bar; without one (``CELERY_TASK_ALWAYS_EAGER``) each task runs in-process in
turn. Materials are taken smallest first (``nsites``), so ``--limit`` picks the
cheapest computations.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from materials import jobs
from materials.models import Job, Status
from materials.progress import StageProgress
from materials.spectra.feff import PRESETS
from materials.spectra.spectra_compute import TIME_LIMIT_S, plan_missing_spectra


def _split(values: list[str] | None) -> list[str]:
    """``["Co,O", "Li"]`` → ``["Co", "O", "Li"]``: accept commas and repeats alike."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


def unfinished_pairs(preset: str) -> set[tuple[int, str]]:
    """(material, element) pairs that a pending or running job is already computing.

    Jobs older than the task's hard time limit are not counted: their message or
    worker was lost, and computing the pair again is the remedy.
    """
    recent = timezone.now() - timedelta(seconds=TIME_LIMIT_S)
    jobs = Job.objects.filter(
        kind=Job.Kind.COMPUTE_SPECTRA, status__in=[Status.PENDING, Status.RUNNING], created__gte=recent
    )
    return {
        (p.get("material_id"), p.get("element"))
        for p in jobs.values_list("parameters", flat=True)
        if p.get("preset") == preset
    }


def fail_lost_jobs(ids: list[int]) -> int:
    """Mark failed the jobs running for longer than the task's hard time limit.

    Celery acknowledges a task killed at its hard limit without re-queueing it, so
    nothing else would ever finish its job. Returns how many were marked.
    """
    cutoff = timezone.now() - timedelta(seconds=TIME_LIMIT_S)
    lost = Job.objects.filter(pk__in=ids, status=Status.RUNNING, started__lt=cutoff)
    for job in lost:
        job.mark_failed(f"no result within the task's hard time limit of {TIME_LIMIT_S} s: the worker was lost")
    return len(lost)


class Command(BaseCommand):
    help = (
        "Compute missing K-edge XANES spectra with FEFF for materials that have a structure: one Celery task per "
        "(material, element) on the feff queue, or in-process when no broker is configured."
    )

    def add_arguments(self, parser):
        parser.add_argument("--ids", nargs="+", default=None, help="material ids (space or comma separated)")
        parser.add_argument("--elements", nargs="+", default=None, help="absorbing elements, e.g. Co O")
        parser.add_argument("--limit", type=int, default=None, help="at most this many materials")
        parser.add_argument("--preset", choices=sorted(PRESETS), default="fast", help="FEFF settings (default fast)")
        parser.add_argument("--queue", default=None, help="queue to send the tasks to (default: routing, 'feff')")
        parser.add_argument("--no-wait", action="store_true", help="enqueue and return without waiting")
        parser.add_argument("--timeout", type=float, default=None, help="stop waiting after this many seconds")
        parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between status polls")
        parser.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")

    def handle(self, *args, **options):
        try:
            ids = [int(value) for value in _split(options["ids"])] if options["ids"] else None
        except ValueError:
            raise CommandError("--ids takes integer material ids") from None
        elements = _split(options["elements"])
        limit, preset = options["limit"], options["preset"]
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1")

        busy = unfinished_pairs(preset)
        planned = plan_missing_spectra(ids=ids, elements=elements, limit=limit)
        pairs = [pair for pair in planned if pair not in busy]
        if len(pairs) < len(planned):
            self.stdout.write(f"{len(planned) - len(pairs)} spectra are already being computed by earlier jobs")
        if not pairs:
            self.stdout.write("Nothing to compute: no selected material with a structure lacks a spectrum.")
            return
        n_materials = len({material_id for material_id, _ in pairs})
        self.stdout.write(f"Computing {len(pairs)} spectra of {n_materials} materials (preset {preset})")

        batch = uuid.uuid4().hex[:12]
        created = jobs.create_spectrum_jobs(pairs, preset, batch)
        eager = jobs.runs_in_process()
        progress = StageProgress(enabled=not options["no_progress"])
        try:
            for count, job in enumerate(created, start=1):
                # Outside any transaction, so the task is sent (or, eager, run) right away.
                jobs.send_spectrum_job(job, queue=options["queue"])
                if eager:
                    progress("spectra", count, len(created))
            if not eager:
                self.stdout.write(
                    f"Enqueued {len(created)} tasks (batch {batch}) on queue {options['queue'] or 'feff'}"
                )
                if options["no_wait"]:
                    return
                self._wait(created, progress, options["timeout"], options["poll_interval"])
        finally:
            progress.close()
        self._report(created)

    def _wait(self, jobs: list[Job], progress: StageProgress, timeout_s: float | None, poll_s: float) -> None:
        ids = [job.pk for job in jobs]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            fail_lost_jobs(ids)
            statuses = list(Job.objects.filter(pk__in=ids).values_list("status", "progress"))
            finished = sum(status in (Status.DONE, Status.FAILED) for status, _ in statuses)
            # Finished jobs plus the fraction of sites the running ones have done.
            partial = sum(fraction for status, fraction in statuses if status == Status.RUNNING)
            progress("spectra", round(finished + partial, 2), len(ids))
            if finished == len(ids):
                return
            if deadline is not None and time.monotonic() > deadline:
                progress.close()
                raise CommandError(
                    f"stopped waiting after {timeout_s:.0f} s with {len(ids) - finished} of {len(ids)} jobs "
                    "unfinished; they keep running on the workers"
                )
            time.sleep(poll_s)

    def _report(self, jobs: list[Job]) -> None:
        rows = Job.objects.filter(pk__in=[job.pk for job in jobs]).order_by("pk")
        computed = skipped = 0
        failures = []
        for job in rows:
            if job.status == Status.DONE:
                if job.result.get("created"):
                    computed += 1
                else:
                    skipped += 1
            elif job.status == Status.FAILED:
                failures.append(job)
        summary = f"{computed} spectra computed, {skipped} already present, {len(failures)} failed"
        self.stdout.write(self.style.SUCCESS(summary) if not failures else self.style.WARNING(summary))
        for job in failures:
            p = job.parameters
            self.stdout.write(f"  material {p['material_id']} {p['element']}: {job.error}")
