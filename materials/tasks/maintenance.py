from celery import shared_task

from materials.models import Job, TopologyLabel
from materials.tasks.base import run_tracked


@shared_task(name="materials.refresh_material_labels", time_limit=600)
def refresh_material_labels(job_id: int) -> None:
    """Recompute every material's training label from its catalogue labels."""
    job = Job.objects.get(pk=job_id)
    run_tracked(job, lambda: {"changed": TopologyLabel.objects.refresh_material_labels()})
