"""Screenings over the API: upload a release (202), follow its two stages, read its rows.

``/api/screenings/`` lists and accepts uploads (a zip of CIFs, with an optional
``feff_budget`` for stage 2); ``{id}/`` is a screening's status, per-stage counts and
set-aside files; ``{id}/rows/`` its rows best first, cursor-paginated, with the stage
each reached, the prior and spectral probabilities, the one it is ranked by and why;
``{id}/candidates/`` the same rows streamed whole as JSON or CSV (``?format=csv``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.reverse import reverse

from materials.api.exceptions import PayloadTooLarge
from materials.api.exports import EXPORT_RENDERERS, streaming_export
from materials.api.pagination import SmallPagePagination, StableCursorPagination
from materials.api.parsers import LimitedMultiPartParser
from materials.api.serializers import LABEL_OUT_CHOICES
from materials.api.throttles import UploadThrottle
from materials.api.views import FORMAT_PARAMETER, APIMixin, check_format_parameter, force_json_errors
from materials.models import ScreeningBatch, ScreeningRow
from materials.screening.ranking import COLUMNS, ranked_rows, ranking_values

#: Most materials one upload may ask FEFF spectra for.
MAX_FEFF_BUDGET = 1000


def screening_limits() -> dict:
    """Zip-bomb guards: the screening pipeline's own limits where it defines them."""
    from materials.screening import release

    return {
        "members": release.MAX_MEMBERS,
        "uncompressed": release.MAX_UNCOMPRESSED_BYTES,
        "ratio": release.MAX_COMPRESSION_RATIO,
    }


def check_release_zip(upload) -> None:
    """Refuse anything but a sane zip of .cif files (and .csv metadata), before storing it."""
    name = upload.name or ""
    if upload.size > settings.MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(f"{name} is {upload.size} bytes; the limit is {settings.MAX_UPLOAD_BYTES} bytes")
    if not name.lower().endswith(".zip"):
        raise ValidationError({"file": [f"{name[:100]!r}: upload a .zip of .cif files"]})
    limits = screening_limits()
    try:
        with zipfile.ZipFile(upload) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise ValidationError({"file": [f"{name[:100]!r} is not a readable zip file ({error})"]}) from None
    finally:
        upload.seek(0)
    members = [info for info in infos if not info.is_dir()]
    if len(members) > limits["members"]:
        raise ValidationError({"file": [f"{len(members)} files in the zip; at most {limits['members']} are accepted"]})
    total = sum(info.file_size for info in members)
    compressed = sum(info.compress_size for info in members) or 1
    if total > limits["uncompressed"] or total / compressed > limits["ratio"]:
        raise ValidationError(
            {
                "file": [
                    f"the zip would unpack to {total} bytes from {compressed} (limits: {limits['uncompressed']} bytes, "
                    f"ratio {limits['ratio']}); refusing what looks like a zip bomb"
                ]
            }
        )
    problems = []
    for info in members:
        path = PurePosixPath(info.filename)
        if info.filename.startswith("/") or ".." in path.parts or "\\" in info.filename:
            problems.append(f"{info.filename[:100]}: unsafe path")
        elif info.flag_bits & 0x1:
            problems.append(f"{info.filename[:100]}: encrypted")
        elif "__macosx" in info.filename.lower() or path.name.startswith("."):
            continue
        elif path.suffix.lower() not in (".cif", ".csv"):
            problems.append(f"{info.filename[:100]}: only .cif and .csv files are accepted")
    if problems:
        raise ValidationError({"file": problems[:20]})
    if not any(PurePosixPath(info.filename).suffix.lower() == ".cif" for info in members):
        raise ValidationError({"file": ["the zip holds no .cif file"]})


# --- Serializers ---------------------------------------------------------------------------------


