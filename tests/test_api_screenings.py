"""Screenings: upload a zip of CIFs (202), follow it, fetch ranked candidates as JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from materials.models import Material, ModelVersion, ScreeningBatch, ScreeningRow
from tests.api_support import DATA, THROTTLE_OFF, token_client

URL = "/api/screenings/"


@pytest.fixture(autouse=True)
def no_throttles(settings, tmp_path):
    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": dict(THROTTLE_OFF)}
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def users(db):
    User = get_user_model()
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    boss = User.objects.create_user("boss", is_staff=True)
    return {
        name: (user, token_client(Token.objects.create(user=user).key))
        for name, user in (("alice", alice), ("bob", bob), ("boss", boss))
    }


def zip_of(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def cif() -> bytes:
    return (DATA / "structures" / "LiCoO2_mp24850.cif").read_bytes()


def post_zip(client, content: bytes, name="release.zip", **fields):
    return client.post(
        URL, {"file": SimpleUploadedFile(name, content, "application/zip"), **fields}, format="multipart"
    )


def test_upload_answers_202_and_enqueues_the_screening(users, django_capture_on_commit_callbacks):
    alice, client = users["alice"]
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_zip(
            client, zip_of({"LiCoO2.cif": cif(), "meta.csv": b"icsd_id\n"}), name="icsd-2026.zip", feff_budget=5
        )
    assert response.status_code == 202, response.content
    body = response.json()
    batch = ScreeningBatch.objects.get(pk=body["screening"])
    assert body["job"] == batch.pk and body["status"] == "pending"
    assert body["status_url"].endswith(f"/api/screenings/{batch.pk}/")
    assert body["candidates_url"].endswith(f"/api/screenings/{batch.pk}/candidates/")
    assert body["rows_url"].endswith(f"/api/screenings/{batch.pk}/rows/")
    assert batch.feff_budget == 5
    assert batch.created_by == alice and batch.name == "icsd-2026" and batch.source == "icsd-2026.zip"
    assert zipfile.ZipFile(batch.upload.path).namelist() == ["LiCoO2.cif", "meta.csv"]
    assert len(callbacks) == 1  # start_screening_batch: the pipeline runs once this commits


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("release.tar", b"not a zip", "upload a .zip"),
        ("release.zip", b"PK\x03\x04 truncated", "not a readable zip"),
        ("release.zip", zip_of({"run.exe": b"MZ"}), "no .cif files found (set aside: run.exe: not a .cif or .csv"),
        ("release.zip", zip_of({"../../etc/evil.cif": cif()}), "unsafe path"),
        ("release.zip", zip_of({"notes.csv": b"a,b\n"}), "no .cif file"),
        ("release.zip", zip_of({"bomb.cif": b"0" * 2_000_000}), "zip bomb"),
    ],
)
def test_upload_validation(users, name, content, message):
    response = post_zip(users["alice"][1], content, name=name)
    assert response.status_code == 400, response.content
    assert message in " ".join(response.json()["file"])
    assert ScreeningBatch.objects.count() == 0


@pytest.mark.parametrize("budget", ["-1", "many", "1001"])
def test_a_bad_feff_budget_is_a_400_and_stores_nothing(users, budget):
    response = post_zip(users["alice"][1], zip_of({"LiCoO2.cif": cif()}), feff_budget=budget)
    assert response.status_code == 400 and "feff_budget" in response.json()
    assert ScreeningBatch.objects.count() == 0


def test_too_many_members(users, monkeypatch):
    from materials.screening import release

    monkeypatch.setattr(release, "MAX_MEMBERS", 2)
    response = post_zip(users["alice"][1], zip_of({f"{i}.cif": cif() for i in range(3)}))
    assert response.status_code == 400 and "at most 2" in response.json()["file"][0]


def test_upload_over_the_size_limit_is_413(users, settings):
    settings.MAX_UPLOAD_BYTES = 500
    response = post_zip(users["alice"][1], zip_of({"a.cif": cif()}, compression=zipfile.ZIP_STORED))
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_upload_needs_a_file_and_a_login(users):
    assert users["alice"][1].post(URL, {}, format="multipart").json() == {"file": ["No file was submitted."]}
    assert post_zip(token_client(), zip_of({"a.cif": cif()})).status_code == 401
    assert users["alice"][1].post(URL, {"file": "x"}, format="json").status_code == 415


def test_uploads_are_throttled(users, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**THROTTLE_OFF, "upload": "1/hour"},
    }
    client = users["alice"][1]
    assert post_zip(client, zip_of({"a.cif": cif()})).status_code == 202
    assert post_zip(client, zip_of({"a.cif": cif()})).status_code == 429
    assert client.get(URL).status_code == 200  # reading is not an upload


def make_batch(owner, materials, model=None, **fields):
    batch = ScreeningBatch.objects.create(name="release", created_by=owner, model_version=model, **fields)
    batch.materials.add(*materials)
    return batch


def test_progress_and_visibility(users, django_assert_max_num_queries):
    alice, alice_client = users["alice"]
    batch = make_batch(
        alice,
        [],
        status="running",
        progress=0.3,
        progress_message="deduplicated",
        stage_counts={"files": 3, "parsed": 2},
        rejected=[{"file": "bad.cif", "reason": "cannot parse CIF"}],
    )
    with django_assert_max_num_queries(3):
        body = alice_client.get(f"{URL}{batch.pk}/").json()
    assert body["status"] == "running" and body["progress"] == 0.3 and body["progress_message"] == "deduplicated"
    assert body["stage_counts"] == {"files": 3, "parsed": 2}
    assert body["rejected"] == [{"file": "bad.cif", "reason": "cannot parse CIF"}]
    assert body["materials"] == 0
    assert users["bob"][1].get(f"{URL}{batch.pk}/").status_code == 404
    assert users["boss"][1].get(f"{URL}{batch.pk}/").status_code == 200
    assert token_client().get(f"{URL}{batch.pk}/").status_code == 401
    assert [b["id"] for b in alice_client.get(URL).json()["results"]] == [batch.pk]
    assert users["bob"][1].get(URL).json()["results"] == []


@pytest.fixture
def screened(users):
    """Four rows as the two stages leave them: one classified from spectra, two by the
    prior (one known), one not ranked yet."""
    alice = users["alice"][0]
    model = ModelVersion.objects.create(kind="svm-sg", status="ready", is_production=True)
    prior = ModelVersion.objects.create(kind="type-only", status="ready")
    batch = make_batch(alice, [], model=model, status="done", progress=1.0, prior_version=prior)
    rows = (
        ("Bi2Se3", 0.7, 0.9, "spectral", "topological"),
        ("TiO2", 0.2, None, "prior", ""),
        ("SnTe", 0.6, None, "prior", ""),
        ("NaCl", None, None, "prior", ""),
    )
    for formula, prior_p, spectral_p, stage, label in rows:
        material = Material.objects.create(
            formula=formula,
            reduced_formula=formula,
            elements=["X"],
            space_group_number=225,
            source="icsd",
            label=label,
            icsd_ids=[123, 456] if formula == "SnTe" else [],
        )
        batch.materials.add(material)
        ScreeningRow.objects.create(
            batch=batch,
            material=material,
            files=[f"{formula}.cif"],
            stage=stage,
            prior_probability=prior_p,
            spectral_probability=spectral_p,
            probability=spectral_p if spectral_p is not None else prior_p,
            reason="classified from spectra" if spectral_p else "prior only: outside the FEFF budget",
        )
    return batch


def test_candidates_as_json_ranked_with_their_stages(users, screened, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):
        response = users["alice"][1].get(f"{URL}{screened.pk}/candidates/?format=json")
        rows = json.loads(b"".join(response.streaming_content))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    # NaCl has no probability yet: not ranked, left out (as the rows and the page do).
    assert [(r["rank"], r["formula"], r["stage"], r["probability"]) for r in rows] == [
        (1, "Bi2Se3", "spectral", 0.9),
        (2, "SnTe", "prior", 0.6),
        (3, "TiO2", "prior", 0.2),
    ]
    assert rows[0]["prior_probability"] == 0.7 and rows[0]["spectral_probability"] == 0.9
    assert rows[1]["icsd_ids"] == "123 456" and rows[1]["label"] == "unlabelled" and rows[1]["files"] == "SnTe.cif"
    assert rows[1]["reason"] == "prior only: outside the FEFF budget"


def test_candidates_as_csv_with_filters(users, screened):
    client = users["alice"][1]
    response = client.get(f"{URL}{screened.pk}/candidates/?format=csv&probability_min=0.5")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["formula"] for r in rows] == ["Bi2Se3", "SnTe"]
    response = client.get(f"{URL}{screened.pk}/candidates/?format=csv&label=unlabelled")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["formula"] for r in rows] == ["SnTe", "TiO2"]
    response = client.get(f"{URL}{screened.pk}/candidates/?format=csv&stage=spectral")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["formula"], r["spectral_probability"]) for r in rows] == [("Bi2Se3", "0.9")]
    bad = client.get(f"{URL}{screened.pk}/candidates/?format=csv&probability_min=3")
    assert bad.status_code == 400 and bad["Content-Type"] == "application/json"
    assert client.get(f"{URL}{screened.pk}/candidates/?stage=nope").status_code == 400


def test_rows_are_cursor_paginated_best_first(users, screened, django_assert_max_num_queries):
    client = users["alice"][1]
    with django_assert_max_num_queries(4):
        first = client.get(f"{URL}{screened.pk}/rows/?page_size=2").json()
    assert [(r["formula"], r["stage"], r["probability"]) for r in first["results"]] == [
        ("Bi2Se3", "spectral", 0.9),
        ("SnTe", "prior", 0.6),
    ]
    assert first["results"][0]["prior_probability"] == 0.7 and first["results"][0]["label"] == "topological"
    second = client.get(first["next"]).json()
    assert [r["formula"] for r in second["results"]] == ["TiO2"]  # a row without a probability is not ranked yet
    assert second["next"] is None
    assert client.get(f"{URL}{screened.pk}/rows/?cursor=bogus").status_code == 404


def test_candidates_are_private(users, screened):
    assert users["bob"][1].get(f"{URL}{screened.pk}/candidates/").status_code == 404
    assert users["bob"][1].get(f"{URL}{screened.pk}/rows/").status_code == 404
    assert token_client().get(f"{URL}{screened.pk}/candidates/").status_code == 401


def test_every_screening_row_carries_the_calibrated_probability_and_decision_of_its_model(users, screened):
    """Spectral rows are decided by stage 2's model, prior rows by the prior's own calibrator
    and band, the same in the rows, the JSON and the CSV; the decision filter agrees."""
    from mlcore.calibration import Calibrator
    from mlcore.decision import Band, DecisionRule

    rule = DecisionRule(Calibrator("platt", 2.0, 0.5), Band(low=0.3, high=0.8))
    prior = screened.prior_version
    prior.metrics = {"calibration": {"calibrator": rule.calibrator.to_dict(), "band": rule.band.to_dict()}}
    prior.save()
    calibrated_snte, calibrated_tio2 = rule.calibrate([0.6, 0.2])
    client = users["alice"][1]
    rows = {r["formula"]: r for r in client.get(f"{URL}{screened.pk}/rows/").json()["results"]}
    # Bi2Se3: the spectral model has no calibration: the raw value, decided at its threshold.
    assert (rows["Bi2Se3"]["calibrated_probability"], rows["Bi2Se3"]["decision"]) == (0.9, "topological")
    assert rows["Bi2Se3"]["reasons"] == []
    assert rows["SnTe"]["calibrated_probability"] == pytest.approx(calibrated_snte)
    assert rows["SnTe"]["decision"] == "abstain" and [r["code"] for r in rows["SnTe"]["reasons"]] == ["uncertain"]
    assert rows["TiO2"]["calibrated_probability"] == pytest.approx(calibrated_tio2)
    assert rows["TiO2"]["decision"] == "trivial"
    exported = json.loads(b"".join(client.get(f"{URL}{screened.pk}/candidates/?format=json").streaming_content))
    assert [(r["formula"], r["decision"], r["reasons"]) for r in exported] == [
        ("Bi2Se3", "topological", ""),
        ("SnTe", "abstain", "uncertain"),
        ("TiO2", "trivial", ""),
    ]
    response = client.get(f"{URL}{screened.pk}/candidates/?format=csv")
    csv_rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["formula"], r["decision"]) for r in csv_rows] == [(r["formula"], r["decision"]) for r in exported]
    assert float(csv_rows[1]["calibrated_probability"]) == pytest.approx(calibrated_snte, abs=1e-6)
    for decision, formulas in (("topological", ["Bi2Se3"]), ("abstain", ["SnTe"]), ("trivial", ["TiO2"])):
        found = client.get(f"{URL}{screened.pk}/rows/?decision={decision}").json()["results"]
        assert [r["formula"] for r in found] == formulas, decision
    assert client.get(f"{URL}{screened.pk}/rows/?decision=maybe").status_code == 400
