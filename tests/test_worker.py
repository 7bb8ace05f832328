"""A real round trip: a task goes through Redis to a Celery worker process, which
writes its result to the (PostgreSQL) test database."""

import pytest

from materials.models import Job, Material, Status, TopologyLabel
from materials.tasks.maintenance import refresh_material_labels
from tests.workers import celery_worker, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_task_runs_on_a_real_worker_through_the_broker():
    material = Material.objects.create(formula="SnTe", reduced_formula="SnTe", elements=["Sn", "Te"], source="user")
    TopologyLabel.objects.create(material=material, catalogue="materiae", raw_class="TCI", binary_class="topological")
    job = Job.objects.create(kind=Job.Kind.MAINTENANCE, parameters={"task": "refresh_material_labels"})
    with celery_worker() as (process, queue):
        refresh_material_labels.apply_async(args=[job.pk], queue=queue)
        job = wait_for(lambda: Job.objects.filter(pk=job.pk, status__in=[Status.DONE, Status.FAILED]).first())
        assert process.poll() is None, "the worker died"
    assert job.status == Status.DONE, job.error
    assert job.result == {"changed": 1}
    assert Material.objects.get(pk=material.pk).label == "topological"
