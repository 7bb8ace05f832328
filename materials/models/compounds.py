"""Materials, their spectra and their topology labels."""

from __future__ import annotations

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from materials.fields import Float32ArrayField
from materials.ingest.labels import TOPOLOGICAL, TRIVIAL, training_label

BINARY_CLASSES = [(TOPOLOGICAL, "Topological"), (TRIVIAL, "Trivial")]


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

    @classmethod
    def new(cls, space_group_number: int, **fields) -> Material:
        """An unsaved material with ``fields``, its symmetry filled in from
        ``space_group_number`` (:meth:`set_symmetry`) and its ``elements_key`` set,
        so it is ready for ``bulk_create`` as well as ``save``."""
        material = cls(**fields)
        material.set_symmetry(space_group_number)
        material.elements_key = elements_key(material.elements)
        return material

    def set_symmetry(self, space_group_number: int) -> list[str]:
        """Set the space group number, symbol, point group and crystal system from the
        number; returns those field names (for ``update_fields``).

        Raises ``ValueError`` for a number outside 1-230."""
        from materials.chemistry import symmetry_of

        symmetry = symmetry_of(space_group_number)
        self.space_group_number, self.space_group_symbol = symmetry.number, symmetry.symbol
        self.point_group, self.crystal_system = symmetry.point_group, symmetry.crystal_system
        return ["space_group_number", "space_group_symbol", "point_group", "crystal_system"]

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
