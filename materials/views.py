"""Server-rendered pages. Views stay thin: querysets and model methods do the work."""

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, Q
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render

from materials.models import Material, ModelVersion, Spectrum, TopologyLabel


def dashboard(request):
    counts = Material.objects.aggregate(
        materials=Count("id"),
        with_spectra=Count("id", filter=Q(has_spectra=True)),
        topological=Count("id", filter=Q(label="topological")),
        trivial=Count("id", filter=Q(label="trivial")),
    )
    context = {
        "counts": counts,
        "spectra_count": Spectrum.objects.count(),
        "label_count": TopologyLabel.objects.count(),
        "production": ModelVersion.objects.production(),
    }
    return render(request, "materials/dashboard.html", context)


def material_list(request):
    materials = Material.objects.order_by("-has_spectra", "reduced_formula")
    query = request.GET.get("q", "").strip()
    if query:
        materials = materials.filter(Q(reduced_formula__iexact=query) | Q(mp_id=query) | Q(materiae_id=query))
    if request.GET.get("with_spectra"):
        materials = materials.filter(has_spectra=True)
    page = Paginator(materials, 50).get_page(request.GET.get("page"))
    return render(request, "materials/material_list.html", {"page": page, "query": query})


def material_detail(request, pk: int):
    material = get_object_or_404(Material, pk=pk)
    context = {
        "material": material,
        "labels": material.labels.all(),
        "spectra": material.spectra.all(),
    }
    return render(request, "materials/material_detail.html", context)


def healthz(request):
    """Liveness and database reachability, for load balancers and compose health checks."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "database": connection.vendor})
