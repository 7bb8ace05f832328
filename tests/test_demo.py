"""``manage.py demo``, the newcomer's first command, run as ``make demo`` runs it (tasks
in-process, no broker) on PostgreSQL in CI: load, train, classify, screen, admin login;
then every page of the result answers 200.

Kept quick with the demo's own options: the bundled subset (``--data-dir``; the whole of
``data/`` is loaded in ``tests/test_load_bundled_full.py``), one epoch (``--epochs 1``)
and no FEFF (``--feff-budget 0``; FEFF in a screening is tested in
``tests/test_screen_release.py``). The AMCSD screening's first stage runs in full."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from materials.learning.inference import unpredicted_ids
from materials.models import Material, ModelVersion, Prediction, ScreeningBatch, Status
from tests.conftest import make_subset

pytestmark = [pytest.mark.demo, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo(eager_tasks, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    data = make_subset(tmp_path / "data", n_compounds=30, n_extra_materiae=150)
    out = StringIO()
    call_command(
        "demo",
        "--data-dir",
        str(data),
        "--epochs",
        "1",
        "--feff-budget",
        "0",
        "--url",
        "http://testserver/",
        stdout=out,
    )
    return out.getvalue()


def test_the_demo_loads_trains_classifies_screens_and_then_every_page_answers_200(demo, client):
    for heading in ("==> load bundled data", "==> train", "==> classify every material", "==> screen", "==> timings"):
        assert heading in demo, heading
    production = ModelVersion.objects.production()
    assert production is not None and production.status == ModelVersion.State.READY
    assert re.search(r"promoted .+ to production", demo)
    classified = re.search(r"(\d+) new predictions from ", demo)
    assert classified and int(classified.group(1)) > 0
    assert Prediction.objects.filter(model_version=production).count() >= int(classified.group(1))
    assert unpredicted_ids(production) == []  # every classifiable material has its prediction
    screening = ScreeningBatch.objects.get()
    assert screening.status == Status.DONE, screening.error
    assert screening.rows.exclude(probability=None).count() > 1000  # the AMCSD's minerals, ranked by the prior
    count = Material.objects.count()
    login = re.search(r"admin: http://testserver/admin/ user 'admin', password '([^']+)'", demo)
    assert login and f"{count} materials loaded. Open http://testserver/" in demo
    assert client.login(username="admin", password=login.group(1))
    print(demo[demo.index("==> timings") :])  # in the log: where the demo's time goes

    # Every page of the result answers 200 (one demo run for both checks: it takes minutes).
    material = Prediction.objects.filter(model_version=production).order_by("-probability").first().material
    screening = ScreeningBatch.objects.get()
    pages = [
        reverse("materials:dashboard"),
        reverse("materials:candidate-list"),
        reverse("materials:candidate-list") + "?label=all",
        reverse("materials:candidate-export"),
        reverse("materials:material-list"),
        reverse("materials:material-detail", args=[material.pk]),
        reverse("materials:model-detail", args=[production.pk]),
        reverse("materials:model-compare"),
        reverse("materials:dataset"),
        reverse("materials:screening-list"),
        reverse("materials:screening-detail", args=[screening.pk]),
        reverse("materials:screening-download", args=[screening.pk]),
        reverse("materials:screening-upload"),
        "/admin/",
        "/api/",
        "/api/docs/",
        "/api/schema/",
        "/api/materials/",
        "/api/predictions/",
        f"/api/models/{production.pk}/",
        f"/api/screenings/{screening.pk}/",
    ]
    answers = {page: client.get(page).status_code for page in pages}
    assert answers == {page: 200 for page in pages}
    body = client.get(reverse("materials:candidate-list")).content.decode()
    assert "A <strong>candidate</strong> is a material" in body


def test_the_demo_refuses_a_negative_feff_budget_before_loading_anything():
    with pytest.raises(CommandError, match="--feff-budget must be 0 or more, got -1"):
        call_command("demo", "--feff-budget", "-1", stdout=StringIO())
    assert not Material.objects.exists()
