"""Long-running work: ``Status``, the ``TrackedWork`` fields and transitions, and ``Job``."""

from __future__ import annotations

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone


class Status(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class TrackedWork(models.Model):
    """Status, progress and error of work that runs on a Celery worker.

    Status moves pending → running → done | failed. ``progress`` is a fraction in
    [0, 1]; ``progress_message`` says what is happening now, for pages that poll.
    """

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_finished(self) -> bool:
        return self.status in (Status.DONE, Status.FAILED)

    @property
    def seconds(self) -> float | None:
        if self.started is None:
            return None
        return ((self.finished or timezone.now()) - self.started).total_seconds()

    def mark_running(self, message: str = "") -> None:
        self.status, self.started, self.finished = Status.RUNNING, timezone.now(), None
        self.error, self.progress, self.progress_message = "", 0.0, message
        self.save(update_fields=["status", "started", "finished", "error", "progress", "progress_message"])

    def report_progress(self, fraction: float, message: str = "") -> None:
        # A queryset update: progress must not overwrite fields another process set.
        type(self).objects.filter(pk=self.pk).update(progress=fraction, progress_message=message[:300])
        self.progress, self.progress_message = fraction, message[:300]

    def mark_done(self, message: str = "") -> None:
        self.status, self.finished, self.progress = Status.DONE, timezone.now(), 1.0
        self.progress_message = message or self.progress_message
        self.save(update_fields=["status", "finished", "progress", "progress_message"])

    def mark_failed(self, error: str) -> None:
        self.status, self.finished, self.error = Status.FAILED, timezone.now(), error[:10000]
        self.save(update_fields=["status", "finished", "error"])


class Job(TrackedWork):
    """A generic background job (ingestion, FEFF computation, batch classification).

    Answers the "202 + job id" of the API and the progress of management commands.
    """

    class Kind(models.TextChoices):
        INGEST_MP = "ingest_mp"
        IMPORT_LABELS = "import_labels"
        COMPUTE_SPECTRA = "compute_spectra"
        CLASSIFY = "classify"
        TRAIN = "train"
        PROMOTE = "promote"
        MAINTENANCE = "maintenance"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    parameters = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"

    def count_delivery(self) -> int:
        """Record one more delivery of this job's task in ``result["attempts"]``; return the count.

        A job found ``running`` was started by a delivery whose worker died; any other
        status (a first delivery, or a failed job run again on purpose) starts from 1.
        """
        attempts = int((self.result or {}).get("attempts", 0)) + 1 if self.status == Status.RUNNING else 1
        self.result = {**(self.result or {}), "attempts": attempts}
        Job.objects.filter(pk=self.pk).update(result=self.result)
        return attempts

    @classmethod
    def count_classified_chunk(cls, job_id: int, predicted: int) -> None:
        """Count one chunk of a ``classify`` job (``predicted`` new predictions) under a row
        lock, so chunks finishing at once on several workers all count; the last one closes the job."""
        with transaction.atomic():
            job = cls.objects.select_for_update().get(pk=job_id)
            job.result["chunks_done"] = job.result.get("chunks_done", 0) + 1
            job.result["predicted"] = job.result.get("predicted", 0) + predicted
            done, total = job.result["chunks_done"], job.result["chunks"]
            job.save(update_fields=["result"])
            job.report_progress(done / total, f"{done}/{total} chunks, {job.result['predicted']} predictions")
            if done >= total and job.status == Status.RUNNING:
                job.mark_done()
