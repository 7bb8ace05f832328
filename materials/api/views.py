"""REST API views: thin viewsets on a router; the work lives in the app's modules.

Reads are public unless ``API_ANONYMOUS_READ`` is off; writes need a token or a
session; retrain and promote need staff with the model permissions. Every query a
request makes is a constant number, whatever the page size.
"""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.reverse import reverse

from materials import jobs
from materials.api import serializers as s
from materials.api.exceptions import api_exception_handler
from materials.api.exports import CHUNK_SIZE, EXPORT_RENDERERS, streaming_export
from materials.api.filters import (
    FilterBackend,
    LabelFilter,
    MaterialFilter,
    ModelVersionFilter,
    PredictionFilter,
    SpectrumFilter,
    StableOrderingFilter,
    rank_filter,
)
from materials.api.pagination import IdCursorPagination, PredictionQueryPagination, SmallPagePagination
from materials.api.parsers import LimitedJSONParser
from materials.api.permissions import IsStaffWithPermission
from materials.api.schema import APIAutoSchema
from materials.api.throttles import DEFAULT_THROTTLES, LoginThrottle
from materials.learning.ranking import RankQuery
from materials.models import (
    Job,
    Material,
    ModelVersion,
    Prediction,
    Spectrum,
    TopologyLabel,
    TrainingRun,
)
from mlcore.decision import DECISIONS


class APIMixin:
    """What every API view shares: schema, JSON errors, throttles, size-limited JSON;
    any id in the path reaches the view (which answers a JSON 404 when it is no id)."""

    schema = APIAutoSchema()
    filter_backends = [FilterBackend]
    lookup_value_regex = "[^/]+"
    throttle_classes = DEFAULT_THROTTLES
    parser_classes = [LimitedJSONParser]

    def get_exception_handler(self):
        return api_exception_handler


def not_found(request, *args, **kwargs):
    from django.http import JsonResponse

    return JsonResponse({"detail": f"No API endpoint at {request.path[:200]}."}, status=404)


# --- Materials, spectra, labels ----------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List materials", tags=["materials"]),
    retrieve=extend_schema(summary="One material with its spectra (summaries) and labels", tags=["materials"]),
)
class MaterialViewSet(APIMixin, viewsets.ReadOnlyModelViewSet):
    """Materials. Filter by elements, space group, crystal system, label and source; search by formula."""

    filterset_class = MaterialFilter
    pagination_class = IdCursorPagination

    def get_queryset(self):
        if self.action == "retrieve":
            # Three queries: the material, its labels, its spectra.
            return Material.objects.prefetch_related("labels", "spectra")
        return Material.objects.defer("structure", "nsites", "structure_source", "source_release", "created")

    def get_serializer_class(self):
        return s.MaterialDetailSerializer if self.action == "retrieve" else s.MaterialSerializer


@extend_schema_view(
    list=extend_schema(summary="List spectra (with their points)", tags=["spectra"]),
    retrieve=extend_schema(summary="One spectrum with its computation settings", tags=["spectra"]),
)
class SpectrumViewSet(APIMixin, viewsets.ReadOnlyModelViewSet):
    """K-edge spectra: energies (eV) and mu, 7 significant digits (stored as float32)."""

    filterset_class = SpectrumFilter
    pagination_class = IdCursorPagination

    def get_queryset(self):
        if self.action == "retrieve":
            return Spectrum.objects.all()
        return Spectrum.objects.defer("settings", "created")

    def get_serializer_class(self):
        return s.SpectrumDetailSerializer if self.action == "retrieve" else s.SpectrumSerializer


@extend_schema_view(
    list=extend_schema(summary="List topology labels", tags=["labels"]),
    retrieve=extend_schema(summary="One topology label", tags=["labels"]),
)
class TopologyLabelViewSet(APIMixin, viewsets.ReadOnlyModelViewSet):
    """Topology classes from the catalogues (a material may carry several)."""

    queryset = TopologyLabel.objects.all()
    serializer_class = s.TopologyLabelSerializer
    filterset_class = LabelFilter
    pagination_class = IdCursorPagination


