"""Shared set-up for the REST API tests (``tests/test_api_*.py``, ``tests/test_schemathesis.py``).

``trained_world`` loads a real 40-compound subset of the bundled data, trains a real
SVM-sg model on it (a few seconds), promotes it and creates users with tokens. It is
built once per test module, committed to the test database, and flushed afterwards
so that other modules start from an empty database again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from django.core.management import call_command
from django.test import override_settings

from tests.conftest import make_subset

DATA = Path(__file__).resolve().parent.parent / "data"
THROTTLE_OFF = {"anon": None, "user": None, "classify": None, "upload": None, "login": None}


@dataclass
class World:
    version: object
    staff: object
    staff_token: str
    user: object
    user_token: str
    plain_staff_token: str
    data_dir: Path


def make_users():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token

    User = get_user_model()
    staff = User.objects.create_user("operator", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="materials", codename__in=["retrain_modelversion", "promote_modelversion"]
        )
    )
    plain_staff = User.objects.create_user("viewer", is_staff=True)
    user = User.objects.create_user("scientist")
    return (
        staff,
        Token.objects.create(user=staff).key,
        user,
        Token.objects.create(user=user).key,
        Token.objects.create(user=plain_staff).key,
    )


def train_and_promote(kind: str = "svm-sg"):
    from materials.learning import training

    # Train in-line, and enqueue nothing: with CELERY_BROKER_URL set, a queued task would
    # reach whatever worker listens on the shared broker, with a run id of this test database.
    with mock.patch("materials.tasks.base.enqueue_on_commit"):
        run = training.request_training(kind)
    training.train_model_version(run.pk)
    return training.promote(run.model_version_id)


def build_world(tmp: Path) -> World:
    from django.db import connection

    from materials.ingest.bundled import load_bundled

    name = str(connection.settings_dict["NAME"])
    # Never load or train into a developer's database: only into pytest-django's test one.
    assert "test" in name or "memory" in name, f"refusing to build the API test world in {name}"

    data_dir = make_subset(tmp / "data", n_compounds=40)
    load_bundled(data_dir)
    version = train_and_promote()
    staff, staff_token, user, user_token, plain_staff_token = make_users()
    return World(version, staff, staff_token, user, user_token, plain_staff_token, data_dir)


@pytest.fixture(scope="module", name="trained_world")
def trained_world_fixture(django_db_setup, django_db_blocker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api-world")
    media = override_settings(MEDIA_ROOT=str(tmp / "media"))
    media.enable()
    try:
        with django_db_blocker.unblock():
            world = build_world(tmp)
            yield world
            call_command("flush", interactive=False, verbosity=0)
    finally:
        media.disable()


def token_client(token: str | None = None):
    from rest_framework.test import APIClient

    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def spectrum_payload(element: str = "Co"):
    """A real spectrum from the bundled data: LiCoO2's Co K edge (Materials Project)."""
    import json

    record = json.loads((DATA / "reference" / "licoo2_co_k_mp.json").read_text())
    assert record["absorbing_element"] == element
    return {"energies_ev": record["energies_ev"], "mu": record["mu"]}