class ScreeningBatchSerializer(serializers.ModelSerializer):
    materials = serializers.IntegerField(source="n_materials", read_only=True, help_text="Materials in the batch.")
    url = serializers.SerializerMethodField()
    rows_url = serializers.SerializerMethodField()
    candidates_url = serializers.SerializerMethodField()

    class Meta:
        model = ScreeningBatch
        fields = [
            "id",
            "name",
            "source",
            "status",
            "progress",
            "progress_message",
            "error",
            "feff_budget",
            "feff_max_sites",
            "stage_counts",
            "rejected",
            "prior_version",
            "model_version",
            "materials",
            "created",
            "started",
            "finished",
            "url",
            "rows_url",
            "candidates_url",
        ]
        extra_kwargs = {"model_version": {"help_text": "The spectral model of stage 2."}}

    def _url(self, name: str, batch) -> str:
        return reverse(name, args=[batch.pk], request=self.context.get("request"))

    def get_url(self, batch) -> str:
        return self._url("api:screening-detail", batch)

    def get_rows_url(self, batch) -> str:
        return self._url("api:screening-rows", batch)

    def get_candidates_url(self, batch) -> str:
        return self._url("api:screening-candidates", batch)


class ScreeningUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A .zip of .cif files (and optionally one metadata .csv).")
    name = serializers.CharField(required=False, max_length=200, allow_blank=True)
    feff_budget = serializers.IntegerField(
        required=False,
        default=0,
        min_value=0,
        max_value=MAX_FEFF_BUDGET,
        help_text="Materials that get FEFF spectra in stage 2 (the most uncertain prior first).",
    )
    feff_max_sites = serializers.IntegerField(
        required=False, min_value=1, max_value=200, help_text="Stage 2 only for cells of at most this many sites."
    )


class ScreeningAcceptedSerializer(serializers.Serializer):
    screening = serializers.IntegerField()
    job = serializers.IntegerField(help_text="The screening's id: it is its own job.")
    status = serializers.CharField()
    status_url = serializers.CharField()
    rows_url = serializers.CharField()
    candidates_url = serializers.CharField()


class ScreeningRowSerializer(serializers.ModelSerializer):
    formula = serializers.CharField(source="material.reduced_formula")
    space_group = serializers.IntegerField(source="material.space_group_number", allow_null=True)
    label = serializers.SerializerMethodField()

    class Meta:
        model = ScreeningRow
        fields = [
            "material_id",
            "formula",
            "space_group",
            "files",
            "label",
            "stage",
            "prior_probability",
            "spectral_probability",
            "probability",
            "reason",
        ]

    def get_label(self, row) -> str:
        return row.material.label or "unlabelled"


class CandidateSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    material_id = serializers.IntegerField()
    formula = serializers.CharField()
    space_group = serializers.IntegerField(allow_null=True)
    files = serializers.CharField(help_text="Space-separated file names of the release.")
    icsd_ids = serializers.CharField(help_text="Space-separated ICSD collection codes.")
    amcsd_id = serializers.CharField()
    mp_id = serializers.CharField()
    label = serializers.ChoiceField(choices=LABEL_OUT_CHOICES)
    stage = serializers.ChoiceField(choices=ScreeningRow.Stage.choices)
    prior_probability = serializers.FloatField(allow_null=True)
    spectral_probability = serializers.FloatField(allow_null=True)
    probability = serializers.FloatField(allow_null=True, help_text="What the ranking uses.")
    reason = serializers.CharField()


class RowQuerySerializer(serializers.Serializer):
    probability_min = serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0, help_text="Ranked probability at least this."
    )
    label = serializers.ChoiceField(choices=LABEL_OUT_CHOICES, required=False, help_text="Training label.")
    stage = serializers.ChoiceField(choices=ScreeningRow.Stage.choices, required=False, help_text="Stage reached.")


class RowPagination(StableCursorPagination):
    """Rows best first: ``(-probability, id)``, served by the ``screening_row_rank`` index."""

    ordering = ("-probability", "id")
    position_type = float


