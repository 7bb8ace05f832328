"""The server-rendered pages, through Django's test client.

A real 40-compound subset of the bundled data is loaded once per module, two real
SVM-sg models are trained on it (a few seconds each) and the first is promoted and
classifies every material, so each page renders real metrics, predictions and
spectra. Every page's query count is bounded with ``django_assert_max_num_queries``.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from tests.conftest import DATA, make_subset

TRAIN_HINT = "python manage.py train --kind cnn-sg"


# --- The site's data: shared with tests/test_browser.py --------------------------------


@dataclass
class Site:
    production: object
    other: object
    batch: object
    material: object  # a material with spectra, labels and predictions of both models
    bare_material: object  # a material without spectra
    user: object


def train(kind: str, hyperparameters: dict | None = None):
    """Train one model version in-process (no broker, no on_commit), as a worker would."""
    from materials.learning import training
    from materials.learning.inference import classify_ids, unpredicted_ids
    from materials.tasks.base import run_tracked

    with mock.patch("materials.tasks.base.enqueue_on_commit"):
        run = training.request_training(kind, hyperparameters or {})
    run_tracked(run, lambda: training.train_model_version(run.pk))
    run.refresh_from_db()
    assert run.status == "done", run.error
    version = run.model_version
    version.refresh_from_db()
    classify_ids(version, unpredicted_ids(version))
    return version


def build_site(tmp: Path) -> Site:
    """Load the bundled subset, train and promote a real model, and record a screening."""
    from django.contrib.auth import get_user_model

    from materials.ingest.bundled import load_bundled
    from materials.learning.training import promote
    from materials.models import Material, Prediction, ScreeningBatch, ScreeningRow

    load_bundled(make_subset(tmp / "data", n_compounds=40))
    production = promote(train("svm-sg").pk)
    other = train("svm-sg", {"C": 10.0})
    add_unlabelled_twins(production, other)
    ranked = list(
        Prediction.objects.filter(model_version=production)
        .order_by("-probability")
        .values_list("material_id", flat=True)
    )
    batch = ScreeningBatch.objects.create(
        name="Bundled minerals",
        source="minerals.zip",
        status="done",
        progress=1.0,
        progress_message="classified",
        model_version=production,
        stage_counts={"files": 7, "parsed": 6, "unparseable": 1, "existing_materials": 6, "ranked": 6, "spectral": 2},
        rejected=[{"file": "broken.cif", "reason": "cannot parse CIF: no data block"}],
    )
    batch.materials.add(*ranked[:6])
    probabilities = dict(Prediction.objects.filter(model_version=production).values_list("material_id", "probability"))
    for index, material_id in enumerate(ranked[:6]):
        spectral = index < 2  # two reached stage 2, the rest are ranked by the prior
        p = probabilities[material_id]
        ScreeningRow.objects.create(
            batch=batch,
            material_id=material_id,
            files=[f"entry-{index}.cif"],
            stage="spectral" if spectral else "prior",
            prior_probability=p / 2 if spectral else p,
            spectral_probability=p if spectral else None,
            probability=p,
            reason="classified from spectra" if spectral else "prior only: outside the FEFF budget",
        )
    material = Material.objects.filter(pk__in=ranked, labels__isnull=False, spectra__isnull=False).exclude(
        mp_id=None
    ).distinct().order_by("id").first() or Material.objects.get(pk=ranked[0])
    bare = Material.objects.filter(has_spectra=False, spectra__isnull=True).order_by("id").first()
    user = get_user_model().objects.create_user("scientist", password="correct-horse-battery")
    return Site(production, other, batch, material, bare, user)


def add_unlabelled_twins(*versions, count: int = 4) -> list:
    """Candidates: copies of a few bundled compounds (structure and spectra) that no
    catalogue labels, as a screened mineral is, classified by each model."""
    from materials.learning.inference import classify_ids
    from materials.models import Material, Spectrum

    twins = []
    for original in Material.objects.filter(has_spectra=True).exclude(label="").order_by("id")[:count]:
        twin = Material.objects.create(
            formula=original.formula,
            reduced_formula=original.reduced_formula,
            elements=original.elements,
            structure=original.structure,
            space_group_number=original.space_group_number,
            space_group_symbol=original.space_group_symbol,
            crystal_system=original.crystal_system,
            source=Material.Source.USER,
        )
        for spectrum in original.spectra.all():
            Spectrum.objects.create(
                material=twin,
                element=spectrum.element,
                energies_ev=spectrum.energies_ev,
                mu=spectrum.mu,
                source=spectrum.source,
                settings=spectrum.settings,
            )
        twins.append(twin.pk)
    Material.objects.filter(pk__in=twins).refresh_has_spectra()
    for version in versions:
        classify_ids(version, twins)
    return twins


@pytest.fixture(scope="module")
def site(django_db_setup, django_db_blocker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pages")
    media = override_settings(MEDIA_ROOT=str(tmp / "media"))
    media.enable()
    try:
        with django_db_blocker.unblock():
            built = build_site(tmp)
            yield built
            call_command("flush", interactive=False, verbosity=0)
    finally:
        media.disable()


#: A table "too small" for ElementKeys whatever its ids: the plain LIKE filters.
PLAIN_FILTERS = 10**12


@pytest.fixture(autouse=True)
def plain_element_filters(monkeypatch):
    """Query counts here are those of the plain element filters. ElementKeys applies once the
    materials' ids pass MIN_TABLE_ID, and ids grow across the whole suite (PostgreSQL's
    sequences are not reset between tests), so whether it applied, adding a query, depended
    on which tests ran before (a full bundled load reaches id 31,000). Tests of ElementKeys
    switch it on themselves."""
    from materials.web import candidates

    monkeypatch.setattr(candidates.ElementKeys, "MIN_TABLE_ID", PLAIN_FILTERS)
    candidates.element_keys.clear()
    yield
    candidates.element_keys.clear()


def text(response) -> str:
    return response.content.decode()


def chart_figures(html: str) -> dict[str, dict]:
    """The plotly figures embedded in a page, by chart id."""
    import re

    found = {}
    for chart_id, payload in re.findall(
        r'<script type="application/json" id="([^"]+)-data">(.*?)</script>', html, re.S
    ):
        found[chart_id] = json.loads(payload)
    return found


# --- Empty database: every page says what to do next -------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("materials:dashboard", TRAIN_HINT),
        ("materials:candidate-list", TRAIN_HINT),
        ("materials:model-compare", TRAIN_HINT),
        ("materials:dataset", "python manage.py load_bundled"),
        ("materials:material-list", "python manage.py load_bundled"),
        ("materials:screening-list", "Upload a zip of CIF files"),
    ],
)
def test_every_page_renders_an_empty_state_on_an_empty_database(client, django_assert_max_num_queries, name, hint):
    with django_assert_max_num_queries(8):
        response = client.get(reverse(name))
    assert response.status_code == 200
    assert hint in text(response)
    assert 'class="empty"' in text(response)


@pytest.mark.django_db
def test_missing_objects_are_404_and_export_needs_a_production_model(client):
    assert client.get(reverse("materials:material-detail", args=[999999])).status_code == 404
    assert client.get(reverse("materials:model-detail", args=[999999])).status_code == 404
    assert client.get(reverse("materials:screening-detail", args=[999999])).status_code == 404
    assert client.get(reverse("materials:screening-status", args=[999999])).status_code == 404
    response = client.get(reverse("materials:candidate-export"))
    assert response.status_code == 404
    assert b"No production model" in response.content


@pytest.mark.django_db
def test_a_model_still_training_shows_progress_and_no_metrics(client):
    from materials.models import ModelVersion, TrainingRun

    version = ModelVersion.objects.create(kind="cnn-sg")
    TrainingRun.objects.create(
        model_version=version, status="running", progress=0.4, progress_message="epoch 4/10", total_epochs=10
    )
    response = client.get(reverse("materials:model-detail", args=[version.pk]))
    assert response.status_code == 200
    body = text(response)
    assert "epoch 4/10" in body and 'http-equiv="refresh"' in body
    assert "No metrics stored" in body and "No per-element metrics" in body


def test_healthz_still_answers(client, db):
    from django.db import connection

    assert client.get("/healthz").json() == {"status": "ok", "database": connection.vendor}


# --- Dashboard ----------------------------------------------------------------------


@pytest.mark.django_db
def test_dashboard_shows_the_production_model_with_split_version_and_recent_work(
    client, site, django_assert_max_num_queries
):
    with django_assert_max_num_queries(8):
        response = client.get(reverse("materials:dashboard"))
    body = text(response)
    summary = site.production.metrics["test"]
    assert str(site.production) in body
    assert f"{summary['topological_recall']:.2f}" in body
    assert f"test split of <strong>{summary['n_samples']}</strong>" in body
    assert site.production.split_hash[:12] in body
    assert site.batch.name in body  # recent screenings
    assert reverse("materials:model-detail", args=[site.other.pk]) in body  # recent runs


# --- Candidates ---------------------------------------------------------------------


def ranked_predictions(version, keep=lambda material: True):
    from materials.models import Prediction

    rows = Prediction.objects.filter(model_version=version).select_related("material")
    rows = sorted(rows, key=lambda p: (-p.probability, p.pk))  # ties: the prediction's id, as the index
    return [p for p in rows if keep(p.material)]


def listed_ids(response) -> list[int]:
    return [row.prediction.material_id for row in response.context["page"].rows]


@pytest.mark.django_db
def test_candidates_open_on_unlabelled_materials_with_known_ones_a_click_away(client, site):
    response = client.get(reverse("materials:candidate-list"))
    assert response.status_code == 200
    unlabelled = ranked_predictions(site.production, lambda m: m.label == "")
    assert 0 < len(unlabelled) < len(ranked_predictions(site.production))
    assert listed_ids(response) == [p.material_id for p in unlabelled[:50]]
    body = text(response)
    assert "A <strong>candidate</strong> is a material that no topology catalogue" in body
    assert '<option value="unlabelled" selected>' in body
    links = {link["value"]: link for link in response.context["label_links"]}
    assert links["unlabelled"]["current"] and not links["all"]["current"]
    for value, keep in (("all", lambda m: True), ("labelled", lambda m: m.label != "")):
        assert f'href="?{links[value]["query"]}"' in body
        shown = client.get(reverse("materials:candidate-list") + "?" + links[value]["query"])
        assert listed_ids(shown) == [p.material_id for p in ranked_predictions(site.production, keep)[:50]], value
    # The links keep the other filters.
    element = unlabelled[0].material.elements[0]
    response = client.get(reverse("materials:candidate-list"), {"include": element})
    assert all(f"include={element}" in link["query"] for link in response.context["label_links"])
    export = client.get(reverse("materials:candidate-export"))
    ids = [int(row["material_id"]) for row in csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode()))]
    assert ids == [p.material_id for p in unlabelled]  # the export of the default view: candidates too


@pytest.mark.django_db
def test_candidates_are_ranked_by_probability_with_trust_hints(client, site, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):
        response = client.get(reverse("materials:candidate-list"), {"label": "all"})
    assert response.status_code == 200
    expected = ranked_predictions(site.production)
    assert listed_ids(response) == [p.material_id for p in expected[:50]]
    rows = response.context["page"].rows
    assert [row.rank for row in rows] == list(range(1, len(rows) + 1))
    body = text(response)
    assert 'class="trust ' in body and "Validation recall of" in body
    # Every hint is the validation recall of the row's predicted class, with its support.
    from materials.models import ElementMetric

    first = rows[0]
    for hint in first.trust:
        metric = ElementMetric.objects.filter(
            model_version=site.production,
            subset="validation",
            element=hint.element,
            target_class=first.prediction.predicted_class,
        ).first()
        assert hint.support == (metric.support if metric else 0)
        assert hint.recall == (metric.recall if metric else None)


@pytest.mark.django_db
def test_candidate_filters_narrow_the_ranking(client, site, django_assert_max_num_queries):
    everything = ranked_predictions(site.production)
    common = max(
        {e for p in everything for e in p.material.elements},
        key=lambda e: sum(e in p.material.elements for p in everything),
    )
    middle = sorted(p.probability for p in everything)[len(everything) // 2]
    system = everything[0].material.crystal_system
    group = everything[0].material.space_group_number
    everyone = {"label": "all"}
    cases = [
        ({"include": common.lower(), **everyone}, lambda m, p: common in m.elements),
        ({"exclude": common, **everyone}, lambda m, p: common not in m.elements),
        ({"p_min": middle, **everyone}, lambda m, p: p >= middle),
        ({"p_max": middle, "label": "trivial"}, lambda m, p: p <= middle and m.label == "trivial"),
        ({"label": "topological"}, lambda m, p: m.label == "topological"),
        ({"label": "labelled"}, lambda m, p: m.label != ""),
        ({"label": "unlabelled"}, lambda m, p: m.label == ""),
        ({"include": common}, lambda m, p: m.label == "" and common in m.elements),  # the default: candidates
        ({"crystal_system": system, **everyone}, lambda m, p: m.crystal_system == system),
        ({"space_group": group, **everyone}, lambda m, p: m.space_group_number == group),
        (
            {"source": "materiae", "include": common, **everyone},
            lambda m, p: m.source == "materiae" and common in m.elements,
        ),
    ]
    for params, keep in cases:
        # Three queries, four on PostgreSQL with an element filter (ElementKeys reads MAX(id)).
        with django_assert_max_num_queries(4):
            response = client.get(reverse("materials:candidate-list"), params)
        expected = [p.material_id for p in everything if keep(p.material, p.probability)][:50]
        assert listed_ids(response) == expected, params
    narrowed = [p for p in everything if common in p.material.elements]
    assert 0 < len(narrowed) < len(everything)  # the element filter did something


@pytest.mark.django_db
def test_invalid_filters_explain_themselves(client, site):
    response = client.get(reverse("materials:candidate-list"), {"include": "Bi, Xx", "p_min": 0.9, "p_max": 0.1})
    assert response.status_code == 200
    body = text(response)
    assert "Not an element symbol: Xx" in body
    assert "below the lower bound" in body
    assert response.context["page"] is None
    response = client.get(reverse("materials:candidate-list"), {"include": "Bi", "exclude": "bi"})
    assert "cannot be both required and excluded" in text(response)


@pytest.mark.django_db
def test_element_filters_through_the_key_cache_match_the_plain_filters(site, monkeypatch):
    """On a large PostgreSQL table element filters go through ElementKeys; force it here."""
    from django.db import connection

    from materials.models import Material
    from materials.web import candidates

    if connection.vendor != "postgresql":
        pytest.skip("ElementKeys applies to PostgreSQL only; SQLite always uses the LIKE filters")
    everything = ranked_predictions(site.production)
    common = max(
        {e for p in everything for e in p.material.elements},
        key=lambda e: sum(e in p.material.elements for p in everything),
    )
    other = next(e for e in everything[0].material.elements if e != common)
    from materials.learning.ranking import RankFilter, RankQuery

    cases = [
        RankFilter(include=(common,)),
        RankFilter(include=(common, other)),
        RankFilter(include=(common,), exclude=(other,), label="trivial"),
        RankFilter(include=(other,), probability_min=0.2, probability_max=0.9),
        RankFilter(include=("Og",)),
    ]

    def ranked(rank_filter):
        return [row.material_id for row in RankQuery.for_model(site.production, rank_filter).iterate()]

    candidates.element_keys.clear()
    try:
        for rank_filter in cases:
            plain = ranked(rank_filter)
            monkeypatch.setattr(candidates.ElementKeys, "MIN_TABLE_ID", 0)
            assert candidates.selected_material_ids(rank_filter) is not None
            keyed = ranked(rank_filter)
            monkeypatch.setattr(candidates.ElementKeys, "MIN_TABLE_ID", PLAIN_FILTERS)
            assert keyed == plain, rank_filter
        # A new material with a new element set is found at once (MAX(id) grew).
        monkeypatch.setattr(candidates.ElementKeys, "MIN_TABLE_ID", 0)
        new = Material.objects.create(formula="OgTs", reduced_formula="OgTs", elements=["Og", "Ts"], source="user")
        assert candidates.selected_material_ids(RankFilter(include=("Og", "Ts"))) == [new.pk]
    finally:
        candidates.element_keys.clear()


@pytest.mark.django_db
def test_candidate_pages_do_not_count_and_end_with_an_empty_state(client, site, django_assert_max_num_queries):
    from materials.learning.ranking import RankFilter
    from materials.web.candidates import candidate_page

    everything = ranked_predictions(site.production)
    page = candidate_page(site.production, RankFilter(label="all"), 2, page_size=5)
    assert [row.rank for row in page.rows] == [6, 7, 8, 9, 10]
    assert [row.prediction.material_id for row in page.rows] == [p.material_id for p in everything[5:10]]
    assert page.has_next and page.has_previous
    last = candidate_page(site.production, RankFilter(label="all"), (len(everything) + 4) // 5, page_size=5)
    assert not last.has_next
    with django_assert_max_num_queries(4):
        response = client.get(reverse("materials:candidate-list"), {"page": 999, "include": "O"})
    assert "No candidates on page 999" in text(response)
    response = client.get(reverse("materials:candidate-list"), {"include": "Og"})
    assert "No candidates match these filters" in text(response)


@pytest.mark.django_db
def test_the_csv_export_holds_the_whole_filtered_ranking(client, site, django_assert_max_num_queries):
    everything = ranked_predictions(site.production)
    element = everything[0].material.elements[0]
    with django_assert_max_num_queries(4):
        response = client.get(reverse("materials:candidate-export"), {"include": element, "label": "all"})
        content = b"".join(response.streaming_content).decode()
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(content)))
    expected = [p for p in everything if element in p.material.elements]
    assert [int(r["material_id"]) for r in rows] == [p.material_id for p in expected]
    assert rows[0]["rank"] == "1" and rows[0]["model_version"] == str(site.production.pk)
    assert float(rows[0]["probability_topological"]) == pytest.approx(expected[0].probability, abs=1e-6)
    assert rows[0]["trust_validation_recall"].startswith(sorted(expected[0].material.elements)[0] + ":")
    bad = client.get(reverse("materials:candidate-export"), {"p_min": 2})
    assert bad.status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("label", ["unlabelled", "all", "labelled"])
def test_one_filter_gives_the_same_ranking_and_decisions_on_the_page_its_csv_and_the_api(client, site, label):
    """The page, its CSV, the API list and the API export parse into one filter and read one
    query: the same materials in the same order, each with the same calibrated probability and
    decision."""
    everything = ranked_predictions(site.production)
    common = max(
        {e for p in everything for e in p.material.elements},
        key=lambda e: sum(e in p.material.elements for p in everything),
    )
    page_params = {"include": common, "label": label, "p_min": 0.0}
    api_params = {"element": common, "label": label, "probability_min": 0.0, "page_size": 500}
    page = client.get(reverse("materials:candidate-list"), page_params).context["page"]
    shown = [(r.prediction.material_id, r.prediction.decision) for r in page.rows]
    export = client.get(reverse("materials:candidate-export"), page_params)
    exported = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    listed = client.get("/api/predictions/", api_params).json()["results"]
    api_export = client.get("/api/predictions/export/", {**api_params, "format": "csv"})
    api_exported = list(csv.DictReader(io.StringIO(b"".join(api_export.streaming_content).decode())))
    assert shown, "the filter should leave some materials"

    def pairs(rows, key="material_id"):
        return [(int(r[key]), r["decision"]) for r in rows]

    assert pairs(exported)[:50] == shown
    assert pairs(listed, "material") == pairs(exported) == pairs(api_exported)
    for mine, theirs in zip(exported, listed, strict=True):
        assert float(mine["calibrated_probability"]) == pytest.approx(theirs["calibrated_probability"], abs=1e-6)
    for decision in {r["decision"] for r in listed}:
        narrowed = client.get("/api/predictions/", {**api_params, "decision": decision}).json()["results"]
        assert [r["material"] for r in narrowed] == [r["material"] for r in listed if r["decision"] == decision]
        on_page = client.get(reverse("materials:candidate-list"), {**page_params, "decision": decision})
        assert [r.prediction.material_id for r in on_page.context["page"].rows] == [
            r["material"] for r in listed if r["decision"] == decision
        ][:50]


# --- Material detail ----------------------------------------------------------------


@pytest.mark.django_db
def test_material_detail_shows_identity_labels_spectra_predictions_and_drivers(
    client, site, django_assert_max_num_queries
):
    material = site.material
    with django_assert_max_num_queries(10):
        response = client.get(reverse("materials:material-detail", args=[material.pk]))
    assert response.status_code == 200
    body = text(response)
    assert material.formula in body and material.space_group_symbol in body
    assert material.mp_url in body
    for label in material.labels.all():
        assert label.raw_class in body and label.get_catalogue_display() in body
    # One raw trace per stored spectrum; the standardized ones ride along, hidden.
    figure = chart_figures(body)["spectra-chart"]
    groups = figure["layout"]["meta"]["groups"]
    assert groups.count("raw") == material.spectra.count()
    assert groups.count("standardized") >= 1  # the production model is spectral (SVM-sg)
    assert [trace["visible"] for trace in figure["data"]] == [g == "raw" for g in groups]
    # The predictions of every model version, and which element drives the decision.
    for version in (site.production, site.other):
        assert reverse("materials:model-detail", args=[version.pk]) in body
    explanation = response.context["explanation"]
    assert explanation.probability is not None
    if len(material.elements) > 1:
        assert explanation.driver is not None
        assert f"The <strong>{explanation.driver[0]}</strong> K-edge spectrum moves it most" in body
        assert "contributions-chart" in chart_figures(body)
    assert site.production.split_hash[:12] in body  # provenance
    assert "vendor/plotly.min.js" in body


@pytest.mark.django_db
def test_material_detail_aligns_a_spectrum_on_another_energy_scale(client, site):
    """Models read spectra aligned on their own E0 (preprocessing version 2): an MP spectrum
    15 eV up is no reason for an off-scale warning."""
    from materials.models import Spectrum

    material = site.material
    url = reverse("materials:material-detail", args=[material.pk])
    assert "Off the training energy scale" not in text(client.get(url))
    # The same spectrum from the Materials Project, 15 eV up (MP's scale against the bundled FEFF's):
    # models read FEFF first, so it only counts once the FEFF one is gone.
    feff = material.spectra.filter(source="feff").first()
    Spectrum.objects.create(
        material=material,
        element=feff.element,
        energies_ev=feff.energies_ev + 15.0,
        mu=feff.mu,
        source=Spectrum.Source.MATERIALS_PROJECT,
    )
    assert "Off the training energy scale" not in text(client.get(url))
    feff.delete()
    body = text(client.get(url))
    assert "Off the training energy scale" not in body
    assert f"{feff.element} K (standardized)" in body  # the MP spectrum went through the model


@pytest.mark.django_db
def test_a_material_without_spectra_or_structure_says_what_to_do(client, site, django_assert_max_num_queries):
    with django_assert_max_num_queries(8):
        response = client.get(reverse("materials:material-detail", args=[site.bare_material.pk]))
    body = text(response)
    assert "No spectra yet" in body and "compute_spectra" in body
    assert "needs a K-edge spectrum of every element" in body
    assert "vendor/plotly.min.js" not in body  # no chart, no 4.6 MB script


# --- Models ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("subset", ["test", "validation"])
def test_model_detail_shows_metrics_heatmaps_roc_and_provenance(client, site, django_assert_max_num_queries, subset):
    version = site.production
    with django_assert_max_num_queries(4):
        response = client.get(reverse("materials:model-detail", args=[version.pk]), {"subset": subset})
    body = text(response)
    report = version.metrics[subset]
    assert f"{report['topological_recall']:.3f}" in body
    assert f"{report['trivial_f1']:.3f}" in body
    if subset == "test":
        low = version.metrics["test_ci"]["topological_recall"]["low"]
        assert f"[{low:.2f}" in body  # the CI
    charts = chart_figures(body)
    heatmaps = [key for key in charts if key.startswith("heatmap-")]
    assert sorted(heatmaps) == sorted(
        f"heatmap-{m}-{c}" for m in ("recall", "precision", "f1") for c in ("topological", "trivial")
    )
    hover = json.dumps(charts["heatmap-recall-topological"]["data"][1]["hovertext"])
    assert "support" in hover
    roc = charts["roc-chart"]
    assert [trace["name"] for trace in roc["data"]][-1].startswith("chosen threshold")
    assert version.split_hash in body and version.code_version in body


@pytest.mark.django_db
def test_model_comparison_puts_every_model_of_a_split_side_by_side(client, site, django_assert_max_num_queries):
    with django_assert_max_num_queries(4):
        response = client.get(reverse("materials:model-compare"))
    body = text(response)
    assert [m.version.pk for m in response.context["compared"]] == [site.other.pk, site.production.pk]
    figure = chart_figures(body)["compare-chart"]
    assert len(figure["data"]) == 2
    assert all(len(trace["y"]) == 6 for trace in figure["data"])
    assert site.production.dataset.name in body


# --- Dataset --------------------------------------------------------------------------


@pytest.mark.django_db
def test_dataset_page_shows_counts_per_element_and_the_split_balance(client, site, django_assert_max_num_queries):
    with django_assert_max_num_queries(4):
        response = client.get(reverse("materials:dataset"))
    body = text(response)
    dataset = site.production.dataset
    assert dataset.content_hash in body
    charts = chart_figures(body)
    assert {"counts-topological", "counts-trivial", "balance-chart"} <= set(charts)
    assert [trace["name"] for trace in charts["balance-chart"]["data"]] == ["train", "validation", "test"]
    counts = response.context["charts"]["counts"]
    assert sum(c.total for c in counts) >= sum(dataset.counts.values())


# --- Screenings ---------------------------------------------------------------------


@pytest.mark.django_db
def test_screening_list_detail_status_and_download(client, site, django_assert_max_num_queries):
    batch = site.batch
    with django_assert_max_num_queries(3):
        listing = client.get(reverse("materials:screening-list"))
    assert batch.name in text(listing)
    with django_assert_max_num_queries(3):
        detail = client.get(reverse("materials:screening-detail", args=[batch.pk]))
    body = text(detail)
    assert "files in the release" in body and "broken.cif" in body
    probabilities = [row.probability for row in detail.context["rows"]]
    assert len(probabilities) == 6 and probabilities == sorted(probabilities, reverse=True)
    assert "classified from spectra" in body and "prior only: outside the FEFF budget" in body
    assert "screening.js" not in body  # finished: nothing to poll
    with django_assert_max_num_queries(1):
        status = client.get(reverse("materials:screening-status", args=[batch.pk])).json()
    assert status["status"] == "done" and status["finished"] and status["stage_counts"]["spectral"] == 2
    assert {"key": "ranked", "label": "stage 1: ranked by the prior", "count": 6} in status["stages"]
    download = client.get(reverse("materials:screening-download", args=[batch.pk]))
    rows = list(csv.DictReader(io.StringIO(download.content.decode())))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert sorted(r["stage"] for r in rows) == ["prior"] * 4 + ["spectral"] * 2
    # Every row carries its model's calibrated probability and decision, on the page and in the CSV.
    assert [r["decision"] for r in rows] == [row.decision for row in detail.context["rows"]]
    assert all(r["decision"] in ("topological", "trivial", "abstain") and r["calibrated_probability"] for r in rows)
    assert f'<span class="badge {rows[0]["decision"]}"' in body


@pytest.mark.django_db
def test_a_running_screening_polls_its_status(client, site):
    from materials.models import ScreeningBatch

    batch = ScreeningBatch.objects.create(name="Running", status="running", progress=0.3, progress_message="parsed")
    body = text(client.get(reverse("materials:screening-detail", args=[batch.pk])))
    assert "screening.js" in body and reverse("materials:screening-status", args=[batch.pk]) in body
    assert "The ranking appears here when stage 1 ends" in body and "Stage 2 (FEFF)" in body


def release_zip(tmp_path: Path, name: str = "release.zip", with_cif: bool = True) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        if with_cif:
            archive.write(DATA / "structures" / "LiCoO2_mp24850.cif", "LiCoO2_mp24850.cif")
        archive.writestr("README.txt", "not a structure")
    return path


@pytest.mark.django_db
def test_uploading_a_release_needs_a_login_and_starts_a_screening(
    client, site, tmp_path, settings, django_capture_on_commit_callbacks
):
    from materials.models import ScreeningBatch

    url = reverse("materials:screening-upload")
    response = client.get(url)
    assert response.status_code == 302 and reverse("materials:login") in response["Location"]
    client.force_login(site.user)
    settings.MEDIA_ROOT = str(tmp_path / "media")
    before = ScreeningBatch.objects.count()
    with (
        mock.patch("materials.screening.start_screening_batch") as start,
        django_capture_on_commit_callbacks(execute=False),
        release_zip(tmp_path).open("rb") as handle,
    ):
        response = client.post(url, {"name": "ICSD sample", "release": handle, "feff_budget": "2"})
    assert response.status_code == 302
    batch = ScreeningBatch.objects.latest("created")
    assert batch.feff_budget == 2
    assert ScreeningBatch.objects.count() == before + 1
    assert response["Location"] == reverse("materials:screening-detail", args=[batch.pk])
    assert batch.name == "ICSD sample" and batch.created_by == site.user and batch.upload
    start.assert_called_once_with(batch.pk)


@pytest.mark.django_db
def test_bad_uploads_are_refused_with_a_clear_error_and_no_batch(client, site, tmp_path, settings):
    from materials.models import ScreeningBatch

    client.force_login(site.user)
    url = reverse("materials:screening-upload")
    not_zip = tmp_path / "structures.zip"
    not_zip.write_text("data_x\n_cell_length_a 3\n")
    cases = [
        (release_zip(tmp_path, "release.tar"), "release.tar: not a .zip file; upload a .zip of .cif files"),
        (not_zip, "structures.zip: not a readable zip file"),
        (release_zip(tmp_path, "empty.zip", with_cif=False), "empty.zip: no .cif files found"),
    ]
    before = ScreeningBatch.objects.count()
    for path, message in cases:
        with path.open("rb") as handle:
            response = client.post(url, {"name": "bad", "release": handle})
        assert response.status_code == 200
        assert message in text(response), message
    settings.MAX_UPLOAD_BYTES = 100
    with release_zip(tmp_path).open("rb") as handle:
        response = client.post(url, {"name": "big", "release": handle})
    assert "the limit is 100 bytes" in text(response)
    assert ScreeningBatch.objects.count() == before


@pytest.mark.django_db
def test_forms_are_protected_against_cross_site_requests(site, tmp_path):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(site.user)
    with release_zip(tmp_path).open("rb") as handle:
        response = client.post(reverse("materials:screening-upload"), {"name": "x", "release": handle})
    assert response.status_code == 403
    page = client.get(reverse("materials:screening-upload"))
    assert 'name="csrfmiddlewaretoken"' in text(page)


# --- Static files and figures -------------------------------------------------------


def test_plotly_js_is_served_locally_from_the_plotly_package(client):
    from django.contrib.staticfiles import finders

    path = finders.find("vendor/plotly.min.js")
    assert path and Path(path).stat().st_size > 1_000_000
    for name in ("base.html", "materials/_plotly.html"):
        source = (Path(__file__).resolve().parent.parent / "templates" / name).read_text()
        assert "cdn" not in source.lower() and "https://" not in source


def test_periodic_table_layout_gives_every_element_its_own_cell():
    from materials.web.figures import ATOMIC_NUMBER, POSITIONS

    assert len(ATOMIC_NUMBER) == 118
    assert len(set(POSITIONS.values())) == 118
    assert POSITIONS["H"] == (0, 0) and POSITIONS["He"] == (0, 17) and POSITIONS["B"] == (1, 12)
    assert POSITIONS["Hf"] == (5, 3) and POSITIONS["La"] == (8, 2) and POSITIONS["Pu"] == (9, 7)


def test_figures_from_stored_metrics():
    from materials.web import figures

    roc = {
        "false_positive_rate": [0.0, 0.0, 0.5, 1.0],
        "true_positive_rate": [0.0, 0.5, 1.0, 1.0],
        "thresholds": [None, 0.9, 0.4, 0.1],
        "auc": 0.875,
    }
    report = {"topological_recall": 0.75, "trivial_recall": 0.6}
    figure = figures.roc_figure(roc, 0.5, report=report)
    assert list(figure.data[-1].x) == [pytest.approx(0.4)] and list(figure.data[-1].y) == [0.75]
    assert figures.threshold_point(roc, 0.5) == (0.0, 0.5)
    history = [{"epoch": e, "loss": 1 / e, "val_loss": 1.2 / e, "accuracy": 0.5, "val_accuracy": 0.4} for e in (1, 2)]
    assert len(figures.training_curves_figure(history).data) == 4
    assert figures.training_curves_figure([{"epoch": 1, "n_trees": 300}]) is None
    projection = {"x": [0, 1, 2], "y": [1, 0, 1], "label": [0, 1, 1], "probability": [0.1, 0.8, 0.9]}
    assert [len(trace.x) for trace in figures.projection_figure(projection).data] == [1, 2]
    heatmap = figures.periodic_table_figure({"Bi": 0.5}, title="t", colorbar_title="recall", hover={"Bi": "support: 3"})
    row, column = figures.POSITIONS["Bi"]
    assert heatmap.data[1].z[row][column] == 0.5 and "support: 3" in heatmap.data[1].hovertext[row][column]
    escaped = figures.figure_json(figures.contributions_figure({"</script><b>": 0.1}))
    assert "<" not in escaped and ">" not in escaped
    assert json.loads(escaped)["data"][0]["y"] == ["</script><b>"]
