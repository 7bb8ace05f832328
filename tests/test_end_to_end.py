"""The main path end to end, with nothing of ours mocked: models trained and promoted by
the commands, a release screened after a web upload and after an API upload (the
screening task runs in-process on commit, as with no broker), and POST /api/classify/
agreeing with the prediction the stored model made for the same arrays.

Assertions are on outcomes a user sees (statuses reached, rows ranked best first,
candidates read back), not on how the screening stages are organised."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse
from pymatgen.io.cif import CifWriter
from rest_framework.authtoken.models import Token

from materials.models import Material, ModelVersion, Prediction, ScreeningBatch, Status
from tests.api_support import THROTTLE_OFF, token_client

pytestmark = pytest.mark.django_db(transaction=True)

BAD_INPUTS = Path(__file__).resolve().parent / "bad_inputs"


@pytest.fixture
def world(bundled_subset, eager_tasks, settings, tmp_path):
    """The README's everyday path: a prior and a promoted spectral model, every material classified."""
    cache.clear()
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": dict(THROTTLE_OFF)}
    quiet = io.StringIO()
    call_command("train", "--kind", "type-only", stdout=quiet)
    call_command("train", "--kind", "svm-sg", "--promote", stdout=quiet)
    call_command("classify_all", stdout=quiet)
    user = get_user_model().objects.create_user("scientist", password="correct-horse-battery")
    return user


def release(tmp_path: Path) -> tuple[bytes, list[Material]]:
    """Three structures of stored compounds (written out as CIFs) and one broken file."""
    known = list(Material.objects.filter(has_spectra=True, structure_source="amcsd").order_by("id")[:3])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for material in known:
            archive.writestr(f"compound-{material.pk}.cif", str(CifWriter(material.get_structure())))
        archive.writestr("broken.cif", (BAD_INPUTS / "structure_not_a_cif.cif").read_text())
    return buffer.getvalue(), known


def assert_ranked(probabilities: list) -> None:
    ranked = [p for p in probabilities if p is not None]
    assert ranked and ranked == sorted(ranked, reverse=True), probabilities
    assert probabilities[: len(ranked)] == ranked  # the unranked, if any, come last


def test_a_release_uploaded_on_the_web_is_screened_and_its_candidates_ranked(world, client, tmp_path):
    content, known = release(tmp_path)
    client.force_login(world)

    response = client.post(
        reverse("materials:screening-upload"),
        {"name": "web release", "release": SimpleUploadedFile("web.zip", content, "application/zip"), "feff_budget": 0},
    )

    assert response.status_code == 302, response.content[:2000]
    batch = ScreeningBatch.objects.get(name="web release")
    assert response["Location"] == reverse("materials:screening-detail", args=[batch.pk])
    assert batch.status == Status.DONE, batch.error
    assert batch.created_by == world and batch.stage_counts["files"] == 4
    assert [item["file"] for item in batch.rejected] == ["broken.cif"]
    detail = client.get(response["Location"])
    assert detail.status_code == 200 and "broken.cif" in detail.content.decode()
    download = client.get(reverse("materials:screening-download", args=[batch.pk]))
    rows = list(csv.DictReader(io.StringIO(download.content.decode())))
    assert [int(row["rank"]) for row in rows] == list(range(1, len(rows) + 1))
    assert_ranked([float(row["probability"]) if row["probability"] else None for row in rows])
    assert {int(row["material_id"]) for row in rows} == {m.pk for m in known}  # the same compounds, not copies
    # Stored compounds are ranked by the production model's prediction from their spectra.
    production = ModelVersion.objects.production()
    for row in rows:
        stored = Prediction.objects.get(model_version=production, material_id=int(row["material_id"]))
        assert float(row["probability"]) == pytest.approx(stored.probability, abs=1e-6)
    assert client.get(reverse("materials:candidate-list"), {"label": "all"}).status_code == 200


def test_an_api_zip_is_screened_and_its_candidates_read_back(world, tmp_path):
    content, known = release(tmp_path)
    api = token_client(Token.objects.create(user=world).key)

    response = api.post(
        "/api/screenings/",
        {"file": SimpleUploadedFile("api-release.zip", content, "application/zip"), "feff_budget": 0},
        format="multipart",
    )

    assert response.status_code == 202, response.content
    screening = response.json()["screening"]
    status = api.get(f"/api/screenings/{screening}/").json()
    assert status["status"] == "done" and status["progress"] == 1.0, status
    assert status["rejected"][0]["file"] == "broken.cif"
    answer = api.get(f"/api/screenings/{screening}/candidates/?format=json")
    rows = json.loads(b"".join(answer.streaming_content))
    assert [row["rank"] for row in rows] == list(range(1, len(known) + 1))
    assert_ranked([row["probability"] for row in rows])
    assert sorted(row["formula"] for row in rows) == sorted(m.reduced_formula for m in known)
    as_csv = api.get(f"/api/screenings/{screening}/candidates/?format=csv")
    lines = list(csv.DictReader(io.StringIO(b"".join(as_csv.streaming_content).decode())))
    assert [(int(line["rank"]), line["formula"]) for line in lines] == [(row["rank"], row["formula"]) for row in rows]
    # Another user cannot read them back.
    other = get_user_model().objects.create_user("someone-else")
    assert token_client(Token.objects.create(user=other).key).get(f"/api/screenings/{screening}/").status_code == 404


def test_classify_answers_the_stored_models_own_prediction_for_the_same_arrays(world):
    production = ModelVersion.objects.production()
    api = token_client(Token.objects.create(user=world).key)
    materials = Material.objects.filter(has_spectra=True).exclude(space_group_number=None).order_by("id")[:5]
    assert len(materials) == 5
    for material in materials:
        body = {
            "spectra": {
                spectrum.element: {
                    "energies_ev": list(map(float, spectrum.energies_ev)),
                    "mu": list(map(float, spectrum.mu)),
                }
                for spectrum in material.spectra.filter(source="feff")
            },
            "formula": material.formula,
            "space_group": material.space_group_number,
        }

        response = api.post("/api/classify/", data=json.dumps(body), content_type="application/json")

        assert response.status_code == 200, response.content
        answer = response.json()
        stored = Prediction.objects.get(model_version=production, material=material)
        assert answer["model_version"] == production.pk
        # classify_all stored the model's own output; the API reports it as raw_probability when
        # its "probability" is the calibrated one (else as "probability" itself).
        raw = answer.get("raw_probability", answer["probability"])
        assert raw == pytest.approx(stored.probability, abs=1e-6), (material, raw, stored.probability)
        assert answer["predicted_class"] == stored.predicted_class, material
