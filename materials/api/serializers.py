"""Serializers: explicit fields everywhere; the hot list (predictions) has a fast path."""

from __future__ import annotations

import math

import numpy as np
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from materials.learning.ranking import LABEL_OUT
from materials.models import (
    BINARY_CLASSES,
    ElementMetric,
    Job,
    Material,
    ModelVersion,
    Spectrum,
    Status,
    TopologyLabel,
    TrainingRun,
)
from mlcore.decision import DECISIONS, REASON_CODES

LABEL_OUT_CHOICES = ["topological", "trivial", "unlabelled"]


# --- Helpers --------------------------------------------------------------------------


def finite_or_none(value):
    """JSON has no NaN or infinity: such values (and those nested in lists/dicts) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, np.generic):
        return finite_or_none(value.item())
    return value


def significant(values: np.ndarray | None, digits: int = 7) -> list[float]:
    """float32 arrays as the short decimals they were stored from (7 significant digits)."""
    if values is None:
        return []
    array = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        magnitude = np.floor(np.log10(np.abs(array)))
        magnitude[~np.isfinite(magnitude)] = 0
        factor = 10.0 ** (digits - 1 - magnitude)
        rounded = np.round(array * factor) / factor
    rounded[~np.isfinite(rounded)] = array[~np.isfinite(rounded)]
    return finite_or_none(rounded.tolist())


def elements_from_key(key: str) -> list[str]:
    return key.strip("-").split("-") if key else []


# --- Materials, spectra, labels ----------------------------------------------------------


class SpectrumSummarySerializer(serializers.ModelSerializer):
    npoints = serializers.IntegerField(read_only=True)

    class Meta:
        model = Spectrum
        fields = ["id", "element", "edge", "source", "npoints"]


class TopologyLabelSerializer(serializers.ModelSerializer):
    class Meta:
        model = TopologyLabel
        fields = ["id", "material", "catalogue", "raw_class", "binary_class", "tags", "source_release", "created"]


class MaterialSerializer(serializers.ModelSerializer):
    label = serializers.SerializerMethodField()

    class Meta:
        model = Material
        fields = [
            "id",
            "mp_id",
            "materiae_id",
            "amcsd_id",
            "icsd_ids",
            "formula",
            "reduced_formula",
            "elements",
            "space_group_number",
            "space_group_symbol",
            "crystal_system",
            "source",
            "label",
            "has_spectra",
        ]

    @extend_schema_field(serializers.ChoiceField(choices=LABEL_OUT_CHOICES))
    def get_label(self, material) -> str:
        return LABEL_OUT[material.label]


class MaterialDetailSerializer(MaterialSerializer):
    spectra = SpectrumSummarySerializer(many=True, read_only=True)
    labels = TopologyLabelSerializer(many=True, read_only=True)
    structure = serializers.JSONField(read_only=True, allow_null=True, help_text="pymatgen Structure.as_dict()")

    class Meta(MaterialSerializer.Meta):
        fields = [
            *MaterialSerializer.Meta.fields,
            "nsites",
            "point_group",
            "structure",
            "structure_source",
            "source_release",
            "created",
            "spectra",
            "labels",
        ]


@extend_schema_field({"type": "array", "items": {"type": "number"}})
class ArrayOutField(serializers.Field):
    def __init__(self, **kwargs):
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value):
        return significant(value)


class SpectrumSerializer(serializers.ModelSerializer):
    npoints = serializers.IntegerField(read_only=True)
    energies_ev = ArrayOutField(help_text="Photon energies (eV), increasing.")
    mu = ArrayOutField(help_text="Absorption at each energy.")

    class Meta:
        model = Spectrum
        fields = ["id", "material", "element", "edge", "source", "source_release", "npoints", "energies_ev", "mu"]


class SpectrumDetailSerializer(SpectrumSerializer):
    settings = serializers.JSONField(read_only=True, help_text="The computation's settings and library versions.")

    class Meta(SpectrumSerializer.Meta):
        fields = [*SpectrumSerializer.Meta.fields, "settings", "created"]


# --- Models ------------------------------------------------------------------------------


class ElementMetricSerializer(serializers.ModelSerializer):
    recall = serializers.SerializerMethodField()
    precision = serializers.SerializerMethodField()
    f1 = serializers.SerializerMethodField()

    class Meta:
        model = ElementMetric
        fields = ["element", "subset", "target_class", "recall", "precision", "f1", "support"]

    def get_recall(self, metric) -> float | None:
        return finite_or_none(metric.recall)

    def get_precision(self, metric) -> float | None:
        return finite_or_none(metric.precision)

    def get_f1(self, metric) -> float | None:
        return finite_or_none(metric.f1)


class TrainingRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "status",
            "progress",
            "progress_message",
            "error",
            "epoch",
            "total_epochs",
            "created",
            "started",
            "finished",
        ]


class ModelVersionSerializer(serializers.ModelSerializer):
    test_metrics = serializers.SerializerMethodField(help_text="Headline test-set metrics at the threshold.")

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "kind",
            "name",
            "status",
            "is_production",
            "threshold",
            "hyperparameters",
            "dataset",
            "created",
            "test_metrics",
        ]

    @extend_schema_field({"type": "object", "additionalProperties": {}})
    def get_test_metrics(self, version) -> dict:
        return finite_or_none((version.metrics or {}).get("test", {}))


class ModelVersionDetailSerializer(ModelVersionSerializer):
    metrics = serializers.SerializerMethodField(help_text="Everything evaluation produced: reports, CIs, ROC…")
    element_metrics = ElementMetricSerializer(many=True, read_only=True)
    training_run = serializers.SerializerMethodField()

    class Meta(ModelVersionSerializer.Meta):
        fields = [
            *ModelVersionSerializer.Meta.fields,
            "metrics",
            "element_metrics",
            "training_run",
            "artifact_sha256",
            "dataset_hash",
            "split_hash",
            "code_version",
            "library_versions",
        ]

    @extend_schema_field({"type": "object", "additionalProperties": {}})
    def get_metrics(self, version) -> dict:
        return finite_or_none(version.metrics or {})

    @extend_schema_field(TrainingRunSerializer(allow_null=True))
    def get_training_run(self, version):
        try:
            run = version.training_run
        except TrainingRun.DoesNotExist:
            return None
        return TrainingRunSerializer(run).data


# --- Predictions ----------------------------------------------------------------------------

PREDICTION_VALUES = (
    "id",
    "material_id",
    "model_version_id",
    "probability",
    "predicted_class",
    "material__reduced_formula",
    "material__formula",
    "material__mp_id",
    "material__space_group_number",
    "material__elements_key",
    "material__label",
)


class ReasonSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=list(REASON_CODES), help_text="A stable code clients can rely on.")
    text = serializers.CharField(help_text="The reason in words.")


class DecidedFieldsMixin(serializers.Serializer):
    """What every ranked row carries beside its stored (raw) probability (``materials.learning.ranking``)."""

    calibrated_probability = serializers.FloatField(
        allow_null=True,
        help_text="P(topological) mapped by the calibrator of the model that gave it (fitted on its validation "
        "split); null when there is no probability.",
    )
    decision = serializers.ChoiceField(
        choices=list(DECISIONS),
        help_text="The model's abstain band applied to the calibrated probability (the inputs were checked when "
        "the probability was stored): topological, trivial or abstain.",
    )
    reasons = ReasonSerializer(
        many=True, help_text="Why the row abstains, where known (``uncertain``: inside the abstain band)."
    )


class PredictionSerializer(DecidedFieldsMixin, serializers.Serializer):
    """One ranked prediction with the facts of its material that clients filter on.

    Reads the rows of ``materials.learning.ranking.RankQuery`` (decided in bulk) and builds each dict directly: the
    predictions list is the API's hottest path (see bench/bench_api.py).
    """

    id = serializers.IntegerField()
    material = serializers.IntegerField(help_text="Material id.")
    model_version = serializers.IntegerField()
    probability = serializers.FloatField(allow_null=True, help_text="P(topological) as the model gave it (raw).")
    predicted_class = serializers.ChoiceField(choices=BINARY_CLASSES)
    reduced_formula = serializers.CharField()
    formula = serializers.CharField()
    mp_id = serializers.CharField(allow_null=True)
    space_group = serializers.IntegerField(allow_null=True)
    elements = serializers.ListField(child=serializers.CharField())
    label = serializers.ChoiceField(choices=LABEL_OUT_CHOICES, help_text="The material's training label.")

    def to_representation(self, row):
        return {
            "id": row.id,
            "material": row.material_id,
            "model_version": row.model_version,
            "probability": row.probability,
            "calibrated_probability": row.calibrated_probability,
            "decision": row.decision,
            "reasons": row.reasons,
            "predicted_class": row.predicted_class,
            "reduced_formula": row.reduced_formula,
            "formula": row.formula,
            "mp_id": row.mp_id,
            "space_group": row.space_group_number,
            "elements": row.elements,
            "label": row.label_out,
        }


# --- Jobs and screenings -----------------------------------------------------------------------


class JobSerializer(serializers.ModelSerializer):
    """A background job. For a retrain job, status and progress are those of its training run."""

    url = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "status",
            "progress",
            "progress_message",
            "error",
            "parameters",
            "result",
            "created",
            "started",
            "finished",
            "url",
        ]

    def get_url(self, job) -> str:
        return reverse("api:job-detail", args=[job.pk], request=self.context.get("request"))

    def to_representation(self, job):
        data = super().to_representation(job)
        run = self.context.get("training_run")
        if run is not None:
            data.update(
                status=run.status,
                progress=run.progress,
                progress_message=run.progress_message,
                error=run.error,
                started=serializers.DateTimeField().to_representation(run.started) if run.started else None,
                finished=serializers.DateTimeField().to_representation(run.finished) if run.finished else None,
            )
        return finite_or_none(data)


class JobAcceptedSerializer(serializers.Serializer):
    job = serializers.IntegerField(help_text="Job id; poll status_url for progress.")
    status = serializers.ChoiceField(choices=Status.choices)
    status_url = serializers.CharField()
    model_version = serializers.IntegerField(required=False, help_text="Retrain: the new model version.")
    training_run = serializers.IntegerField(required=False, help_text="Retrain: its training run.")


class RetrainSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=ModelVersion.Kind.values, required=False, help_text="Model kind; the retrained model's by default."
    )
    hyperparameters = serializers.DictField(
        required=False, help_text="Hyperparameters; the retrained model's by default (an empty object for none)."
    )
    name = serializers.CharField(required=False, max_length=100, allow_blank=True)
