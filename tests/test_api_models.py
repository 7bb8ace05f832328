"""Retrain and promote (staff only, 202 + job), job progress, on a really trained model."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from materials.models import Job, ModelVersion, TrainingRun
from tests.api_support import THROTTLE_OFF, token_client, trained_world_fixture  # noqa: F401


@pytest.fixture(autouse=True)
def no_throttles(settings):
    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": dict(THROTTLE_OFF)}


@pytest.fixture
def staff(trained_world, db):
    return token_client(trained_world.staff_token)


def retrain_url(version):
    return f"/api/models/{version.pk}/retrain/"


def promote_url(version):
    return f"/api/models/{version.pk}/promote/"


@pytest.mark.parametrize("action", ["retrain", "promote"])
def test_only_staff_with_the_permission(trained_world, db, action):
    url = f"/api/models/{trained_world.version.pk}/{action}/"
    assert token_client().post(url, {}, format="json").status_code == 401
    assert token_client(trained_world.user_token).post(url, {}, format="json").status_code == 403
    assert token_client(trained_world.plain_staff_token).post(url, {}, format="json").status_code == 403
    assert Job.objects.count() == 0


def test_retrain_answers_202_with_a_job_that_follows_the_training_run(
    staff, trained_world, django_capture_on_commit_callbacks
):
    version = trained_world.version
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff.post(retrain_url(version), {}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert len(callbacks) == 1  # training is enqueued when the transaction commits
    job = Job.objects.get(pk=body["job"])
    run = TrainingRun.objects.get(pk=body["training_run"])
    assert job.kind == "train" and job.created_by == trained_world.staff
    assert job.result == {"training_run": run.pk, "model_version": run.model_version_id}
    assert body["model_version"] == run.model_version_id != version.pk
    assert body["status_url"].endswith(f"/api/jobs/{job.pk}/")
    assert run.model_version.kind == version.kind and run.model_version.dataset_id == version.dataset_id
    assert staff.get(body["status_url"]).json()["status"] == "pending"

    from materials.tasks.training import train_model

    train_model(run.pk)  # what the worker does
    progress = staff.get(body["status_url"]).json()
    assert progress["status"] == "done" and progress["progress"] == 1.0
    assert ModelVersion.objects.get(pk=body["model_version"]).status == "ready"


def test_retrain_validation(staff, trained_world):
    url = retrain_url(trained_world.version)
    response = staff.post(url, {"kind": "random-forest"}, format="json")
    assert response.status_code == 400 and "kind" in response.json()
    response = staff.post(url, {"hyperparameters": {"no_such_knob": 1}}, format="json")
    assert response.status_code == 400 and "no_such_knob" in response.json()["hyperparameters"][0]
    response = staff.post(url, {"hyperparameters": [1, 2]}, format="json")
    assert response.status_code == 400 and "hyperparameters" in response.json()
    assert staff.post(url, [1], format="json").status_code == 400
    assert staff.post("/api/models/999999/retrain/", {}, format="json").status_code == 404
    assert Job.objects.count() == 0


def test_promote_answers_202_with_the_job_that_promoted(staff, trained_world, django_capture_on_commit_callbacks):
    """Promotion is synchronous from every entry point (API, admin, CLI): the 202 carries a finished job."""
    from materials.learning.training import request_training, train_model_version

    run = request_training("svm-sg", {"C": 2.0})
    train_model_version(run.pk)
    candidate = ModelVersion.objects.get(pk=run.model_version_id)
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff.post(promote_url(candidate))
    assert response.status_code == 202, response.content
    assert callbacks == []  # nothing queued
    job = Job.objects.get(pk=response.json()["job"])
    assert job.kind == "promote" and job.parameters == {"model_version": candidate.pk}
    assert response.json()["status"] == "done"
    body = staff.get(response.json()["status_url"]).json()
    assert body["status"] == "done" and body["result"] == {"production": candidate.pk}
    assert ModelVersion.objects.production() == candidate


def test_promote_refuses_an_untrained_model(staff):
    untrained = ModelVersion.objects.create(kind="svm-sg")
    response = staff.post(promote_url(untrained))
    assert response.status_code == 400
    assert "only a trained (ready) model" in response.json()["detail"]


def test_jobs_are_visible_to_their_owner_and_staff(trained_world, db):
    job = Job.objects.create(kind="promote", created_by=trained_world.staff)
    url = f"/api/jobs/{job.pk}/"
    assert token_client().get(url).status_code == 401
    assert token_client(trained_world.user_token).get(url).status_code == 404
    body = token_client(trained_world.staff_token).get(url).json()
    assert body["id"] == job.pk and body["status"] == "pending" and body["url"].endswith(url)
    assert token_client(trained_world.plain_staff_token).get(url).status_code == 200


def test_model_detail_of_a_trained_model(trained_world, db, django_assert_max_num_queries):
    with django_assert_max_num_queries(2):
        body = token_client().get(f"/api/models/{trained_world.version.pk}/").json()
    assert body["status"] == "ready" and body["is_production"] is True
    assert body["training_run"]["status"] in ("pending", "done")
    assert {"test", "validation", "roc"} <= set(body["metrics"])
    assert {m["subset"] for m in body["element_metrics"]} == {"validation", "test"}
    assert body["artifact_sha256"] == trained_world.version.artifact_sha256
