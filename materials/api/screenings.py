"""Screenings over the API: upload a release (202), follow its two stages, read its rows.

``/api/screenings/`` lists and accepts uploads (a zip of CIFs, with an optional
``feff_budget`` for stage 2); ``{id}/`` is a screening's status, per-stage counts and
set-aside files; ``{id}/rows/`` its rows best first, cursor-paginated, with the stage
each reached, the prior and spectral probabilities, the one it is ranked by and why;
``{id}/candidates/`` the same rows streamed whole as JSON or CSV (``?format=csv``).
"""

from __future__ import annotations

from pathlib import Path

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
from materials.api.filters import SCOPE_CHOICES, rank_filter
from materials.api.pagination import PredictionQueryPagination, SmallPagePagination
from materials.api.parsers import LimitedMultiPartParser
from materials.api.serializers import LABEL_OUT_CHOICES, DecidedFieldsMixin
from materials.api.throttles import UploadThrottle
from materials.api.views import FORMAT_PARAMETER, APIMixin, check_format_parameter, force_json_errors
from materials.models import ScreeningBatch, ScreeningRow
from materials.screening.ranking import COLUMNS, batches, candidate_values, ranked
from mlcore.decision import DECISIONS

#: Most materials one upload may ask FEFF spectra for.
MAX_FEFF_BUDGET = 1000


def check_release_zip(upload) -> None:
    """Refuse a release the screening cannot read, before storing it: the screening package's
    reader (``materials.screening.release.read_upload``) decides; its error is a 400 on ``file``
    (413 for an upload over the size limit), naming the file and the member at fault."""
    from materials.screening.release import ReleaseError, read_upload

    try:
        read_upload(upload, settings.MAX_UPLOAD_BYTES)
    except ReleaseError as error:
        if error.code == "too_large":
            raise PayloadTooLarge(str(error)) from None
        raise ValidationError({"file": [str(error)]}) from None


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


class ScreeningRowSerializer(DecidedFieldsMixin, serializers.Serializer):
    """One ranked row of a screening (``materials.learning.ranking.RankedRow``)."""

    material_id = serializers.IntegerField()
    formula = serializers.CharField(source="reduced_formula")
    space_group = serializers.IntegerField(source="space_group_number", allow_null=True)
    files = serializers.ListField(child=serializers.CharField(), help_text="The release's files of this material.")
    label = serializers.ChoiceField(choices=LABEL_OUT_CHOICES, source="label_out")
    stage = serializers.ChoiceField(choices=ScreeningRow.Stage.choices)
    prior_probability = serializers.FloatField(allow_null=True, help_text="Stage 1's prior, raw.")
    spectral_probability = serializers.FloatField(allow_null=True, help_text="Stage 2's spectral model, raw.")
    probability = serializers.FloatField(
        allow_null=True, help_text="What the ranking uses: the spectral probability where there is one, else the prior."
    )
    reason = serializers.CharField(help_text="Why the row stopped where it did.")


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
    probability = serializers.FloatField(allow_null=True, help_text="What the ranking uses (raw).")
    calibrated_probability = serializers.FloatField(
        allow_null=True, help_text="The ranked probability mapped by its model's calibrator."
    )
    decision = serializers.ChoiceField(choices=list(DECISIONS), help_text="topological, trivial or abstain.")
    reasons = serializers.CharField(help_text="Space-separated reason codes of an abstention (e.g. ``uncertain``).")
    reason = serializers.CharField()


class RowQuerySerializer(serializers.Serializer):
    probability_min = serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0, help_text="Ranked (raw) probability at least this."
    )
    probability_max = serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0, help_text="Ranked (raw) probability at most this."
    )
    label = serializers.ChoiceField(
        choices=[choice for choice, _ in SCOPE_CHOICES],
        required=False,
        help_text="Training label: ``unlabelled`` (the candidates), ``labelled``, a class, or ``all`` (the default).",
    )
    stage = serializers.ChoiceField(choices=ScreeningRow.Stage.choices, required=False, help_text="Stage reached.")
    decision = serializers.ChoiceField(
        choices=list(DECISIONS), required=False, help_text="The decision from the calibrated probability."
    )


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
        listed = ScreeningBatch.objects.annotate(n_materials=Count("materials")).order_by("-created", "-id")
        if getattr(self, "swagger_fake_view", False):
            return listed.none()
        if not self.request.user.is_staff:
            listed = listed.filter(created_by=self.request.user)
        return listed

    def get_batch(self) -> ScreeningBatch:
        """The screening in the URL, if this user may see it, with its models' decision rules
        (no counting annotation)."""
        visible = batches()
        if not self.request.user.is_staff:
            visible = visible.filter(created_by=self.request.user)
        lookup = self.kwargs[self.lookup_field]
        if not str(lookup).isdigit():
            from rest_framework.exceptions import NotFound

            raise NotFound()
        from django.shortcuts import get_object_or_404

        return get_object_or_404(visible, pk=int(lookup))

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

    def _ranked(self, request):
        """The screening's ranking with the validated row filters (every label by default)."""
        batch = self.get_batch()
        query = RowQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return batch, ranked(batch, rank_filter(query.validated_data, default_label="all"))

    @extend_schema(
        summary="A screening's rows, best first (cursor-paginated), each with its decision",
        tags=["screenings"],
        parameters=[RowQuerySerializer],
        responses={200: ScreeningRowSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], pagination_class=PredictionQueryPagination, filter_backends=[])
    def rows(self, request, *args, **kwargs):
        _, query = self._ranked(request)
        page = self.paginator.paginate_query(query, request, self)
        return self.get_paginated_response(ScreeningRowSerializer(page, many=True).data)

    @extend_schema(
        summary="A screening's rows ranked, with decisions, as JSON or CSV (streamed)",
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
        batch, query = self._ranked(request)
        return streaming_export(
            request.accepted_renderer.format, COLUMNS, candidate_values(query), f"screening-{batch.pk}"
        )

    def finalize_response(self, request, response, *args, **kwargs):
        force_json_errors(request, response)
        return super().finalize_response(request, response, *args, **kwargs)
