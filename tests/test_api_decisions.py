"""Decide or abstain (POST /api/classify/): calibrated probabilities, each abstain reason from
its own input, partial spectra answered by a model that can use the composition, and
measured spectra uploaded as CSV, XDI or JSON normalised identically."""

from __future__ import annotations

import json
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
from django.core.cache import cache

from materials.learning.artifacts import write_bundle
from materials.learning.inference import load_bundle
from materials.models import ModelVersion, Spectrum
from mlcore.decision import Band, DecisionRule
from mlcore.elements import K_EDGE_ENERGY_EV
from tests.api_support import DATA, THROTTLE_OFF, token_client, trained_world_fixture  # noqa: F401

URL = "/api/classify/"


@pytest.fixture(autouse=True)
def no_throttles(settings):
    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": dict(THROTTLE_OFF)}


@pytest.fixture
def client(trained_world, db):
    return token_client(trained_world.user_token)


def post_json(client, body):
    response = client.post(URL, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def codes(answer) -> list[str]:
    return [reason["code"] for reason in answer["reasons"]]


def training_spectrum():
    """A stored FEFF spectrum of a material in the training split, and its material."""
    version = ModelVersion.objects.production()
    train = version.dataset.assignments.filter(subset="train").values_list("material_id", flat=True)
    spectrum = Spectrum.objects.filter(source="feff", material_id__in=list(train)).select_related("material").first()
    return spectrum, spectrum.material


@contextmanager
def serving(version: ModelVersion, **changes):
    """A copy of ``version``'s bundle with ``changes``, served as the production model."""
    bundle = load_bundle(version)
    copy = type(bundle)(**{**bundle.__dict__, **changes})
    name, sha = write_bundle(f"models/copy-{version.pk}-{len(changes)}.zip", copy)
    other = ModelVersion.objects.create(
        kind=version.kind, dataset=version.dataset, status="ready", threshold=version.threshold, artifact_sha256=sha
    )
    other.artifact.name = name
    other.save()
    ModelVersion.objects.filter(pk=version.pk).update(is_production=False)
    ModelVersion.objects.filter(pk=other.pk).update(is_production=True)
    try:
        yield other
    finally:
        ModelVersion.objects.filter(pk=other.pk).update(is_production=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_production=True)
        other.delete()


# --- Calibration ----------------------------------------------------------------------------


def test_calibration_is_fitted_on_the_validation_split_only(trained_world):
    """The stored calibrator is what fitting on the validation predictions gives, and the test
    split's ECE before and after calibration is reported."""
    from materials.learning.arrays import load_records
    from materials.learning.inference import predict_records
    from mlcore.calibration import Calibrator

    version = trained_world.version
    ids = list(version.dataset.assignments.filter(subset="validation").values_list("material_id", flat=True))
    records = load_records(sorted(ids))
    refit = Calibrator().fit(records.labels, predict_records(version, records))
    stored = load_bundle(version).decision_rule.calibrator
    assert stored.method == refit.method and stored.n_fit == len(ids)
    assert (stored.slope, stored.intercept) == pytest.approx((refit.slope, refit.intercept), rel=1e-6)
    calibration = version.metrics["calibration"]
    assert calibration["fitted_on"] == "validation"
    assert 0.0 <= calibration["ece_test_after"] <= 1.0 and 0.0 <= calibration["ece_test_before"] <= 1.0
    assert sum(point["count"] for point in calibration["reliability_test_after"]) == version.metrics["n"]["test"]
    assert version.metrics["preprocessing"]["version"] == 2


# --- Abstain reasons, each from its own input ---------------------------------------------------


def test_a_spectrum_of_an_element_never_seen_in_training_abstains(client, trained_world):
    seen = set(load_bundle(trained_world.version).preprocessor.windows_ev_)
    element = next(e for e in ("Au", "Pt", "Ir", "W", "Ta", "Hf") if e not in seen)
    energies = np.linspace(K_EDGE_ENERGY_EV[element] - 15, K_EDGE_ENERGY_EV[element] + 45, 120)
    mu = 0.5 + np.arctan(energies - K_EDGE_ENERGY_EV[element]) / np.pi
    body = {"spectra": {element: {"energies_ev": energies.tolist(), "mu": mu.tolist()}}, "formula": element}
    answer = post_json(client, {**body, "space_group": 225})
    assert answer["decision"] == "abstain" and "unseen_element" in codes(answer)
    assert 0.0 <= answer["probability"] <= 1.0  # still returned


def test_a_spectrum_unlike_any_training_spectrum_abstains(client):
    spectrum, material = training_spectrum()
    energies = spectrum.energies_ev.astype(float)
    ordinary = {"energies_ev": energies.tolist(), "mu": spectrum.mu.astype(float).tolist()}
    body = {"spectra": {spectrum.element: ordinary}, "formula": spectrum.element, "space_group": 225}
    assert "off_distribution" not in codes(post_json(client, body))
    # The same edge with a strong oscillation on top: no training spectrum looks like it.
    wobble = spectrum.mu.astype(float) * (1.0 + 0.8 * np.sin((energies - energies[0]) / 1.5))
    body["spectra"][spectrum.element] = {"energies_ev": energies.tolist(), "mu": wobble.tolist()}
    answer = post_json(client, body)
    assert answer["decision"] == "abstain" and "off_distribution" in codes(answer)


def test_half_the_formula_without_spectra_abstains_for_a_model_without_a_prior(client):
    spectrum, material = training_spectrum()
    points = {"energies_ev": spectrum.energies_ev.tolist(), "mu": spectrum.mu.tolist()}
    others = [e for e in ("Li", "Na", "K", "Rb") if e != spectrum.element][:2]
    body = {"spectra": {spectrum.element: points}, "formula": f"{spectrum.element}{''.join(others)}"}
    answer = post_json(client, {**body, "space_group": 225})
    assert answer["model_kind"] == "svm-sg" and answer["decision"] == "abstain"
    assert "missing_spectra" in codes(answer)
    assert answer["elements"] == [spectrum.element] and answer["missing_elements"] == sorted(others)


def test_a_probability_inside_the_band_abstains(client, trained_world):
    spectrum, material = training_spectrum()
    points = {"energies_ev": spectrum.energies_ev.tolist(), "mu": spectrum.mu.tolist()}
    body = {"spectra": {spectrum.element: points}, "formula": spectrum.element, "space_group": 225}
    rule = load_bundle(trained_world.version).decision_rule
    everything = DecisionRule(rule.calibrator, Band(low=0.0, high=1.0), {})
    with serving(trained_world.version, decision_rule=everything):
        answer = post_json(client, body)
    assert answer["decision"] == "abstain" and codes(answer) == ["uncertain"]
    assert answer["band"]["low"] == 0.0 and answer["band"]["high"] == 1.0
    nothing = DecisionRule(rule.calibrator, Band(low=0.5, high=0.5), {})
    with serving(trained_world.version, decision_rule=nothing):
        decided = post_json(client, body)
    assert decided["decision"] in ("topological", "trivial") and decided["reasons"] == []
    assert decided["decision"] == ("topological" if decided["probability"] >= 0.5 else "trivial")


# --- Measured spectra and partial spectra ---------------------------------------------------


def anatase_points():
    table = np.loadtxt(DATA / "measured" / "anatase_ti_k_measured.txt")
    table = table[np.argsort(table[:, 0], kind="stable")]
    return table[:, 0], table[:, 1]


def upload(client, name, content, **fields):
    from django.core.files.uploadedfile import SimpleUploadedFile

    part = SimpleUploadedFile(name, content, content_type="text/plain")
    response = client.post(URL, data={"file": [part], **fields}, format="multipart")
    assert response.status_code == 200, response.content
    return response.json()


def test_measured_anatase_is_never_a_confident_topological_and_every_format_is_read_alike(client):
    """The bundled measured anatase Ti K edge (a trivial oxide), as JSON, as a CSV upload and as
    an XDI upload: one normalised input, so one probability and one decision, never a decided
    topological."""
    energies, mu = anatase_points()
    fields = {"formula": "TiO2", "space_group": 141}
    as_json = post_json(client, {"spectra": {"Ti": {"energies_ev": energies.tolist(), "mu": mu.tolist()}}, **fields})
    csv = "energy,mu\n" + "\n".join(f"{e!r},{m!r}" for e, m in zip(energies.tolist(), mu.tolist(), strict=True))
    as_csv = upload(client, "anatase.csv", csv.encode(), element="Ti", **fields)
    xdi = "\n".join(
        ["# XDI/1.0", "# Column.1: energy eV", "# Column.2: mutrans", "# Element.symbol: Ti", "# Element.edge: K"]
        + ["# ///", "#----", "# energy mutrans"]
        + [f"{e!r} {m!r}" for e, m in zip(energies.tolist(), mu.tolist(), strict=True)]
    )
    as_xdi = upload(client, "anatase.xdi", xdi.encode(), **fields)
    for answer in (as_csv, as_xdi):
        for key in ("probability", "raw_probability", "decision", "reasons", "model_version"):
            assert answer[key] == as_json[key], key
    assert as_json["decision"] in ("trivial", "abstain")
    if as_json["decision"] == "abstain":
        assert as_json["reasons"]


def test_partial_spectra_are_answered_by_a_model_that_can_use_the_composition(client, trained_world):
    from materials.learning import training

    with mock.patch("materials.tasks.base.enqueue_on_commit"):
        run = training.request_training("cnn-sg-composition", {"epochs": 2})
    training.train_model_version(run.pk)
    composition_model = ModelVersion.objects.get(pk=run.model_version_id)
    try:
        spectrum, material = training_spectrum()
        points = {"energies_ev": spectrum.energies_ev.tolist(), "mu": spectrum.mu.tolist()}
        other = next(e for e in ("Li", "Na", "K") if e != spectrum.element)
        body = {"spectra": {spectrum.element: points}, "formula": f"{spectrum.element}{other}"}
        answer = post_json(client, {**body, "space_group": 225})
        assert answer["model_version"] == composition_model.pk and answer["model_kind"] == "cnn-sg-composition"
        assert "cnn-sg-composition" in answer["answered_by"] and "composition" in answer["answered_by"]
        assert answer["elements"] == [spectrum.element] and answer["missing_elements"] == [other]
        # Trained on complete spectra only, it reads the fractions but cannot stand in for the
        # missing half: it answers, and abstains (only a prior-based model would not).
        assert answer["decision"] == "abstain" and "missing_spectra" in codes(answer)
        # Complete spectra stay with the production model.
        complete = post_json(client, {**body, "formula": spectrum.element, "space_group": 225})
        assert complete["model_version"] == trained_world.version.pk
    finally:
        composition_model.delete()


def test_the_command_gives_the_apis_answer_and_says_why_it_abstains(client):
    """``manage.py classify`` on the measured anatase file: the API's answer, word for word."""
    import io

    from django.core.management import call_command

    path = DATA / "measured" / "anatase_ti_k_measured.txt"
    args = [str(path), "--element", "Ti", "--formula", "TiO2", "--space-group", "141", "--sort-energies"]
    out = io.StringIO()
    call_command("classify", *args, "--json", stdout=out)
    from_command = json.loads(out.getvalue())
    energies, mu = anatase_points()
    from_api = post_json(
        client,
        {
            "spectra": {"Ti": {"energies_ev": energies.tolist(), "mu": mu.tolist()}},
            "formula": "TiO2",
            "space_group": 141,
        },
    )
    assert from_command == from_api  # --json is the API's body, every field
    out = io.StringIO()
    call_command("classify", *args, stdout=out)
    text = out.getvalue()
    calibrated = "calibrated " if from_api["calibrated"] else ""
    assert text.startswith(f"{from_api['decision']}: {calibrated}P(topological) = {from_api['probability']:.3f}")
    assert "spectra seen: Ti; no spectrum for O" in text
    for reason in from_api["reasons"]:
        assert f"abstain ({reason['code']}): {reason['text']}" in text


def test_the_command_and_an_upload_of_the_same_files_give_the_same_body(client, tmp_path):
    """A CSV spectrum and a CIF, once as ``manage.py classify ... --json`` and once as a multipart
    upload: one reading, one check, one answer."""
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command

    record = json.loads((DATA / "reference" / "licoo2_co_k_mp.json").read_text())
    rows = "".join(f"{e},{m}\n" for e, m in zip(record["energies_ev"], record["mu"], strict=True))
    csv = tmp_path / "co.csv"
    csv.write_text("energy,mu\n" + rows)
    cif = DATA / "structures" / "LiCoO2_mp24850.cif"
    out = io.StringIO()
    call_command("classify", str(csv), "--element", "Co", "--structure", str(cif), "--json", stdout=out)
    response = client.post(
        URL,
        data={
            "file": [SimpleUploadedFile("co.csv", csv.read_bytes(), content_type="text/csv")],
            "element": "Co",
            "structure": SimpleUploadedFile(cif.name, cif.read_bytes()),
        },
        format="multipart",
    )
    assert response.status_code == 200, response.content
    assert json.loads(out.getvalue()) == response.json()
    assert response.json()["space_group_source"] == "structure" and response.json()["space_group"] == 166


def test_the_material_page_shows_the_calibrated_probability_and_the_decision(client, trained_world):
    from django.test import Client
    from django.urls import reverse

    from materials.learning.decisions import rule_from_metrics
    from materials.models import Prediction

    spectrum, material = training_spectrum()
    Prediction.objects.create(
        material=material, model_version=trained_world.version, probability=0.6, predicted_class="topological"
    )
    rule = rule_from_metrics(trained_world.version)
    calibrated = float(rule.calibrate(np.array([0.6]))[0])
    body = Client().get(reverse("materials:material-detail", args=[material.pk])).content.decode()
    assert f"{calibrated:.3f}" in body and f'class="badge {rule.band.decide(calibrated)}"' in body
    assert "P(topological) =" in body and "decision <span" in body
    Prediction.objects.filter(material=material).delete()


def test_the_material_page_shows_the_stored_prediction_and_no_second_number(trained_world, db):
    """With a stored prediction of the production model, the page's answer is that prediction's
    calibrated probability and decision, not the model run again on the page."""
    from django.test import Client
    from django.urls import reverse

    from materials.learning.arrays import load_records
    from materials.learning.decisions import rule_from_metrics
    from materials.learning.inference import classify_material
    from materials.models import Prediction

    spectrum, material = training_spectrum()
    version = trained_world.version
    live = classify_material(version, load_records([material.pk], with_spectra=True)).probability
    rule = rule_from_metrics(version)
    raw = next(p for p in (0.9, 0.6, 0.1) if abs(float(rule.calibrate(np.array([p]))[0]) - live) > 0.01)
    stored = float(rule.calibrate(np.array([raw]))[0])
    Prediction.objects.create(material=material, model_version=version, probability=raw, predicted_class="trivial")
    try:
        body = Client().get(reverse("materials:material-detail", args=[material.pk])).content.decode()
        drivers = body[body.index('id="drivers-heading"') :]
        assert "stored prediction gives" in drivers and f"P(topological) = {stored:.3f}" in drivers
        assert f"{live:.3f}" not in body
    finally:
        Prediction.objects.filter(material=material).delete()


def test_the_model_page_reports_calibration_on_test_and_the_reliability_diagram(trained_world, db):
    from django.test import Client
    from django.urls import reverse

    version = trained_world.version
    body = Client().get(reverse("materials:model-detail", args=[version.pk])).content.decode()
    calibration = version.metrics["calibration"]
    assert "Calibration and abstaining" in body and "reliability-chart" in body
    assert f"{calibration['ece_test_before']:.3f}</strong> raw" in body
    assert f"{calibration['ece_test_after']:.3f}</strong> calibrated" in body
    assert "Preprocessing version 2" in body


def test_stored_predictions_are_listed_with_the_calibrated_probability_and_decision(client, trained_world):
    from materials.learning.decisions import rule_from_metrics
    from materials.models import Prediction

    spectrum, material = training_spectrum()
    version = trained_world.version
    Prediction.objects.create(material=material, model_version=version, probability=0.3, predicted_class="trivial")
    try:
        response = client.get(f"/api/predictions/?model={version.pk}")
        assert response.status_code == 200, response.content
        row = next(r for r in response.json()["results"] if r["material"] == material.pk)
        rule = rule_from_metrics(version)
        expected = float(rule.calibrate(np.array([0.3]))[0])
        assert row["probability"] == 0.3
        assert row["calibrated_probability"] == pytest.approx(expected, abs=1e-12)
        assert row["decision"] == rule.band.decide(row["calibrated_probability"])
    finally:
        Prediction.objects.filter(material=material, model_version=version).delete()


def test_the_material_page_answers_from_partial_spectra_and_says_so(trained_world, db):
    """A material with one element's spectrum of three: the page still answers, names the
    spectra it answered from, and abstains for the missing ones (SVM-sg has no prior)."""
    from django.test import Client
    from django.urls import reverse

    from materials.models import Material

    spectrum, original = training_spectrum()
    others = [e for e in ("Li", "Na", "K") if e != spectrum.element][:2]
    elements = sorted([spectrum.element, *others])
    partial = Material.objects.create(
        formula=f"{spectrum.element}{''.join(others)}",
        reduced_formula=f"{spectrum.element}{''.join(others)}",
        elements=elements,
        space_group_number=225,
        source=Material.Source.USER,
    )
    Spectrum.objects.create(
        material=partial,
        element=spectrum.element,
        energies_ev=spectrum.energies_ev,
        mu=spectrum.mu,
        source=spectrum.source,
    )
    try:
        body = Client().get(reverse("materials:material-detail", args=[partial.pk])).content.decode()
        assert "needs a K-edge spectrum of every element" in body
        assert f"Answered from the {spectrum.element} spectra by production model" in body
        assert 'class="badge abstain"' in body and "<code>missing_spectra</code>" in body
    finally:
        partial.delete()


def test_a_spectrum_covering_half_the_models_window_abstains(client):
    """A measured table that stops 22 eV above its edge: normalisable, but half of the model's
    window would be its last value repeated; no answer is given on that."""
    from mlcore.spectrum import find_e0

    spectrum, material = training_spectrum()
    energies, mu = spectrum.energies_ev.astype(float), spectrum.mu.astype(float)
    keep = energies <= find_e0(energies, mu) + 22.0
    body = {
        "spectra": {spectrum.element: {"energies_ev": energies[keep].tolist(), "mu": mu[keep].tolist()}},
        "formula": spectrum.element,
        "space_group": 225,
    }
    answer = post_json(client, body)
    texts = [reason["text"] for reason in answer["reasons"] if reason["code"] == "off_distribution"]
    assert answer["decision"] == "abstain" and any("of the model's window" in text for text in texts)
    whole = {"energies_ev": energies.tolist(), "mu": mu.tolist()}
    full = post_json(client, {**body, "spectra": {spectrum.element: whole}})
    assert not any("of the model's window" in reason["text"] for reason in full["reasons"])


def test_the_api_the_command_and_the_material_page_give_one_answer_for_one_material(client, trained_world, tmp_path):
    """One stored material, asked three ways: ``POST /api/classify/`` with its spectra, formula and
    space group; ``manage.py classify`` on the same body as a file; and its page after the batch
    path (``classify_ids``) stored its prediction. Same calibrated probability, decision and
    reasons everywhere."""
    import html
    import io

    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from materials.learning.inference import classify_ids
    from materials.models import Material, Prediction

    version = trained_world.version
    material = Material.objects.filter(has_spectra=True).exclude(predictions__model_version=version).first()
    material = material or Material.objects.filter(has_spectra=True).first()
    Prediction.objects.filter(material=material, model_version=version).delete()
    spectra = {
        s.element: {"energies_ev": [float(e) for e in s.energies_ev], "mu": [float(m) for m in s.mu]}
        for s in material.spectra.filter(source__in=["feff", "materials_project"])
    }
    body = {"spectra": spectra, "formula": material.formula, "space_group": material.space_group_number}

    from_api = post_json(client, body)

    request = tmp_path / "request.json"
    request.write_text(json.dumps(body))
    out = io.StringIO()
    call_command("classify", str(request), "--json", stdout=out)
    assert json.loads(out.getvalue()) == from_api

    assert classify_ids(version, [material.pk]) == 1
    try:
        page = html.unescape(Client().get(reverse("materials:material-detail", args=[material.pk])).content.decode())
        answer = page[page.index('id="drivers-heading"') :]
        assert "stored prediction gives" in answer
        assert f"P(topological) = {from_api['probability']:.3f}" in answer
        assert f'class="badge {from_api["decision"]}"' in page
        for reason in from_api["reasons"]:
            assert reason["text"] in answer, reason
    finally:
        Prediction.objects.filter(material=material, model_version=version).delete()