# --- Model versions, retrain, promote ------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List model versions", tags=["models"]),
    retrieve=extend_schema(summary="One model version: metrics and per-element metrics", tags=["models"]),
)
class ModelVersionViewSet(APIMixin, viewsets.ReadOnlyModelViewSet):
    """Trained model versions with their metrics; retrain and promote (staff)."""

    filterset_class = ModelVersionFilter
    pagination_class = SmallPagePagination

    ACTION_PERMISSIONS = {
        "retrain": "materials.retrain_modelversion",
        "promote": "materials.promote_modelversion",
    }

    @property
    def required_permission(self):
        return self.ACTION_PERMISSIONS.get(getattr(self, "action", None))

    def get_permissions(self):
        if getattr(self, "action", None) in self.ACTION_PERMISSIONS:
            return [IsStaffWithPermission()]
        return super().get_permissions()

    def get_queryset(self):
        versions = ModelVersion.objects.all()
        if self.action == "retrieve":
            return versions.select_related("training_run").prefetch_related("element_metrics")
        return versions

    def get_serializer_class(self):
        if self.action == "retrieve":
            return s.ModelVersionDetailSerializer
        if self.action == "retrain":
            return s.RetrainSerializer
        return s.ModelVersionSerializer

    @extend_schema(
        summary="Retrain: a new model version of this kind (or another), on the same split",
        tags=["models"],
        request=s.RetrainSerializer,
        responses={202: s.JobAcceptedSerializer},
        description="Staff with ``materials.retrain_modelversion``. Answers 202 with a job: the job's status and "
        "progress are those of the training run (``GET /api/jobs/{id}/``); its ``result`` names the new "
        "``model_version`` and ``training_run``.",
    )
    @action(detail=True, methods=["post"])
    def retrain(self, request, pk=None):
        version = self.get_object()
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["expected a JSON object"]})
        body = s.RetrainSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        kind = body.validated_data.get("kind", version.kind)
        if "hyperparameters" in body.validated_data:
            hyperparameters = body.validated_data["hyperparameters"]
        else:
            hyperparameters = version.hyperparameters if kind == version.kind else {}
        from materials.learning.training import request_training

        with transaction.atomic():
            try:
                run = request_training(
                    kind,
                    hyperparameters,
                    dataset=version.dataset,
                    user=request.user,
                    name=body.validated_data.get("name") or f"{kind} (retrain of v{version.pk})",
                )
            except (TypeError, ValueError) as error:
                field = "kind" if "kind" in str(error) and "hyperparameter" not in str(error) else "hyperparameters"
                raise ValidationError({field: [str(error)]}) from None
            job = jobs.record_retraining(version, run, kind, hyperparameters, request.user)
        run.refresh_from_db(fields=["status"])  # without a broker, training has run already
        data = accepted(job, request)
        data.update(status=run.status, model_version=run.model_version_id, training_run=run.pk)
        return Response(data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Promote this model version to production",
        tags=["models"],
        request=None,
        responses={202: s.JobAcceptedSerializer},
        description="Staff with ``materials.promote_modelversion``. Only a trained (ready) model can be promoted; "
        "the swap is atomic and done before the answer, which is 202 with the (finished) job, as before.",
    )
    @action(detail=True, methods=["post"])
    def promote(self, request, pk=None):
        version = self.get_object()
        if version.status != ModelVersion.State.READY or not version.artifact:
            raise ValidationError(
                {"detail": f"model {version.pk} is {version.status}; only a trained (ready) model can be promoted"}
            )
        job = jobs.promote(version.pk, user=request.user)  # synchronous, as in the admin and the CLI
        return Response(accepted(job, request), status=status.HTTP_202_ACCEPTED)


def accepted(job, request) -> dict:
    return {
        "job": job.pk,
        "status": job.status,
        "status_url": reverse("api:job-detail", args=[job.pk], request=request),
    }


# --- Jobs ---------------------------------------------------------------------------------


