"""The data model: materials, their spectra and topology labels, dataset splits,
trained model versions, predictions, metrics and long-running jobs.

Provenance rides on every record: each Spectrum knows its source and settings, each
TopologyLabel its catalogue and release, each ModelVersion its dataset and split hash
and library versions, each Prediction its ModelVersion.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from materials.fields import Float32ArrayField
from materials.labels import TOPOLOGICAL, TRIVIAL, training_label

BINARY_CLASSES = [(TOPOLOGICAL, "Topological"), (TRIVIAL, "Trivial")]


# --- Long-running work -------------------------------------------------------------


class Status(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class TrackedWork(models.Model):
    """Status, progress and error of work that runs on a Celery worker.

    Status moves pending → running → done | failed. ``progress`` is a fraction in
    [0, 1]; ``progress_message`` says what is happening now, for pages that poll.
    """

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_finished(self) -> bool:
        return self.status in (Status.DONE, Status.FAILED)

    @property
    def seconds(self) -> float | None:
        if self.started is None:
            return None
        return ((self.finished or timezone.now()) - self.started).total_seconds()

    def mark_running(self, message: str = "") -> None:
        self.status, self.started, self.finished = Status.RUNNING, timezone.now(), None
        self.error, self.progress, self.progress_message = "", 0.0, message
        self.save(update_fields=["status", "started", "finished", "error", "progress", "progress_message"])

    def report_progress(self, fraction: float, message: str = "") -> None:
        # A queryset update: progress must not overwrite fields another process set.
        type(self).objects.filter(pk=self.pk).update(progress=fraction, progress_message=message[:300])
        self.progress, self.progress_message = fraction, message[:300]

    def mark_done(self, message: str = "") -> None:
        self.status, self.finished, self.progress = Status.DONE, timezone.now(), 1.0
        self.progress_message = message or self.progress_message
        self.save(update_fields=["status", "finished", "progress", "progress_message"])

    def mark_failed(self, error: str) -> None:
        self.status, self.finished, self.error = Status.FAILED, timezone.now(), error[:10000]
        self.save(update_fields=["status", "finished", "error"])


class Job(TrackedWork):
    """A generic background job (ingestion, FEFF computation, batch classification).

    Answers the "202 + job id" of the API and the progress of management commands.
    """

    class Kind(models.TextChoices):
        INGEST_MP = "ingest_mp"
        IMPORT_LABELS = "import_labels"
        COMPUTE_SPECTRA = "compute_spectra"
        CLASSIFY = "classify"
        TRAIN = "train"
        PROMOTE = "promote"
        MAINTENANCE = "maintenance"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    parameters = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"


# --- Materials, spectra and labels ----------------------------------------------------


class MaterialQuerySet(models.QuerySet):
    def with_spectra(self):
        return self.filter(has_spectra=True)

    def labelled(self):
        return self.exclude(label="")

    def refresh_has_spectra(self) -> int:
        """Set ``has_spectra``: true when every element of the formula has a
        training-grade spectrum, a K edge from one of :data:`TRAINING_SOURCES` (the
        paper's rule for a usable sample, and exactly what training reads; a measured
        spectrum alone does not count). Returns how many changed."""
        elements_with_spectra: dict[int, set[str]] = {}
        training_grade = Spectrum.objects.filter(material__in=self.values("pk"), edge="K", source__in=TRAINING_SOURCES)
        for material_id, element in training_grade.values_list("material_id", "element"):
            elements_with_spectra.setdefault(material_id, set()).add(element)
        changed = []
        candidates = self.filter(models.Q(has_spectra=True) | models.Q(pk__in=Spectrum.objects.values("material_id")))
        for material in candidates.only("id", "elements", "has_spectra"):
            complete = set(material.elements) <= elements_with_spectra.get(material.pk, set())
            if complete != material.has_spectra:
                material.has_spectra = complete
                changed.append(material)
        Material.objects.bulk_update(changed, ["has_spectra"], batch_size=2000)
        return len(changed)


class Material(models.Model):
    """One compound: identifiers, composition, symmetry and (where known) structure."""

    class Source(models.TextChoices):
        MATERIAE = "materiae"
        ARSENAL = "arsenal"
        TQC = "tqc"
        MATERIALS_PROJECT = "materials_project"
        AMCSD = "amcsd"
        ICSD = "icsd"
        USER = "user"

    mp_id = models.CharField(max_length=32, null=True, blank=True)
    icsd_ids = models.JSONField(default=list, blank=True)
    amcsd_id = models.IntegerField(null=True, blank=True)
    materiae_id = models.CharField(max_length=32, null=True, blank=True)

    formula = models.CharField(max_length=200)
    reduced_formula = models.CharField(max_length=200, db_index=True)
    # Element symbols, sorted; ``elements_key`` ("-Co-Li-O-") makes element filters
    # one indexed LIKE on SQLite and PostgreSQL alike.
    elements = models.JSONField(default=list)
    elements_key = models.CharField(max_length=400, db_index=True)
    nsites = models.IntegerField(null=True, blank=True)
    structure = models.JSONField(null=True, blank=True, help_text="pymatgen Structure.as_dict()")
    structure_source = models.CharField(max_length=32, blank=True)

    space_group_number = models.PositiveSmallIntegerField(null=True, blank=True, db_index=True)
    space_group_symbol = models.CharField(max_length=32, blank=True)
    point_group = models.CharField(max_length=16, blank=True)
    crystal_system = models.CharField(max_length=16, blank=True, db_index=True)

    source = models.CharField(max_length=32, choices=Source.choices)
    source_release = models.CharField(max_length=200, blank=True)

    # Denormalised for fast filtering at 300k rows; kept in step by
    # ``TopologyLabel.objects.refresh_material_labels`` and spectrum ingestion.
    label = models.CharField(max_length=16, choices=BINARY_CLASSES, blank=True, db_index=True)
    has_spectra = models.BooleanField(default=False, db_index=True)

    created = models.DateTimeField(default=timezone.now)

    objects = MaterialQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["mp_id"], condition=Q(mp_id__isnull=False), name="uniq_material_mp_id"),
            models.UniqueConstraint(
                fields=["materiae_id"], condition=Q(materiae_id__isnull=False), name="uniq_material_materiae_id"
            ),
            models.UniqueConstraint(
                fields=["amcsd_id"], condition=Q(amcsd_id__isnull=False), name="uniq_material_amcsd_id"
            ),
        ]
        indexes = [models.Index(fields=["reduced_formula", "space_group_number"])]

    def __str__(self) -> str:
        ident = self.mp_id or self.materiae_id or (f"amcsd-{self.amcsd_id}" if self.amcsd_id else f"#{self.pk}")
        return f"{self.reduced_formula} ({ident})"

    def save(self, *args, **kwargs):
        self.elements_key = elements_key(self.elements)
        super().save(*args, **kwargs)

    @property
    def mp_url(self) -> str:
        return f"https://next-gen.materialsproject.org/materials/{self.mp_id}" if self.mp_id else ""

    @property
    def icsd_url(self) -> str:
        if not self.icsd_ids:
            return ""
        return f"https://icsd.fiz-karlsruhe.de/display/details.xhtml?collectionCode={self.icsd_ids[0]}"

    def get_structure(self):
        """The pymatgen Structure, or None when only composition is known."""
        if not self.structure:
            return None
        from pymatgen.core import Structure

        return Structure.from_dict(self.structure)


def elements_key(elements) -> str:
    return "-" + "-".join(sorted(elements)) + "-" if elements else ""


class Spectrum(models.Model):
    """A K-edge XANES spectrum of one absorbing element in one material."""

    class Source(models.TextChoices):
        MATERIALS_PROJECT = "materials_project"
        FEFF = "feff"
        MEASURED = "measured"

    material = models.ForeignKey(Material, on_delete=models.CASCADE, related_name="spectra")
    element = models.CharField(max_length=3)
    edge = models.CharField(max_length=4, default="K")
    energies_ev = Float32ArrayField()
    mu = Float32ArrayField()
    source = models.CharField(max_length=32, choices=Source.choices)
    # The computation's settings and library versions (FEFF cards, preset, seconds…).
    settings = models.JSONField(default=dict, blank=True)
    source_release = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "spectra"
        ordering = ["material_id", "element"]
        constraints = [
            models.UniqueConstraint(fields=["material", "element", "edge", "source"], name="uniq_spectrum"),
        ]

    def __str__(self) -> str:
        return f"{self.element} {self.edge} of material {self.material_id} ({self.source})"

    @property
    def npoints(self) -> int:
        return 0 if self.energies_ev is None else len(self.energies_ev)


# When a material has one element's spectrum from several sources, models use the
# first of these. FEFF comes first because the bundled training set is FEFF at the
# ``fast`` preset, whose edges sit about 10 eV below MP's (BENCHMARKS.md, FEFF
# fidelity): a stored FEFF spectrum is on the training set's scale, an MP one is not.
# Measured spectra are never training inputs: they come from another domain
# (instrument broadening, normalisation) than the computed ones.
TRAINING_SOURCES = (Spectrum.Source.FEFF, Spectrum.Source.MATERIALS_PROJECT)


class TopologyLabelQuerySet(models.QuerySet):
    def label_counts(self) -> dict[tuple[str, str, str], int]:
        """Counts by (catalogue, raw class, binary class)."""
        rows = self.values_list("catalogue", "raw_class", "binary_class").annotate(n=models.Count("id"))
        return {(c, r, b): n for c, r, b, n in rows.order_by()}

    def refresh_material_labels(self, material_ids=None) -> int:
        """Recompute ``Material.label`` from the labels, by the training-label rule.

        Returns the number of materials whose label changed.
        """
        materials = Material.objects.all()
        # Beyond a few thousand ids an IN list costs more than a full pass (and
        # SQLite caps the number of query parameters).
        if material_ids is not None and len(material_ids) <= 5000:
            materials = materials.filter(pk__in=list(material_ids))
        by_material: dict[int, list[TopologyLabel]] = {}
        for label in self.filter(material__in=materials.values("pk")).only("material_id", "catalogue", "binary_class"):
            by_material.setdefault(label.material_id, []).append(label)
        changed = []
        for material in materials.only("id", "label").iterator(chunk_size=5000):
            chosen = training_label(by_material.get(material.pk, []))
            value = chosen.binary_class if chosen else ""
            if value != material.label:
                material.label = value
                changed.append(material)
        with transaction.atomic():
            Material.objects.bulk_update(changed, ["label"], batch_size=2000)
        return len(changed)


class TopologyLabel(models.Model):
    """A topology class from one catalogue. A material may carry several."""

    class Catalogue(models.TextChoices):
        MATERIAE = "materiae"
        ARSENAL = "arsenal"
        TQC = "tqc"
        USER = "user"

    material = models.ForeignKey(Material, on_delete=models.CASCADE, related_name="labels")
    catalogue = models.CharField(max_length=16, choices=Catalogue.choices)
    raw_class = models.CharField(max_length=32, help_text="TI, TCI, HSP_SM, HSL_SM, Triv_Ins, or a TQC class")
    binary_class = models.CharField(max_length=16, choices=BINARY_CLASSES, db_index=True)
    tags = models.JSONField(default=list, blank=True, help_text="e.g. INC, WEYL, NSOC:HSL_SM")
    source_release = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(default=timezone.now)

    objects = TopologyLabelQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["material", "catalogue"], name="uniq_label_per_catalogue")]

    def __str__(self) -> str:
        return f"{self.raw_class} ({self.catalogue}) for material {self.material_id}"


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


class ScreeningBatch(TrackedWork):
    """One screening of a release of structures (an ICSD export, say)."""

    name = models.CharField(max_length=200)
    source = models.CharField(max_length=200, blank=True, help_text="the uploaded file or folder")
    upload = models.FileField(upload_to="screenings/", blank=True)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL)
    stage_counts = models.JSONField(default=dict, blank=True)
    rejected = models.JSONField(default=list, blank=True, help_text="[{file, reason}]")
    feff_budget = models.PositiveIntegerField(default=0, help_text="materials that may get FEFF spectra (stage 2)")
    feff_max_sites = models.PositiveIntegerField(
        default=24, help_text="stage 2 takes structures with at most this many sites in the file's cell"
    )
    prior_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="stage 1's prior"
    )
    materials = models.ManyToManyField(Material, blank=True, related_name="screenings")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "screening batches"

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class ScreeningRow(models.Model):
    """One material of a screening: how far it got and the probability it is ranked by.

    Stage 1 gives every parsed structure the prior (``prior_probability``). Stage 2
    computes FEFF spectra for a budgeted shortlist; once a material's spectra are
    complete the spectral model gives ``spectral_probability``. ``probability`` is
    the one the ranking uses: the spectral one when there is one, else the prior.
    ``reason`` says why the row stopped where it did. (A calibrated decision and its
    reasons, when predictions carry them, belong beside ``probability``.)
    """

    class Stage(models.TextChoices):
        PRIOR = "prior", "prior only"
        FEFF = "feff", "spectra being computed"
        SPECTRAL = "spectral", "classified from spectra"

    batch = models.ForeignKey(ScreeningBatch, on_delete=models.CASCADE, related_name="rows")
    material = models.ForeignKey(Material, on_delete=models.CASCADE, related_name="screening_rows")
    files = models.JSONField(default=list, blank=True, help_text="the release's files of this material")
    sites = models.PositiveIntegerField(default=0, help_text="sites in the file's cell")
    feff_blocker = models.CharField(
        max_length=200, blank=True, help_text="why FEFF cannot run (disordered, hydrogen…); empty when it can"
    )
    stage = models.CharField(max_length=10, choices=Stage.choices, default=Stage.PRIOR)
    reason = models.CharField(max_length=300, blank=True)
    prior_probability = models.FloatField(null=True, blank=True)
    spectral_probability = models.FloatField(null=True, blank=True)
    probability = models.FloatField(null=True, blank=True, help_text="what the ranking uses")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["batch", "material"], name="uniq_screening_row")]
        indexes = [models.Index(fields=["batch", "-probability", "id"], name="screening_row_rank")]

    def __str__(self) -> str:
        return f"material {self.material_id} in screening {self.batch_id} ({self.stage})"
