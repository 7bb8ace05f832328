"""Server-rendered pages. Views stay thin: querysets, ``candidates``, ``pages`` and
``figures`` do the work; each page issues a constant number of queries.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, Q
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from materials.learning import findings
from materials.learning.decisions import rule_annotations, with_decisions
from materials.models import (
    Dataset,
    Material,
    ModelVersion,
    ScreeningBatch,
    Spectrum,
    TopologyLabel,
    TrainingRun,
)
from materials.web import candidates, figures, pages
from materials.web.forms import CandidateFilterForm
from materials.web.reliability import reliability_figure

RECENT = 5
# A model's metrics JSON carries ROC points and the 2-D projection of every test
# material (hundreds of kB for a large test set): only pages that show them read it.
HEAVY_MODEL_FIELDS = ("metrics", "hyperparameters", "library_versions")


def production_model():
    """The production model without its heavy JSON fields, or None; it carries its decision
    rule (``rule_annotations("rule")``), which the rankings it serves read."""
    return (
        ModelVersion.objects.filter(is_production=True)
        .defer(*HEAVY_MODEL_FIELDS)
        .annotate(**rule_annotations("rule"))
        .first()
    )


def light(relation: str) -> list[str]:
    return [f"{relation}__{name}" for name in HEAVY_MODEL_FIELDS]


def dashboard(request):
    counts = Material.objects.aggregate(
        materials=Count("id"),
        with_spectra=Count("id", filter=Q(has_spectra=True)),
        topological=Count("id", filter=Q(label="topological")),
        trivial=Count("id", filter=Q(label="trivial")),
    )
    production = ModelVersion.objects.filter(is_production=True).select_related("dataset").first()
    context = {
        "counts": counts,
        "spectra_count": Spectrum.objects.count(),
        "label_count": TopologyLabel.objects.count(),
        "production": production,
        "summary": pages.metric_summary(production) if production else None,
        "runs": TrainingRun.objects.select_related("model_version")
        .defer("history", *light("model_version"))
        .order_by("-created")[:RECENT],
        "screenings": ScreeningBatch.objects.select_related("model_version")
        .defer("rejected", *light("model_version"))
        .order_by("-created")[:RECENT],
    }
    return render(request, "materials/dashboard.html", context)


# --- Candidates -----------------------------------------------------------------------


def _candidate_filters(request) -> tuple[CandidateFilterForm, candidates.RankFilter | None]:
    # Always bound: no parameters is the default view (unlabelled materials), not "no filter".
    form = CandidateFilterForm(request.GET)
    return form, (form.rank_filter() if form.is_valid() else None)


def candidate_list(request):
    production = production_model()
    form, filters = _candidate_filters(request)
    page = None
    if production is not None and filters is not None:
        page = candidates.candidate_page(production, filters, candidates.page_number(request.GET.get("page")))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "production": production,
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "label_links": candidates.label_links(query, filters.label if filters else query.get("label", "")),
        "min_support": candidates.MIN_SUPPORT,
    }
    return render(request, "materials/candidate_list.html", context)


def candidate_export(request):
    production = production_model()
    if production is None:
        return HttpResponse("No production model: nothing is ranked yet.\n", status=404, content_type="text/plain")
    form, filters = _candidate_filters(request)
    if filters is None:
        errors = "; ".join(f"{name}: {' '.join(e)}" for name, e in form.errors.items())
        return HttpResponse(f"Invalid filter: {errors}\n", status=400, content_type="text/plain")
    response = StreamingHttpResponse(
        candidates.candidates_csv_lines(production, filters), content_type="text/csv; charset=utf-8"
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="candidates-model{production.pk}-{stamp}.csv"'
    return response


# --- Materials ------------------------------------------------------------------------


def material_list(request):
    materials = Material.objects.defer("structure").order_by("-has_spectra", "reduced_formula", "id")
    query = request.GET.get("q", "").strip()
    if query:
        materials = materials.filter(Q(reduced_formula__iexact=query) | Q(mp_id=query) | Q(materiae_id=query))
    if request.GET.get("with_spectra"):
        materials = materials.filter(has_spectra=True)
    page = Paginator(materials, 50).get_page(request.GET.get("page"))
    filters = request.GET.copy()
    filters.pop("page", None)
    context = {"page": page, "query": query, "filters": filters.urlencode()}
    return render(request, "materials/material_list.html", context)


def material_detail(request, pk: int):
    material = get_object_or_404(Material, pk=pk)
    spectra = list(material.spectra.order_by("element", "source"))
    production = production_model()
    predictions = with_decisions(  # calibrated probability and decision per model
        material.predictions.select_related("model_version").order_by(
            "-model_version__is_production", "-model_version__created"
        )
    )
    explanation = pages.explain_material(material, production, spectra)
    figure = figures.spectra_figure(pages.raw_traces(spectra), explanation.standardized)
    context = {
        "material": material,
        "labels": list(material.labels.order_by("catalogue")),
        "spectra": spectra,
        "structure": pages.structure_summary(material),
        "predictions": predictions,
        "production": production,
        "explanation": explanation,
        "spectra_figure": figures.figure_json(figure),
        "contributions_figure": figures.figure_json(
            figures.contributions_figure(dict(explanation.contributions)) if len(explanation.contributions) else None
        ),
    }
    return render(request, "materials/material_detail.html", context)


# --- Models -------------------------------------------------------------------------


def _subset(request) -> str:
    return "validation" if request.GET.get("subset") == "validation" else "test"


def model_detail(request, pk: int):
    version = get_object_or_404(ModelVersion.objects.select_related("dataset"), pk=pk)
    run = TrainingRun.objects.filter(model_version=version).first()
    subset = _subset(request)
    metrics = version.metrics or {}
    roc = metrics.get("roc" if subset == "test" else "validation_roc") or {}
    context = {
        "version": version,
        "run": run,
        "subset": subset,
        "summary": pages.metric_summary(version, subset),
        "heatmaps": pages.element_heatmaps(version, subset),
        "roc_figure": figures.figure_json(
            figures.roc_figure(roc, version.threshold, f"ROC ({pages.SUBSET_NAMES[subset]})", metrics.get(subset))
        ),
        "curves_figure": figures.figure_json(figures.training_curves_figure(run.history if run else [])),
        "projection_figure": figures.figure_json(figures.projection_figure(metrics.get("projection") or {})),
        "n": metrics.get("n") or {},
        "calibration": metrics.get("calibration") or {},
        "reliability_figure": figures.figure_json(reliability_figure(metrics.get("calibration") or {})),
        "preprocessing": metrics.get("preprocessing") or {},
    }
    return render(request, "materials/model_detail.html", context)


def model_compare(request):
    subset = _subset(request)
    datasets = list(Dataset.objects.defer("balance").annotate(n_models=Count("model_versions")).order_by("-created"))
    production = production_model()
    chosen = None
    wanted = request.GET.get("dataset")
    if wanted and wanted.isdigit():
        chosen = next((d for d in datasets if d.pk == int(wanted)), None)
    if chosen is None and production is not None:
        chosen = next((d for d in datasets if d.pk == production.dataset_id), None)
    if chosen is None:
        chosen = next((d for d in datasets if d.n_models), None)
    # Only the chosen split's models carry their metrics JSON here; the others list needs none.
    on_split = list(
        ModelVersion.objects.select_related("dataset")
        .filter(dataset=chosen, status=ModelVersion.State.READY)
        .exclude(metrics={})
        .order_by("-created")
        if chosen is not None
        else []
    )
    others = ModelVersion.objects.select_related("dataset").defer("metrics", "dataset__balance").order_by("-created")
    compared, figure = pages.comparison(on_split, subset)
    context = {
        "subset": subset,
        "datasets": datasets,
        "dataset": chosen,
        "compared": compared,
        "comparison_figure": figure,
        "others": list(others.exclude(pk__in=[v.pk for v in on_split])),
        "production": production,
        "finding": findings.published_finding(),
        "paired": findings.paired_differences(on_split, chosen.seed) if chosen is not None else [],
    }
    return render(request, "materials/model_compare.html", context)


# --- Dataset ------------------------------------------------------------------------


def dataset_detail(request):
    datasets = list(Dataset.objects.order_by("-created"))
    wanted = request.GET.get("dataset")
    dataset = None
    if wanted and wanted.isdigit():
        dataset = next((d for d in datasets if d.pk == int(wanted)), None)
    if dataset is None:
        production = ModelVersion.objects.filter(is_production=True).only("dataset_id").first()
        dataset = next((d for d in datasets if production and d.pk == production.dataset_id), None)
    dataset = dataset or (datasets[0] if datasets else None)
    counts = Material.objects.aggregate(
        materials=Count("id"),
        labelled=Count("id", filter=~Q(label="")),
        usable=Count("id", filter=Q(has_spectra=True) & ~Q(label="")),
    )
    context = {
        "datasets": datasets,
        "dataset": dataset,
        "counts": counts,
        "charts": pages.dataset_figures(dataset.balance if dataset else []),
    }
    return render(request, "materials/dataset.html", context)


# --- Health -------------------------------------------------------------------------


def healthz(request):
    """Liveness and database reachability, for load balancers and compose health checks."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "database": connection.vendor})
