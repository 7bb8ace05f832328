from celery import shared_task

from materials.models import Status, TrainingRun
from materials.tasks.base import run_tracked
from materials.training import mark_failed_version, train_model_version


@shared_task(time_limit=3600, soft_time_limit=3500)
def train_model(run_id: int) -> None:
    """Train one model version (queue ``train``; GPU workers consume it)."""
    run = TrainingRun.objects.get(pk=run_id)
    run_tracked(run, lambda: train_model_version(run_id))
    if run.status == Status.FAILED:
        mark_failed_version(run)
