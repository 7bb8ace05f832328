"""Dataset splits, model versions and their training runs, predictions and per-element metrics."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from materials.models.compounds import BINARY_CLASSES, Material
from materials.models.work import TrackedWork

# --- Datasets and splits ------------------------------------------------------------


class Dataset(models.Model):
    """A named, frozen assignment of materials to train / validation / test."""

    name = models.CharField(max_length=100, unique=True)
    method = models.CharField(max_length=64, default="element_balanced")
    seed = models.IntegerField(default=0)
    parameters = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64, help_text="sha256 of the sorted (material, subset) pairs")
    dataset_hash = models.CharField(max_length=64, blank=True, help_text="sha256 of the spectra and labels used")
    counts = models.JSONField(default=dict, blank=True)
    balance = models.JSONField(default=dict, blank=True, help_text="per-element class fractions per subset")
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} ({self.content_hash[:8]})"


class SplitAssignment(models.Model):
    class Subset(models.TextChoices):
        TRAIN = "train"
        VALIDATION = "validation"
        TEST = "test"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="assignments")
    material = models.ForeignKey(Material, on_delete=models.CASCADE, related_name="split_assignments")
    subset = models.CharField(max_length=10, choices=Subset.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset", "material"], name="uniq_split_assignment")]
        indexes = [models.Index(fields=["dataset", "subset"])]

    def __str__(self) -> str:
        return f"material {self.material_id} in {self.subset} of dataset {self.dataset_id}"


# --- Models, training and predictions --------------------------------------------------


class ModelVersionQuerySet(models.QuerySet):
    def production(self):
        return self.filter(is_production=True).first()

    def prior(self):
        """The composition + symmetry prior screening ranks every structure with: the
        production model if it is type-only, else the newest ready type-only version
        (None when no type-only model has been trained)."""
        production = self.production()
        if production is not None and production.kind == ModelVersion.Kind.TYPE_ONLY:
            return production
        ready = self.filter(kind=ModelVersion.Kind.TYPE_ONLY, status=ModelVersion.State.READY)
        return ready.exclude(artifact="").order_by("-created", "-id").first()


class ModelVersion(models.Model):
    class Kind(models.TextChoices):
        CNN_SG = "cnn-sg", "CNN-sg (spectra + symmetry)"
        CNN = "cnn", "CNN (spectra only)"
        CNN_SG_COMPOSITION = "cnn-sg-composition", "CNN-sg + composition"
        STACKED = "stacked", "Prior + spectra (stacked)"
        SVM_SG = "svm-sg", "SVM-sg"
        KMEANS = "kmeans", "k-means on PCA"
        TYPE_ONLY = "type-only", "Type-only (composition + space group)"

    class State(models.TextChoices):
        TRAINING = "training"
        READY = "ready"
        FAILED = "failed"
        RETIRED = "retired"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    name = models.CharField(max_length=100, blank=True)
    hyperparameters = models.JSONField(default=dict, blank=True)
    dataset = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.PROTECT, related_name="model_versions")
    status = models.CharField(max_length=10, choices=State.choices, default=State.TRAINING)
    artifact = models.FileField(upload_to="models/", blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    threshold = models.FloatField(default=0.5)
    metrics = models.JSONField(default=dict, blank=True)
    # Provenance
    dataset_hash = models.CharField(max_length=64, blank=True)
    split_hash = models.CharField(max_length=64, blank=True)
    code_version = models.CharField(max_length=64, blank=True)
    library_versions = models.JSONField(default=dict, blank=True)
    is_production = models.BooleanField(default=False)
    created = models.DateTimeField(default=timezone.now)

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        constraints = [
            # Exactly one production model: the database enforces "at most one".
            models.UniqueConstraint(
                fields=["is_production"], condition=Q(is_production=True), name="one_production_model"
            )
        ]
        permissions = [
            ("retrain_modelversion", "Can retrain models"),
            ("promote_modelversion", "Can promote a model to production"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} v{self.pk}" + (" [production]" if self.is_production else "")


class TrainingRun(TrackedWork):
    model_version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE, related_name="training_run")
    epoch = models.IntegerField(default=0)
    total_epochs = models.IntegerField(default=0)
    history = models.JSONField(default=list, blank=True, help_text="one dict per epoch: loss, accuracy, val_loss…")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"Training of {self.model_version} ({self.status})"

    def mark_failed(self, error: str) -> None:
        """Fail the run and, with it, its model version."""
        super().mark_failed(error)
        ModelVersion.objects.filter(pk=self.model_version_id).update(status=ModelVersion.State.FAILED)


class Prediction(models.Model):
    material = models.ForeignKey(Material, on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="predictions")
    probability = models.FloatField(help_text="P(topological)")
    predicted_class = models.CharField(max_length=16, choices=BINARY_CLASSES)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["material", "model_version"], name="uniq_prediction_per_model")]
        # ``id`` is the API's tie-break: with it in the index, PostgreSQL reads a ranked
        # page straight off the index instead of re-sorting each probability group.
        indexes = [models.Index(fields=["model_version", "-probability", "id"], name="prediction_rank_id")]

    def __str__(self) -> str:
        return f"P={self.probability:.3f} for material {self.material_id} by model {self.model_version_id}"


class ElementMetric(models.Model):
    """Test-set recall/precision/F1 of one class among materials containing one element."""

    class Subset(models.TextChoices):
        VALIDATION = "validation"
        TEST = "test"

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="element_metrics")
    element = models.CharField(max_length=3)
    subset = models.CharField(max_length=10, choices=Subset.choices, default=Subset.TEST)
    target_class = models.CharField(max_length=16, choices=BINARY_CLASSES)
    recall = models.FloatField(null=True)
    precision = models.FloatField(null=True)
    f1 = models.FloatField(null=True)
    support = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "element", "subset", "target_class"], name="uniq_element_metric"
            )
        ]

    def __str__(self) -> str:
        return f"{self.element} {self.target_class} ({self.subset}) of model {self.model_version_id}"
