"""POST /api/classify/: real spectra against a really trained production model (SVM-sg),
strict validation with field-level messages, uploads, limits, permissions, throttling."""

from __future__ import annotations

import json
import math

import pytest
from django.core.cache import cache

from materials.models import Job, Material, ModelVersion, Prediction, Spectrum
from tests.api_support import DATA, THROTTLE_OFF, spectrum_payload, token_client, trained_world_fixture  # noqa: F401

URL = "/api/classify/"


@pytest.fixture(autouse=True)
def no_throttles(settings):
    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": dict(THROTTLE_OFF)}


@pytest.fixture
def client(trained_world, db):
    return token_client(trained_world.user_token)


def post_json(client, body):
    return client.post(URL, data=json.dumps(body), content_type="application/json")


def licoo2(**extra):
    return {"spectra": {"Co": spectrum_payload("Co")}, "formula": "LiCoO2", "space_group": 166, **extra}


def co_errors(response):
    assert response.status_code == 400, response.content
    return response.json()["spectra"]["Co"]


# --- Answers ------------------------------------------------------------------------------


def test_classifies_a_real_spectrum_and_flags_missing_edges(client, trained_world, django_assert_max_num_queries):
    with django_assert_max_num_queries(6):
        response = post_json(client, licoo2())
    assert response.status_code == 200, response.content
    answer = response.json()
    assert 0.0 <= answer["probability"] <= 1.0
    assert answer["model_version"] == trained_world.version.pk
    assert answer["model_kind"] == "svm-sg"
    assert answer["threshold"] == pytest.approx(trained_world.version.threshold)
    expected = "topological" if answer["raw_probability"] >= answer["threshold"] else "trivial"
    assert answer["predicted_class"] == expected
    # One of LiCoO2's three elements has a spectrum and SVM-sg cannot use the composition: no answer.
    assert answer["decision"] == "abstain"
    assert "missing_spectra" in [reason["code"] for reason in answer["reasons"]]
    assert answer["calibrated"] in (True, False) and answer["preprocessing_version"] == 2
    assert answer["elements"] == ["Co"]
    assert answer["missing_elements"] == ["Li", "O"]
    assert answer["complete"] is False
    assert any("no spectrum for Li, O" in note for note in answer["warnings"])
    assert answer["space_group"] == 166 and answer["space_group_source"] == "payload"
    assert answer["composition_source"] == "formula"
    assert set(answer["trust"]) == {"Co"}
    # One spectrum: there is nothing to leave out.
    assert answer["contributions"] == {}


def test_a_spectrum_on_another_energy_scale_gets_the_same_answer(client, trained_world):
    """Preprocessing version 2 aligns every spectrum on its own E0 and normalises its edge step:
    15 eV higher (the gap between the bundled FEFF without SCF and MP's scale) and 30 times
    brighter, a spectrum is the same input; the offset is still reported, as information."""
    spectrum = Spectrum.objects.filter(source="feff", material__has_spectra=True).select_related("material").first()
    material = spectrum.material
    points = {"energies_ev": spectrum.energies_ev.tolist(), "mu": spectrum.mu.tolist()}
    body = {"spectra": {spectrum.element: points}, "formula": material.formula, "space_group": 166}
    on_scale = post_json(client, body).json()
    assert abs(on_scale["edge_offsets_ev"][spectrum.element]) < 5.0
    assert on_scale["off_scale_elements"] == []

    points["energies_ev"] = [energy + 15.0 for energy in points["energies_ev"]]
    points["mu"] = [30.0 * value for value in points["mu"]]
    answer = post_json(client, body).json()
    assert answer["edge_offsets_ev"][spectrum.element] == pytest.approx(
        on_scale["edge_offsets_ev"][spectrum.element] + 15.0, abs=0.01
    )
    assert answer["off_scale_elements"] == []
    assert answer["probability"] == pytest.approx(on_scale["probability"], abs=1e-4)