# --- The viewset ---------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="Your screenings (staff: all)", tags=["screenings"]),
    retrieve=extend_schema(
        summary="A screening's status, progress, per-stage counts and set-aside files", tags=["screenings"]
    ),
)
class ScreeningViewSet(APIMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Screen a release of structures: upload a zip of CIFs, follow it, fetch its ranked rows."""

    permission_classes = [IsAuthenticated]
    serializer_class = ScreeningBatchSerializer
    pagination_class = SmallPagePagination
    parser_classes = [LimitedMultiPartParser]
    filterset_class = None

    def max_body_bytes(self) -> int:
        return settings.MAX_UPLOAD_BYTES + 64 * 1024  # the file plus the multipart envelope

    def get_throttles(self):
        throttles = super().get_throttles()
        if getattr(self, "action", None) == "create":
            throttles.append(UploadThrottle())
        return throttles

    def get_queryset(self):
        batches = ScreeningBatch.objects.annotate(n_materials=Count("materials")).order_by("-created", "-id")
        if getattr(self, "swagger_fake_view", False):
            return batches.none()
        if not self.request.user.is_staff:
            batches = batches.filter(created_by=self.request.user)
        return batches

    def get_batch(self) -> ScreeningBatch:
        """The screening in the URL, if this user may see it (no counting annotation)."""
        batches = ScreeningBatch.objects.all()
        if not self.request.user.is_staff:
            batches = batches.filter(created_by=self.request.user)
        lookup = self.kwargs[self.lookup_field]
        if not str(lookup).isdigit():
            from rest_framework.exceptions import NotFound

            raise NotFound()
        from django.shortcuts import get_object_or_404

        return get_object_or_404(batches, pk=int(lookup))

    @extend_schema(
        summary="Upload a zip of CIFs to screen",
        request={"multipart/form-data": ScreeningUploadSerializer},
        responses={202: ScreeningAcceptedSerializer},
        tags=["screenings"],
        description="A .zip of .cif files (and optionally one metadata .csv for the ICSD quality filter), at most "
        "MAX_UPLOAD_BYTES. Stage 1 ranks every structure with the composition + symmetry prior; stage 2 computes "
        "FEFF spectra for ``feff_budget`` materials. Answers 202 with the screening's id; poll ``status_url``.",
    )
    def create(self, request, *args, **kwargs):
        from materials.screening.background import start_screening_batch
        from materials.screening.pipeline import create_batch

        form = ScreeningUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        upload = form.validated_data["file"]
        check_release_zip(upload)
        name = form.validated_data.get("name") or Path(upload.name).stem[:200]
        with transaction.atomic():
            batch = create_batch(
                name=name,
                source=upload.name[:200],
                upload=upload,
                user=request.user,
                feff_budget=form.validated_data["feff_budget"],
                feff_max_sites=form.validated_data.get("feff_max_sites"),
            )
            start_screening_batch(batch.pk)
        batch.refresh_from_db(fields=["status"])
        return Response(
            {
                "screening": batch.pk,
                "job": batch.pk,
                "status": batch.status,
                "status_url": reverse("api:screening-detail", args=[batch.pk], request=request),
                "rows_url": reverse("api:screening-rows", args=[batch.pk], request=request),
                "candidates_url": reverse("api:screening-candidates", args=[batch.pk], request=request),
            },
            status=status.HTTP_202_ACCEPTED,
        )

    def _filtered_rows(self, request, batch):
        query = RowQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return ranked_rows(
            batch,
            stage=query.validated_data.get("stage"),
            label=query.validated_data.get("label"),
            probability_min=query.validated_data.get("probability_min"),
        )

    @extend_schema(
        summary="A screening's rows, best first (cursor-paginated)",
        tags=["screenings"],
        parameters=[RowQuerySerializer],
        responses={200: ScreeningRowSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], pagination_class=RowPagination, filter_backends=[])
    def rows(self, request, *args, **kwargs):
        batch = self.get_batch()
        rows = self._filtered_rows(request, batch).exclude(probability=None).select_related("material")
        rows = rows.only(
            "id",
            "material_id",
            "files",
            "stage",
            "prior_probability",
            "spectral_probability",
            "probability",
            "reason",
            "material__reduced_formula",
            "material__space_group_number",
            "material__label",
        )
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(ScreeningRowSerializer(page, many=True).data)

    @extend_schema(
        summary="A screening's rows ranked, as JSON or CSV (streamed)",
        tags=["screenings"],
        parameters=[FORMAT_PARAMETER, RowQuerySerializer],
        responses={
            (200, "application/json"): CandidateSerializer(many=True),
            (200, "text/csv"): OpenApiResponse(response=OpenApiTypes.STR, description="A header row, then rows."),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        renderer_classes=EXPORT_RENDERERS,
        pagination_class=None,
        filter_backends=[],
    )
    def candidates(self, request, *args, **kwargs):
        check_format_parameter(request)
        batch = self.get_batch()
        rows = ranking_values(self._filtered_rows(request, batch))
        return streaming_export(request.accepted_renderer.format, COLUMNS, rows, f"screening-{batch.pk}")

    def finalize_response(self, request, response, *args, **kwargs):
        force_json_errors(request, response)
        return super().finalize_response(request, response, *args, **kwargs)