@extend_schema_view(retrieve=extend_schema(summary="A background job's status and progress", tags=["jobs"]))
class JobViewSet(APIMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Jobs started through the API (retrain, promote). Staff see every job; others their own."""

    serializer_class = s.JobSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        queryset = Job.objects.all()
        if getattr(self, "swagger_fake_view", False):
            return queryset.none()
        if not self.request.user.is_staff:
            queryset = queryset.filter(created_by=self.request.user)
        return queryset

    def retrieve(self, request, *args, **kwargs):
        job = self.get_object()
        context = self.get_serializer_context()
        run_id = (job.result or {}).get("training_run") if job.kind == Job.Kind.TRAIN else None
        if isinstance(run_id, int):
            context["training_run"] = TrainingRun.objects.filter(pk=run_id).first()
        return Response(s.JobSerializer(job, context=context).data)


# --- Predictions ------------------------------------------------------------------------------

PREDICTION_EXPORT_COLUMNS = (
    "material_id",
    "reduced_formula",
    "formula",
    "mp_id",
    "space_group",
    "elements",
    "label",
    "probability",
    "predicted_class",
    "calibrated_probability",
    "decision",
    "reasons",
    "model_version",
)
FORMAT_PARAMETER = OpenApiParameter(
    "format", OpenApiTypes.STR, enum=["json", "csv"], description="``json`` (default) or ``csv``."
)


@extend_schema_view(
    list=extend_schema(
        summary="List predictions, best first (cursor-paginated)",
        tags=["predictions"],
        parameters=[
            OpenApiParameter(
                "ordering",
                OpenApiTypes.STR,
                enum=["probability", "-probability"],
                description="``-probability`` (default) or ``probability``; ties broken by id.",
            )
        ],
    )
)
class PredictionViewSet(APIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Predictions of one model (the production model by default)."""

    queryset = Prediction.objects.none()  # for the schema; rows come from materials.learning.ranking.RankQuery
    serializer_class = s.PredictionSerializer
    filterset_class = PredictionFilter
    filter_backends = [FilterBackend, StableOrderingFilter]
    ordering_fields = ["probability"]
    ordering = ("-probability", "id")
    pagination_class = PredictionQueryPagination

    def prediction_query(self, request) -> RankQuery:
        """The validated filters (400 naming the parameter when one is bad) as the ranking of the
        chosen model, which carries its decision rule (one query)."""
        given = request.query_params
        cleaned = {}
        if any(name in given for name in PredictionFilter.base_filters):
            filterset = PredictionFilter(given, queryset=self.get_queryset(), request=request)
            if not filterset.is_valid():
                raise ValidationError(filterset.errors)
            cleaned = filterset.form.cleaned_data
        ordering = StableOrderingFilter().get_ordering(request, None, self)
        return RankQuery.for_model_id(cleaned.get("model"), rank_filter(cleaned).ordered(ordering))

    def list(self, request, *args, **kwargs):
        query = self.prediction_query(request)
        page = self.paginator.paginate_query(query, request, self)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Export predictions as CSV or JSON (streamed; same filters as the list)",
        tags=["predictions"],
        parameters=[
            FORMAT_PARAMETER,
            OpenApiParameter(
                "ordering",
                OpenApiTypes.STR,
                enum=["probability", "-probability"],
                description="``-probability`` (default) or ``probability``.",
            ),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(
                response={
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "material_id": {"type": "integer"},
                            "reduced_formula": {"type": "string"},
                            "formula": {"type": "string"},
                            "mp_id": {"type": "string", "nullable": True},
                            "space_group": {"type": "integer", "nullable": True},
                            "elements": {"type": "string", "description": "space-separated symbols"},
                            "label": {"type": "string"},
                            "probability": {
                                "type": "number",
                                "nullable": True,
                                "description": "P(topological) as the model gave it (raw).",
                            },
                            "predicted_class": {"type": "string"},
                            "calibrated_probability": {
                                "type": "number",
                                "nullable": True,
                                "description": "P(topological) mapped by the model's calibrator (fitted on its "
                                "validation split).",
                            },
                            "decision": {"type": "string", "enum": [*DECISIONS]},
                            "reasons": {
                                "type": "string",
                                "description": "Space-separated reason codes of an abstention (e.g. ``uncertain``).",
                            },
                            "model_version": {"type": "integer"},
                        },
                    },
                },
                description="One object per prediction.",
            ),
            (200, "text/csv"): OpenApiResponse(response=OpenApiTypes.STR, description="A header row, then rows."),
        },
    )
    @action(detail=False, methods=["get"], renderer_classes=EXPORT_RENDERERS, pagination_class=None)
    def export(self, request, *args, **kwargs):
        check_format_parameter(request)
        query = self.prediction_query(request)
        rows = (export_row(row) for row in query.iterate(CHUNK_SIZE))
        return streaming_export(request.accepted_renderer.format, PREDICTION_EXPORT_COLUMNS, rows, "predictions")

    def finalize_response(self, request, response, *args, **kwargs):
        force_json_errors(request, response)
        return super().finalize_response(request, response, *args, **kwargs)


def export_row(row) -> tuple:
    """A ranked row (``materials.learning.ranking.RankedRow``) in PREDICTION_EXPORT_COLUMNS order."""
    return (
        row.material_id,
        row.reduced_formula,
        row.formula,
        row.mp_id,
        row.space_group_number,
        " ".join(row.elements),
        row.label_out,
        row.probability,
        row.predicted_class,
        row.calibrated_probability,
        row.decision,
        row.reason_codes,
        row.model_version,
    )


def check_format_parameter(request) -> None:
    """``?format=`` given but empty is refused (DRF would silently answer JSON)."""
    value = request.query_params.get("format")
    if value is not None and value not in ("json", "csv"):
        raise ValidationError({"format": ["json or csv"]})


def force_json_errors(request, response) -> None:
    """An error from an export is JSON, whatever format the client asked for."""
    if isinstance(response, Response) and response.status_code >= 400:
        from rest_framework.renderers import JSONRenderer

        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = "application/json"


# --- Tokens --------------------------------------------------------------------------------------


class TokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField()


@extend_schema(
    summary="Exchange a username and password for an API token",
    tags=["auth"],
    request={"application/json": AuthTokenSerializer},
    responses={200: TokenResponseSerializer},
    auth=[],
)
class TokenView(APIMixin, ObtainAuthToken):
    parser_classes = [LimitedJSONParser]
    throttle_classes = [*DEFAULT_THROTTLES, LoginThrottle]
    permission_classes = []
    authentication_classes = []