def test_a_model_stored_before_preprocessing_versions_keeps_reading_absolute_energies(client, trained_world):
    """A bundle whose preprocessor has no version is version 1: absolute energies, raw
    intensities, and the off-scale warning for an edge 15 eV away."""
    from materials.learning.arrays import load_records
    from materials.learning.artifacts import write_bundle
    from materials.learning.inference import load_bundle
    from materials.learning.training import transform_records
    from mlcore.preprocess import SpectrumPreprocessor

    version = trained_world.version
    bundle = load_bundle(version)
    training_ids = list(version.dataset.assignments.filter(subset="train").values_list("material_id", flat=True))
    records = load_records(training_ids)
    state = SpectrumPreprocessor(version=1).fit(records.spectra).to_dict()
    del state["version"]
    legacy = type(bundle)(kind=bundle.kind, model=bundle.model, preprocessor=SpectrumPreprocessor.from_dict(state))
    assert legacy.preprocessor.version == 1 and transform_records(legacy.preprocessor, records).spectra.size
    name, sha = write_bundle(f"models/legacy-{version.pk}.zip", legacy)
    old = ModelVersion.objects.create(
        kind=version.kind, dataset=version.dataset, status="ready", threshold=version.threshold, artifact_sha256=sha
    )
    old.artifact.name = name
    old.save()
    ModelVersion.objects.filter(pk=version.pk).update(is_production=False)
    ModelVersion.objects.filter(pk=old.pk).update(is_production=True)
    try:
        spectrum = Spectrum.objects.filter(source="feff", material__has_spectra=True).first()
        shifted = {"energies_ev": [e + 15.0 for e in spectrum.energies_ev.tolist()], "mu": spectrum.mu.tolist()}
        body = {"spectra": {spectrum.element: shifted}, "formula": spectrum.material.formula, "space_group": 166}
        answer = post_json(client, body).json()
        assert answer["model_version"] == old.pk
        assert answer["off_scale_elements"] == [spectrum.element]
        assert answer["decision"] == "abstain" and answer["calibrated"] is False
        assert answer["probability"] == answer["raw_probability"]  # stored before calibration: raw
        assert answer["preprocessing_version"] == 1
        reasons = {reason["code"]: reason["text"] for reason in answer["reasons"]}
        assert "another energy scale" in reasons["off_distribution"]
    finally:
        ModelVersion.objects.filter(pk=old.pk).update(is_production=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_production=True)
        old.delete()


def test_leave_one_element_out_contributions(client, trained_world):
    ti = ti_feff_spectrum()
    o = o_spectrum_from_training_data()
    response = post_json(client, {"spectra": {"Ti": ti, "O": o}, "formula": "TiO2", "space_group": 141})
    assert response.status_code == 200, response.content
    answer = response.json()
    assert set(answer["contributions"]) == {"Ti", "O"}
    assert all(math.isfinite(value) for value in answer["contributions"].values())
    assert answer["complete"] is True and answer["missing_elements"] == []
    for element in ("Ti", "O"):
        for trust in answer["trust"][element].values():
            assert set(trust) == {"recall", "support"}


def test_space_group_and_composition_from_a_structure(client):
    from pymatgen.core import Structure

    structure = Structure.from_file(DATA / "structures" / "LiCoO2_mp24850.cif")
    response = post_json(client, {"spectra": {"Co": spectrum_payload("Co")}, "structure": structure.as_dict()})
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["space_group"] == 166 and answer["space_group_source"] == "structure"
    assert answer["composition_source"] == "structure"
    assert answer["missing_elements"] == ["Li", "O"]


def test_classifying_changes_nothing_in_the_database(client):
    before = [model.objects.count() for model in (Material, Spectrum, Prediction, ModelVersion, Job)]
    assert post_json(client, licoo2()).status_code == 200
    assert [model.objects.count() for model in (Material, Spectrum, Prediction, ModelVersion, Job)] == before


# --- Validation: each problem is a 400 naming the field ----------------------------------------------


def test_nan_is_refused_with_its_index(client):
    body = licoo2()
    text = json.dumps(body).replace(str(body["spectra"]["Co"]["mu"][7]), "NaN", 1)
    response = client.post(URL, data=text, content_type="application/json")
    errors = co_errors(response)
    assert "mu[7] is NaN" in errors["mu"][0]


def test_infinity_is_refused(client):
    body = licoo2()
    text = json.dumps(body).replace(str(body["spectra"]["Co"]["energies_ev"][3]), "Infinity", 1)
    errors = co_errors(client.post(URL, data=text, content_type="application/json"))
    assert "energies_ev[3] is infinite" in errors["energies_ev"][0]


def test_unsorted_energies_are_refused_with_the_index(client):
    body = licoo2()
    energies = body["spectra"]["Co"]["energies_ev"]
    energies[5], energies[6] = energies[6], energies[5]
    errors = co_errors(post_json(client, body))
    message = errors["energies_ev"][0]
    assert "strictly increasing" in message and "index 6 decreases" in message


def test_duplicate_energies_are_refused(client):
    body = licoo2()
    energies = body["spectra"]["Co"]["energies_ev"]
    energies[10] = energies[9]
    errors = co_errors(post_json(client, body))
    assert "index 10 repeats" in errors["energies_ev"][0]


def test_duplicates_are_refused_even_when_sorting(client):
    body = licoo2(sort_energies=True)
    energies = body["spectra"]["Co"]["energies_ev"]
    energies[10] = energies[9]
    assert "repeats" in co_errors(post_json(client, body))["energies_ev"][0]


