"""Screenings of a release: the batch and its ranked rows."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from materials.models.compounds import Material
from materials.models.learning import ModelVersion
from materials.models.work import TrackedWork


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
