"""Screening pages: the list, the upload form, one screening with its two stages live,
its status JSON (polled by the page) and its ranking as CSV."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET

from materials.models import ModelVersion, ScreeningBatch
from materials.screening.ranking import batches, candidates_csv, ranked, stage_rows, stage_two
from materials.web.forms import ScreeningUploadForm
from materials.web.views import light, production_model

SHOWN = 100


def screening_list(request):
    batches = (
        ScreeningBatch.objects.select_related("model_version", "created_by")
        .defer("rejected", *light("model_version"))
        .order_by("-created")
    )
    page = Paginator(batches, 25).get_page(request.GET.get("page"))
    return render(request, "materials/screening_list.html", {"page": page})


def screening_detail(request, pk: int):
    batch = get_object_or_404(
        batches()
        .select_related("model_version", "prior_version", "created_by")
        .defer(*light("model_version"), *light("prior_version")),
        pk=pk,
    )
    counts = batch.stage_counts or {}
    context = {
        "batch": batch,
        "rows": ranked(batch).page(None, 0, SHOWN),
        "shown": SHOWN,
        "stages": stage_rows(counts),
        "stage_two": stage_two(counts),
    }
    return render(request, "materials/screening_detail.html", context)


@require_GET
def screening_status(request, pk: int):
    """Progress for the detail page's polling (a few hundred bytes, one query)."""
    batch = get_object_or_404(
        ScreeningBatch.objects.only(
            "id", "status", "progress", "progress_message", "stage_counts", "error", "started", "finished"
        ),
        pk=pk,
    )
    counts = batch.stage_counts or {}
    return JsonResponse(
        {
            "id": batch.pk,
            "status": batch.status,
            "finished": batch.is_finished,
            "progress": round(batch.progress, 4),
            "progress_message": batch.progress_message,
            "stage_counts": counts,
            "stages": [{"key": k, "label": label, "count": n} for k, label, n in stage_rows(counts)],
            "stage_two": stage_two(counts),
            "error": batch.error,
            "seconds": batch.seconds,
        }
    )


def screening_download(request, pk: int):
    batch = get_object_or_404(batches(), pk=pk)
    response = HttpResponse(candidates_csv(batch), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="screening-{batch.pk}-candidates.csv"'
    return response


@login_required(login_url="materials:login")
def screening_upload(request):
    from materials.screening import create_batch, start_screening_batch

    production = production_model()
    prior = ModelVersion.objects.prior()
    if request.method == "POST":
        form = ScreeningUploadForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data["release"]
            with transaction.atomic():
                batch = create_batch(
                    form.cleaned_data["name"],
                    upload.name,
                    upload=upload,
                    user=request.user,
                    feff_budget=form.cleaned_data["feff_budget"],
                )
                start_screening_batch(batch.pk)
            messages.success(request, f"Screening “{batch.name}” started: {form.n_cifs} CIF files.")
            return redirect("materials:screening-detail", pk=batch.pk)
    else:
        form = ScreeningUploadForm()
    context = {"form": form, "production": production, "prior": prior}
    return render(request, "materials/screening_upload.html", context)
