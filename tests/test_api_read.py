"""Read endpoints: materials, spectra, labels, model versions, predictions; filters,
cursor pagination, exports, anonymous reads, constant query counts."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from django.core.cache import cache

from materials.models import ElementMetric, Material, ModelVersion, Prediction, Spectrum, TopologyLabel
from tests.api_support import THROTTLE_OFF, token_client


@pytest.fixture(autouse=True)
def no_throttles(settings):
    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": dict(THROTTLE_OFF)}


def material(formula, elements, space_group, label="", crystal_system="", source="materiae", **extra):
    return Material.objects.create(
        formula=formula,
        reduced_formula=formula,
        elements=elements,
        space_group_number=space_group,
        crystal_system=crystal_system,
        source=source,
        label=label,
        **extra,
    )


@pytest.fixture
def catalogue(db):
    """Five materials, a Co spectrum, labels, two models with predictions."""
    licoo2 = material("LiCoO2", ["Co", "Li", "O"], 166, "trivial", "trigonal", mp_id="mp-24850")
    bi2se3 = material("Bi2Se3", ["Bi", "Se"], 166, "topological", "trigonal")
    tio2 = material("TiO2", ["O", "Ti"], 141, "", "tetragonal", source="amcsd")
    cosb3 = material("CoSb3", ["Co", "Sb"], 204, "", "cubic")
    nacl = material("NaCl", ["Cl", "Na"], 225, "trivial", "cubic", source="arsenal")
    energies = np.linspace(7700, 7760, 100)
    Spectrum.objects.create(
        material=licoo2,
        element="Co",
        energies_ev=energies,
        mu=np.linspace(0, 1, 100),
        source="materials_project",
        settings={"note": "test"},
    )
    TopologyLabel.objects.create(material=bi2se3, catalogue="materiae", raw_class="TI", binary_class="topological")
    TopologyLabel.objects.create(material=nacl, catalogue="arsenal", raw_class="Triv_Ins", binary_class="trivial")
    production = ModelVersion.objects.create(
        kind="svm-sg",
        status="ready",
        is_production=True,
        threshold=0.5,
        metrics={"test": {"accuracy": 0.8, "roc_auc": None}, "roc": {"fpr": [0, 1]}},
    )
    other = ModelVersion.objects.create(kind="cnn-sg", status="ready", threshold=0.4)
    ElementMetric.objects.create(
        model_version=production,
        element="Co",
        subset="validation",
        target_class="topological",
        recall=0.5,
        precision=0.25,
        f1=None,
        support=4,
    )
    probabilities = {licoo2: 0.10, bi2se3: 0.95, tio2: 0.40, cosb3: 0.70, nacl: 0.05}
    for m, p in probabilities.items():
        Prediction.objects.create(
            material=m,
            model_version=production,
            probability=p,
            predicted_class="topological" if p >= 0.5 else "trivial",
        )
        Prediction.objects.create(
            material=m, model_version=other, probability=round(1 - p, 2), predicted_class="trivial"
        )
    return {
        "licoo2": licoo2,
        "bi2se3": bi2se3,
        "tio2": tio2,
        "cosb3": cosb3,
        "nacl": nacl,
        "production": production,
        "other": other,
    }


@pytest.fixture
def client(db):
    return token_client()


def ids(response):
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


# --- Materials -------------------------------------------------------------------------------


def test_materials_list_and_filters(client, catalogue, django_assert_max_num_queries):
    c = catalogue
    with django_assert_max_num_queries(1):
        everything = client.get("/api/materials/")
    assert ids(everything) == [c[k].pk for k in ("licoo2", "bi2se3", "tio2", "cosb3", "nacl")]
    row = everything.json()["results"][0]
    assert row["label"] == "trivial" and row["elements"] == ["Co", "Li", "O"] and "structure" not in row
    assert ids(client.get("/api/materials/?elements=Co")) == [c["licoo2"].pk, c["cosb3"].pk]
    assert ids(client.get("/api/materials/?elements=Co,O")) == [c["licoo2"].pk]
    assert ids(client.get("/api/materials/?space_group=166")) == [c["licoo2"].pk, c["bi2se3"].pk]
    assert ids(client.get("/api/materials/?crystal_system=cubic")) == [c["cosb3"].pk, c["nacl"].pk]
    assert ids(client.get("/api/materials/?label=topological")) == [c["bi2se3"].pk]
    assert ids(client.get("/api/materials/?label=unlabelled")) == [c["tio2"].pk, c["cosb3"].pk]
    assert ids(client.get("/api/materials/?source=arsenal")) == [c["nacl"].pk]
    assert ids(client.get("/api/materials/?search=coo")) == [c["licoo2"].pk]
    assert ids(client.get("/api/materials/?formula=TiO2")) == [c["tio2"].pk]


def test_materials_filter_validation(client, catalogue):
    for query, field in (
        ("elements=Co,Xx", "elements"),
        ("elements=%25s%25d", "elements"),
        ("space_group=0", "space_group"),
        ("space_group=99999999999999999999999", "space_group"),
        ("space_group=abc", "space_group"),
        ("crystal_system=round", "crystal_system"),
        ("label=maybe", "label"),
        ("source=web", "source"),
    ):
        response = client.get(f"/api/materials/?{query}")
        assert response.status_code == 400, query
        assert field in response.json(), response.json()


@pytest.mark.parametrize(
    "query, field",
    [
        ("crystal_system=", "crystal_system"),
        ("space_group=", "space_group"),
        ("has_spectra=maybe", "has_spectra"),
        ("has_spectra=", "has_spectra"),
        ("page_size=0", "page_size"),
        ("page_size=501", "page_size"),
        ("page_size=ten", "page_size"),
    ],
)
def test_empty_or_malformed_parameters_are_not_ignored(client, catalogue, query, field):
    response = client.get(f"/api/materials/?{query}")
    assert response.status_code == 400 and field in response.json(), response.json()


def test_strict_parameters_on_predictions_and_models(client, catalogue):
    assert "ordering" in client.get("/api/predictions/?ordering=formula").json()
    assert "ordering" in client.get("/api/predictions/?ordering=").json()
    assert client.get("/api/predictions/export/?format=").status_code == 400
    assert client.get("/api/models/?page=").status_code == 404
    assert client.get("/api/models/?page=2").status_code == 404
    assert client.get("/api/models/?is_production=null").status_code == 400


def test_unknown_api_paths_are_json_404s(client, catalogue):
    for path in ("/api/nothing-here/", "/api/models/0.5/", "/api/screenings/null,null/candidates/"):
        response = client.get(path)
        assert response.status_code in (401, 404), path
        assert response["Content-Type"] == "application/json", path


def test_materials_cursor_pagination(client, catalogue):
    first = client.get("/api/materials/?page_size=2").json()
    assert len(first["results"]) == 2 and first["previous"] is None and "count" not in first
    second = client.get(first["next"]).json()
    third = client.get(second["next"]).json()
    seen = [row["id"] for page in (first, second, third) for row in page["results"]]
    assert seen == sorted(m.pk for m in Material.objects.all()) and third["next"] is None
    assert client.get("/api/materials/?cursor=garbage").status_code == 404


def test_forged_cursor_position_is_404_not_500(client, catalogue):
    import base64

    forged = base64.b64encode(b"p=abc").decode()
    assert client.get(f"/api/materials/?cursor={forged}").status_code == 404
    forged = base64.b64encode(b"p=nan").decode()
    assert client.get(f"/api/predictions/?cursor={forged}").status_code == 404


def test_material_detail_with_spectra_and_labels(client, catalogue, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):
        response = client.get(f"/api/materials/{catalogue['bi2se3'].pk}/")
    body = response.json()
    assert body["labels"][0]["raw_class"] == "TI" and body["spectra"] == []
    spectra = client.get(f"/api/materials/{catalogue['licoo2'].pk}/").json()["spectra"]
    assert spectra == [
        {"id": spectra[0]["id"], "element": "Co", "edge": "K", "source": "materials_project", "npoints": 100}
    ]
    assert client.get("/api/materials/999999/").status_code == 404
    assert client.get("/api/materials/abc/").status_code == 404


# --- Spectra and labels --------------------------------------------------------------------------


def test_spectra_list_and_detail(client, catalogue, django_assert_max_num_queries):
    with django_assert_max_num_queries(1):
        body = client.get("/api/spectra/?element=Co").json()
    spectrum = body["results"][0]
    assert spectrum["npoints"] == 100 and spectrum["energies_ev"][0] == 7700.0 and spectrum["energies_ev"][-1] == 7760.0
    assert spectrum["mu"][1] == pytest.approx(1 / 99, rel=1e-6)
    assert "settings" not in spectrum
    detail = client.get(f"/api/spectra/{spectrum['id']}/").json()
    assert detail["settings"] == {"note": "test"}
    assert client.get(f"/api/spectra/?material={catalogue['nacl'].pk}").json()["results"] == []
    assert client.get("/api/spectra/?element=Qq").status_code == 400


def test_labels_list(client, catalogue):
    rows = client.get("/api/labels/?binary_class=topological").json()["results"]
    assert [(r["material"], r["catalogue"]) for r in rows] == [(catalogue["bi2se3"].pk, "materiae")]
    assert client.get("/api/labels/?catalogue=nope").status_code == 400


# --- Model versions ----------------------------------------------------------------------------


def test_model_versions_with_metrics(client, catalogue, django_assert_max_num_queries):
    production = catalogue["production"]
    with django_assert_max_num_queries(2):
        listing = client.get("/api/models/").json()
    assert listing["count"] == 2
    row = next(r for r in listing["results"] if r["id"] == production.pk)
    assert row["is_production"] is True and row["test_metrics"] == {"accuracy": 0.8, "roc_auc": None}
    with django_assert_max_num_queries(2):
        detail = client.get(f"/api/models/{production.pk}/").json()
    assert detail["metrics"]["roc"] == {"fpr": [0, 1]}
    assert detail["element_metrics"] == [
        {
            "element": "Co",
            "subset": "validation",
            "target_class": "topological",
            "recall": 0.5,
            "precision": 0.25,
            "f1": None,
            "support": 4,
        }
    ]
    assert detail["training_run"] is None
    assert [r["id"] for r in client.get("/api/models/?is_production=true").json()["results"]] == [production.pk]


# --- Predictions -------------------------------------------------------------------------------


def probabilities(response):
    assert response.status_code == 200, response.content
    return [row["probability"] for row in response.json()["results"]]


def test_predictions_default_to_the_production_model_best_first(client, catalogue, django_assert_max_num_queries):
    with django_assert_max_num_queries(1):
        response = client.get("/api/predictions/")
    assert probabilities(response) == [0.95, 0.70, 0.40, 0.10, 0.05]
    row = response.json()["results"][0]
    assert row == {
        "id": row["id"],
        "material": catalogue["bi2se3"].pk,
        "model_version": catalogue["production"].pk,
        "probability": 0.95,
        "calibrated_probability": 0.95,  # a model stored without calibration: the raw value
        "decision": "topological",  # ... decided at its single threshold
        "reasons": [],  # decided: no reason to abstain
        "predicted_class": "topological",
        "reduced_formula": "Bi2Se3",
        "formula": "Bi2Se3",
        "mp_id": None,
        "space_group": 166,
        "elements": ["Bi", "Se"],
        "label": "topological",
    }


def test_prediction_filters(client, catalogue):
    other = catalogue["other"].pk
    assert probabilities(client.get(f"/api/predictions/?model={other}")) == [0.95, 0.9, 0.6, 0.3, 0.05]
    assert probabilities(client.get("/api/predictions/?probability_min=0.4&probability_max=0.9")) == [0.70, 0.40]
    assert probabilities(client.get("/api/predictions/?element=Co")) == [0.70, 0.10]
    assert probabilities(client.get("/api/predictions/?element=Co,Sb")) == [0.70]
    assert probabilities(client.get("/api/predictions/?label=unlabelled")) == [0.70, 0.40]
    assert probabilities(client.get("/api/predictions/?label=trivial")) == [0.10, 0.05]
    assert probabilities(client.get("/api/predictions/?predicted_class=topological")) == [0.95, 0.70]
    assert probabilities(client.get("/api/predictions/?ordering=probability")) == [0.05, 0.10, 0.40, 0.70, 0.95]
    assert probabilities(client.get("/api/predictions/?model=987654")) == []
    for query in ("probability_min=2", "probability_max=-1", "probability_min=nan", "model=0", "element=Zz", "label=x"):
        assert client.get(f"/api/predictions/?{query}").status_code == 400, query


def test_a_calibrated_model_lists_its_calibrated_probabilities_decisions_and_reasons(client, catalogue):
    """The stored probabilities stay raw; the list maps them through the model's own calibrator
    and band, and ``decision`` filters by that answer."""
    from mlcore.calibration import Calibrator
    from mlcore.decision import Band, DecisionRule

    rule = DecisionRule(Calibrator("platt", 1.5, -0.3), Band(low=0.2, high=0.75))
    production = catalogue["production"]
    production.metrics = {"calibration": {"calibrator": rule.calibrator.to_dict(), "band": rule.band.to_dict()}}
    production.save()
    rows = client.get("/api/predictions/").json()["results"]
    raw = [row["probability"] for row in rows]
    assert raw == [0.95, 0.70, 0.40, 0.10, 0.05]
    calibrated = rule.calibrate(raw)
    assert [row["calibrated_probability"] for row in rows] == pytest.approx(list(calibrated))
    decisions = [rule.band.decide(p) for p in calibrated]
    assert [row["decision"] for row in rows] == decisions
    assert all((row["reasons"] != []) == (row["decision"] == "abstain") for row in rows)
    assert {reason["code"] for row in rows for reason in row["reasons"]} <= {"uncertain"}
    for decision in set(decisions):
        found = probabilities(client.get(f"/api/predictions/?decision={decision}"))
        assert found == [p for p, d in zip(raw, decisions, strict=True) if d == decision], decision


def test_predictions_cursor_walks_every_page(client, catalogue):
    # Equal probabilities across a page boundary: the cursor's offset keeps them apart.
    Prediction.objects.filter(model_version=catalogue["production"]).update(probability=0.5)
    seen, url = [], "/api/predictions/?page_size=2"
    while url:
        body = client.get(url).json()
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
    assert sorted(seen) == sorted(
        Prediction.objects.filter(model_version=catalogue["production"]).values_list("id", flat=True)
    )
    assert len(seen) == len(set(seen)) == 5


def test_no_production_model_means_no_predictions(client, catalogue):
    ModelVersion.objects.update(is_production=False)
    assert probabilities(client.get("/api/predictions/")) == []


# --- Exports ---------------------------------------------------------------------------------


def test_export_csv_streams_the_filtered_predictions(client, catalogue):
    response = client.get("/api/predictions/export/?format=csv&probability_min=0.3")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [float(r["probability"]) for r in rows] == [0.95, 0.70, 0.40]
    assert (
        rows[0]["reduced_formula"] == "Bi2Se3" and rows[0]["elements"] == "Bi Se" and rows[0]["label"] == "topological"
    )
    assert rows[2]["label"] == "unlabelled"


def test_export_json(client, catalogue):
    response = client.get(f"/api/predictions/export/?format=json&model={catalogue['other'].pk}&ordering=probability")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    rows = json.loads(b"".join(response.streaming_content))
    assert [r["probability"] for r in rows] == [0.05, 0.3, 0.6, 0.9, 0.95]
    assert rows[0]["model_version"] == catalogue["other"].pk
    empty = client.get("/api/predictions/export/?format=json&model=999999")
    assert json.loads(b"".join(empty.streaming_content)) == []


def test_export_accept_header_and_errors_are_json(client, catalogue):
    response = client.get("/api/predictions/export/", HTTP_ACCEPT="text/csv")
    assert response["Content-Type"].startswith("text/csv")
    error = client.get("/api/predictions/export/?format=csv&probability_min=7")
    assert error.status_code == 400 and error["Content-Type"] == "application/json"
    assert "probability_min" in error.json()
    assert client.get("/api/predictions/export/?format=xml").status_code == 404


def test_export_is_constant_in_queries(client, catalogue, django_assert_max_num_queries):
    with django_assert_max_num_queries(2):  # the model with its decision rule, then the rows
        response = client.get("/api/predictions/export/?format=csv")
        b"".join(response.streaming_content)


# --- Anonymous reads are configurable ------------------------------------------------------------------


def test_anonymous_reads_can_be_turned_off(client, catalogue, settings):
    settings.API_ANONYMOUS_READ = False
    for url in ("/api/materials/", "/api/predictions/", "/api/models/", "/api/spectra/", "/api/labels/"):
        assert client.get(url).status_code == 401, url
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user("reader")
    assert token_client(Token.objects.create(user=user).key).get("/api/predictions/").status_code == 200


def test_reads_are_throttled_per_anonymous_client(client, catalogue, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**THROTTLE_OFF, "anon": "3/minute"},
    }
    assert [client.get("/api/materials/").status_code for _ in range(4)] == [200, 200, 200, 429]
    # Another client (IP) has its own budget.
    assert client.get("/api/materials/", REMOTE_ADDR="10.0.0.9").status_code == 200


def test_reads_are_throttled_per_user(catalogue, settings):
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**THROTTLE_OFF, "user": "2/minute"},
    }
    user = get_user_model().objects.create_user("busy")
    client = token_client(Token.objects.create(user=user).key)
    assert [client.get("/api/predictions/").status_code for _ in range(3)] == [200, 200, 429]


def test_writes_to_read_only_endpoints_are_refused(catalogue):
    assert token_client().post("/api/materials/", {}, format="json").status_code == 401
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user("writer")
    client = token_client(Token.objects.create(user=user).key)
    assert client.post("/api/materials/", {}, format="json").status_code == 405
    assert client.delete(f"/api/predictions/{catalogue['licoo2'].pk}/").status_code == 404
