from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from materials.learning.training import QUEUED_MESSAGE, train_model_version, training_lock
from materials.models import Status, TrainingRun
from materials.tasks.base import run_tracked


@shared_task(name="materials.train_model", time_limit=3600, soft_time_limit=3500)
def train_model(run_id: int) -> None:
    """Train one model version (queue ``train``; GPU workers consume it).

    One training at a time per split: a run whose split is being trained waits,
    still ``pending`` with a "queued" message, until the other finishes. A failed run
    fails its model version (``TrainingRun.mark_failed``).
    """
    run = TrainingRun.objects.select_related("model_version").get(pk=run_id)
    if run.status == Status.DONE:
        return
    try:
        with training_lock(run.model_version.dataset_id, on_wait=lambda: run.report_progress(0.0, QUEUED_MESSAGE)):
            run_tracked(run, lambda: train_model_version(run_id))
    except SoftTimeLimitExceeded:  # only while waiting: run_tracked records it during training
        run.mark_failed("time limit reached while waiting for another training of the same split")
