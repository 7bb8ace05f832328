"""Training → promotion → batch classification, driven as a user drives it: admin
actions posted with the Django test client, work done by a real Celery worker
through Redis when CELERY_BROKER_URL is set (in-process otherwise)."""

import os
from contextlib import nullcontext

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from materials.ingest.bundled import load_bundled
from materials.learning.training import request_training
from materials.models import Job, Material, ModelVersion, Prediction, Status, TrainingRun
from tests.conftest import make_subset
from tests.workers import celery_worker, private_broker, wait_for  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff_client(client):
    user = User.objects.create_user("curator", password="x", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["view_modelversion", "change_modelversion", "retrain_modelversion", "promote_modelversion"]
        )
    )
    client.force_login(user)
    return client


@pytest.fixture
def bundled(tmp_path):
    load_bundled(make_subset(tmp_path / "data", n_compounds=30, n_extra_materiae=150))


@pytest.fixture
def workers(request):
    """Real workers on the app's own queues when a broker is configured, on a private Redis
    server: on the shared broker they would take other runs' tasks (another test run, a
    developer's `make worker`) and leave theirs to them."""
    if not os.environ.get("CELERY_BROKER_URL"):
        return nullcontext
    request.getfixturevalue("private_broker")
    return lambda: celery_worker(queues=["train", "classify", "default"], concurrency=2)


def finished(model, pk):
    return model.objects.filter(pk=pk, status__in=[Status.DONE, Status.FAILED]).first()


def test_retrain_promote_and_classify_from_the_admin(bundled, staff_client, workers):
    changelist = reverse("admin:materials_modelversion_changelist")
    with workers():
        first = request_training("type-only", {"max_iter": 50})
        first = wait_for(lambda: finished(TrainingRun, first.pk), timeout=180)
        assert first.status == Status.DONE, first.error

        # Retrain: the action shows an intermediate form, then queues training.
        form = staff_client.post(changelist, {"action": "retrain", "_selected_action": [first.model_version_id]})
        assert form.status_code == 200 and b"Start training" in form.content
        response = staff_client.post(
            changelist,
            {
                "action": "retrain",
                "_selected_action": [first.model_version_id],
                "apply": "1",
                "kind": "type-only",
                "hyperparameters": '{"max_iter": 60, "learning_rate": 0.1}',
            },
        )
        assert response.status_code == 302
        run = TrainingRun.objects.exclude(pk=first.pk).get()
        run = wait_for(lambda: finished(TrainingRun, run.pk), timeout=180)
        assert run.status == Status.DONE, run.error
        version = ModelVersion.objects.get(pk=run.model_version_id)
        assert version.status == "ready" and version.hyperparameters == {"max_iter": 60, "learning_rate": 0.1}
        assert version.metrics["test"]["topological_f1"] is not None
        assert version.element_metrics.filter(subset="test").exists()
        assert version.split_hash == version.dataset.content_hash and version.library_versions["numpy"]

        staff_client.post(changelist, {"action": "promote_to_production", "_selected_action": [version.pk]})
        assert ModelVersion.objects.production() == version

        staff_client.post(changelist, {"action": "rescreen_all", "_selected_action": [version.pk]})
        job = wait_for(lambda: finished(Job, Job.objects.get(kind="classify").pk), timeout=180)
        assert job.status == Status.DONE, job.error

    expected = Material.objects.exclude(space_group_number=None).count()
    assert Prediction.objects.filter(model_version=version).count() == expected == job.result["predicted"]


def test_actions_need_their_permissions(bundled, client):
    user = User.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_modelversion", "change_modelversion"]))
    client.force_login(user)
    version = ModelVersion.objects.create(kind="type-only", status="ready")
    response = client.post(
        reverse("admin:materials_modelversion_changelist"),
        {"action": "promote_to_production", "_selected_action": [version.pk]},
    )
    assert response.status_code == 200  # Django answers "No action selected" for an action not offered
    assert ModelVersion.objects.production() is None