def test_too_few_points(client):
    spectrum = spectrum_payload("Co")
    body = licoo2()
    body["spectra"]["Co"] = {"energies_ev": spectrum["energies_ev"][:9], "mu": spectrum["mu"][:9]}
    assert "9 points; at least 10" in co_errors(post_json(client, body))["energies_ev"][0]


def test_mismatched_lengths(client):
    body = licoo2()
    body["spectra"]["Co"]["mu"] = body["spectra"]["Co"]["mu"][:-1]
    assert "99 mu values but 100 energies" in co_errors(post_json(client, body))["mu"][0]


def test_energies_far_from_the_k_edge(client):
    body = licoo2()
    body["spectra"]["Co"]["energies_ev"] = [e - 3000 for e in body["spectra"]["Co"]["energies_ev"]]
    message = co_errors(post_json(client, body))["energies_ev"][0]
    assert "outside the Co K-edge region" in message


def test_a_spectrum_that_stops_just_above_its_edge_is_refused(client):
    # Inside the tabulated K-edge region, but ending 10 eV above the edge: no edge step to normalise by.
    body = licoo2()
    points = body["spectra"]["Co"]
    keep = [i for i, e in enumerate(points["energies_ev"]) if e < 7738.5]
    body["spectra"]["Co"] = {
        "energies_ev": [points["energies_ev"][i] for i in keep],
        "mu": [points["mu"][i] for i in keep],
    }
    message = co_errors(post_json(client, body))["energies_ev"][0]
    assert message.startswith("Co spectrum ends") and "above its edge" in message


def test_unknown_elements(client):
    body = licoo2(formula="")
    body["spectra"] = {"Xx": spectrum_payload("Co"), "He": spectrum_payload("Co")}
    response = post_json(client, body)
    assert response.status_code == 400
    errors = response.json()["spectra"]
    assert "unknown absorbing element 'Xx'" in errors["Xx"][0]
    assert "H or He" in errors["He"][0]


def test_non_numbers_in_points(client):
    body = licoo2()
    body["spectra"]["Co"]["mu"][4] = "abc"
    assert "item 4 is 'abc'" in co_errors(post_json(client, body))["mu"][0]


def test_spectrum_of_an_element_outside_the_formula(client):
    response = post_json(client, licoo2(formula="TiO2"))
    assert response.status_code == 400
    assert "not in the material's composition" in response.json()["spectra"]["Co"][0]


def test_the_model_needs_a_space_group(client):
    body = licoo2()
    del body["space_group"]
    response = post_json(client, body)
    assert response.status_code == 400
    assert "uses the space group" in response.json()["space_group"][0]


def test_bad_space_group_and_formula(client):
    response = post_json(client, licoo2(space_group=231, formula="LiQq2"))
    assert response.status_code == 400
    assert set(response.json()) == {"space_group", "formula"}


def test_a_malformed_structure(client):
    response = post_json(client, licoo2(structure={"lattice": "cubic", "sites": [{"species": "Co"}]}))
    assert response.status_code == 400
    assert "not a pymatgen Structure" in response.json()["structure"][0]
    response = post_json(client, licoo2(structure={"sites": []}))
    assert "non-empty 'sites'" in response.json()["structure"][0]


def test_empty_and_malformed_bodies(client):
    assert post_json(client, {"spectra": {}}).json()["spectra"] == ["give at least one spectrum"]
    assert post_json(client, [1, 2]).status_code == 400
    response = client.post(URL, data="{not json", content_type="application/json")
    assert response.status_code == 400 and "JSON parse error" in response.json()["detail"]
    assert client.post(URL, data="x", content_type="text/plain").status_code == 415


def test_payload_over_the_size_limit(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = post_json(client, licoo2())
    assert response.status_code == 413
    assert "size limit of 1024 bytes" in response.json()["detail"]


# --- Uploads -------------------------------------------------------------------------------------------


def measured_anatase() -> bytes:
    return (DATA / "measured" / "anatase_ti_k_measured.txt").read_bytes()


def upload(client, files, **fields):
    from django.core.files.uploadedfile import SimpleUploadedFile

    parts = [SimpleUploadedFile(name, content, content_type="text/plain") for name, content in files]
    return client.post(URL, data={"file": parts, **fields}, format="multipart")


def test_measured_csv_upload_is_refused_until_sorted(client):
    # The bundled measured anatase spectrum was digitised: three points are out of order.
    response = upload(client, [("anatase.txt", measured_anatase())], element="Ti", formula="TiO2", space_group=141)
    assert response.status_code == 400
    message = response.json()["spectra"]["Ti"]["energies_ev"][0]
    assert "index 25 decreases" in message and "sort_energies" in message
    response = upload(
        client,
        [("anatase.txt", measured_anatase())],
        element="Ti",
        formula="TiO2",
        space_group=141,
        sort_energies="true",
    )
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["elements"] == ["Ti"] and answer["missing_elements"] == ["O"]


def test_csv_with_header_and_element_column(client):
    rows = ["element,energy_ev,mu"]
    co = spectrum_payload("Co")
    rows += [f"Co,{e},{m}" for e, m in zip(co["energies_ev"], co["mu"], strict=True)]
    response = upload(client, [("licoo2.csv", "\n".join(rows).encode())], formula="LiCoO2", space_group=166)
    assert response.status_code == 200, response.content
    assert response.json()["elements"] == ["Co"]


def test_xdi_upload(client):
    co = spectrum_payload("Co")
    lines = [
        "# XDI/1.0",
        "# Column.1: energy eV",
        "# Column.2: mutrans",
        "# Element.symbol: Co",
        "# Element.edge: K",
        "# ///",
        "#----",
        "# energy mutrans",
    ]
    lines += [f"{e} {m}" for e, m in zip(co["energies_ev"], co["mu"], strict=True)]
    response = upload(client, [("licoo2.xdi", "\n".join(lines).encode())], formula="LiCoO2", space_group=166)
    assert response.status_code == 200, response.content
    assert response.json()["elements"] == ["Co"]


def test_xdi_of_another_edge_is_refused(client):
    text = b"# XDI/1.0\n# Element.symbol: Co\n# Element.edge: L3\n# Column.1: energy eV\n# Column.2: mu\n7700 1\n"
    response = upload(client, [("co.xdi", text)], formula="LiCoO2", space_group=166)
    assert response.status_code == 400
    assert "only K-edge" in response.json()["file"][0]


def test_upload_errors_name_the_line(client):
    content = b"# energy mu\n4965.1 0.1\n4966.2 abc\n"
    response = upload(client, [("bad.csv", content)], element="Ti", formula="TiO2", space_group=141)
    assert response.status_code == 400
    assert response.json() == {"file": ["bad.csv: line 3: mu is not a number ('abc')"]}


def test_two_column_upload_needs_the_element(client):
    response = upload(client, [("anatase.txt", measured_anatase())], formula="TiO2", space_group=141)
    assert response.status_code == 400
    assert "send the 'element' field" in response.json()["file"][0]


def test_upload_with_a_cif_structure(client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    co = spectrum_payload("Co")
    csv = "energy,mu\n" + "\n".join(f"{e},{m}" for e, m in zip(co["energies_ev"], co["mu"], strict=True))
    response = client.post(
        URL,
        data={
            "file": SimpleUploadedFile("co.csv", csv.encode()),
            "element": "Co",
            "structure": SimpleUploadedFile("LiCoO2.cif", (DATA / "structures" / "LiCoO2_mp24850.cif").read_bytes()),
        },
        format="multipart",
    )
    assert response.status_code == 200, response.content
    assert response.json()["space_group"] == 166


def test_upload_over_the_size_limit(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    response = upload(client, [("anatase.txt", measured_anatase())], element="Ti", space_group=141)
    assert response.status_code == 413


# --- Permissions, throttling, no model ----------------------------------------------------------------


def test_anonymous_cannot_classify(trained_world, db):
    response = post_json(token_client(), licoo2())
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_invalid_token_is_401(trained_world, db):
    assert post_json(token_client("not-a-token"), licoo2()).status_code == 401


def test_classify_is_throttled_per_user(client, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**THROTTLE_OFF, "classify": "2/minute"},
    }
    assert [post_json(client, licoo2()).status_code for _ in range(3)] == [200, 200, 429]
    response = post_json(client, licoo2())
    assert response.status_code == 429 and "Retry-After" in response
    assert "throttled" in response.json()["detail"].lower()


def test_no_production_model_is_503(client):
    ModelVersion.objects.update(is_production=False)
    response = post_json(client, licoo2())
    assert response.status_code == 503
    assert "No production model" in response.json()["detail"]


# --- Helpers: more real spectra ---------------------------------------------------------------------


def ti_feff_spectrum():
    energies, mu = [], []
    for line in (DATA / "reference" / "anatase_ti_k_feff_mp.txt").read_text().splitlines():
        e, m = line.split()[:2]
        energies.append(float(e))
        mu.append(float(m))
    return {"energies_ev": energies, "mu": mu}


def o_spectrum_from_training_data():
    for line in (DATA / "spectra" / "spectra.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["element"] == "O":
            return {"energies_ev": record["energies_ev"], "mu": record["mu"]}
    raise AssertionError("no O spectrum in the bundled data")
