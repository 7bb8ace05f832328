"""Serializers of POST /api/classify/: the request (JSON spectra, or uploads) and the answer
(calibrated probability, decision, reasons). What a valid request is lives in
:mod:`materials.learning.classify_inputs`, shared with ``manage.py classify``: the request serializer
declares the fields for the schema and hands the body to it.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from materials.learning.classify_inputs import MAX_POINTS, ClassifyInputError, read_request
from materials.models import BINARY_CLASSES
from mlcore.decision import DECISIONS, REASON_CODES
from mlcore.spectrum import MIN_POINTS

POINTS_SCHEMA = {
    "type": "array",
    "items": {"type": "number"},
    "minItems": MIN_POINTS,
    "maxItems": MAX_POINTS,
}


@extend_schema_field(POINTS_SCHEMA)
class PointsField(serializers.ListField):
    """A list of numbers (documentation only: ``classify_inputs`` reads and checks them)."""


class SpectrumInputSerializer(serializers.Serializer):
    energies_ev = PointsField(help_text="Photon energies in eV, strictly increasing, at least 10 points.")
    mu = PointsField(help_text="Absorption at each energy (any units; standardized per element).")


class ClassifyRequestSerializer(serializers.Serializer):
    """One material: its spectra by absorbing element, plus symmetry and composition."""

    spectra = serializers.DictField(
        child=SpectrumInputSerializer(),
        help_text='K-edge spectra by absorbing element symbol (Li to Pu), e.g. ``{"Co": {...}, "O": {...}}``. '
        "Edges may be missing: the material is classified with those present.",
    )
    space_group = serializers.IntegerField(
        min_value=1,
        max_value=230,
        required=False,
        allow_null=True,
        help_text="Space group number; taken from ``structure`` when omitted.",
    )
    formula = serializers.CharField(
        required=False,
        max_length=200,
        allow_blank=True,
        help_text="Chemical formula; elements in it without a spectrum are reported as missing.",
    )
    structure = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="A pymatgen Structure.as_dict(): gives the composition and (when space_group is omitted) "
        "the space group (spglib, symprec 0.1 Å).",
    )
    sort_energies = serializers.BooleanField(
        default=False, help_text="Sort the points by energy first (digitised data); duplicates are still refused."
    )

    def to_internal_value(self, data):
        """The checked :class:`~materials.learning.classify_inputs.Submission` (one set of rules with the CLI)."""
        try:
            return read_request(data)
        except ClassifyInputError as error:
            raise serializers.ValidationError(error.errors) from None


class ClassifyUploadSerializer(serializers.Serializer):
    """Measured spectra as files: CSV/text (energy, mu columns; or element, energy, mu) or XDI."""

    file = serializers.FileField(
        help_text="A CSV/text file (columns energy, mu, or element, energy, mu; comma, tab or space separated; "
        "'#' comments) or an XDI file. Repeat the part to send one file per element."
    )
    element = serializers.CharField(
        required=False,
        max_length=3,
        allow_blank=True,
        help_text="Absorbing element of a two-column file (XDI files name it in their header).",
    )
    space_group = serializers.IntegerField(min_value=1, max_value=230, required=False, allow_null=True)
    formula = serializers.CharField(required=False, max_length=200, allow_blank=True)
    structure = serializers.FileField(
        required=False, help_text="A CIF (or POSCAR) of the material: composition and space group."
    )
    sort_energies = serializers.BooleanField(
        default=False, help_text="Sort the points by energy first (digitised data); duplicates are still refused."
    )


class ClassTrustSerializer(serializers.Serializer):
    recall = serializers.FloatField(allow_null=True, help_text="Validation recall of this class for the element.")
    support = serializers.IntegerField(help_text="Validation materials of this class containing the element.")


class ElementTrustSerializer(serializers.Serializer):
    topological = ClassTrustSerializer(required=False)
    trivial = ClassTrustSerializer(required=False)


class ClassificationReasonSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=list(REASON_CODES),
        help_text="unseen_element: a spectrum of an element the model never saw in training; off_distribution: a "
        "spectrum that, aligned and normalised, lies outside the training spectra, or covers under 70 % of the "
        "model's window (models stored before preprocessing version 2: also an edge off the training energy "
        "scale); missing_spectra: half or more of the formula's elements lack a spectrum and the model has no "
        "composition prior to stand in for them; uncertain: the calibrated probability lies inside the abstain "
        "band chosen on validation.",
    )
    text = serializers.CharField(help_text="The reason in words, with the numbers behind it.")


class ClassificationSerializer(serializers.Serializer):
    probability = serializers.FloatField(
        allow_null=True,
        help_text="Calibrated P(topological): the model's probability mapped by the calibrator fitted on the "
        "validation split (equal to raw_probability for models stored before calibration).",
    )
    raw_probability = serializers.FloatField(allow_null=True, help_text="The model's own, uncalibrated output.")
    calibrated = serializers.BooleanField(help_text="Whether the answering model has a fitted calibrator.")
    decision = serializers.ChoiceField(
        choices=list(DECISIONS),
        help_text="The answer: topological or trivial when the calibrated probability is outside the abstain band "
        "and no input check failed; otherwise abstain (see reasons). The probability is returned either way.",
    )
    reasons = ClassificationReasonSerializer(
        many=True, help_text="Why the answer is abstain; empty when it is decided."
    )
    band = serializers.DictField(
        child=serializers.FloatField(),
        help_text="The abstain band on the calibrated probability: low, high (abstain when low < P < high, chosen "
        "on validation for target_precision in both decided classes).",
    )
    predicted_class = serializers.ChoiceField(
        choices=BINARY_CLASSES, help_text="Raw probability against the single threshold (before abstaining)."
    )
    threshold = serializers.FloatField()
    model_version = serializers.IntegerField(help_text="The model that answered.")
    model_kind = serializers.CharField()
    answered_by = serializers.CharField(
        help_text="Why this model answered: the production model, or a model that can use the composition when "
        "only some elements have spectra."
    )
    preprocessing_version = serializers.IntegerField(
        allow_null=True,
        help_text="The answering model's preprocessing version (2: spectra aligned on E0 and "
        "normalised to a unit edge step).",
    )
    elements = serializers.ListField(
        child=serializers.CharField(), help_text="Elements whose spectra were used (seen by the model)."
    )
    missing_elements = serializers.ListField(
        child=serializers.CharField(), help_text="Elements of the composition without a spectrum."
    )
    complete = serializers.BooleanField(help_text="Whether every element of the composition had a spectrum.")
    composition = serializers.DictField(child=serializers.FloatField())
    composition_source = serializers.ChoiceField(choices=["formula", "structure", "spectra"])
    space_group = serializers.IntegerField(allow_null=True)
    space_group_source = serializers.ChoiceField(choices=["payload", "structure"], allow_null=True)
    contributions = serializers.DictField(
        child=serializers.FloatField(allow_null=True),
        help_text="Leave-one-element-out: calibrated P(topological) minus calibrated P without that element's "
        "spectrum.",
    )
    trust = serializers.DictField(
        child=ElementTrustSerializer(), help_text="Validation recall and support per element and class."
    )
    edge_offsets_ev = serializers.DictField(
        child=serializers.FloatField(),
        help_text="Per element: this spectrum's edge (E0) minus the median edge of the model's training spectra, in "
        "eV. Chemical shifts are a few eV; ~10 eV means another energy scale, which preprocessing version 2 aligns.",
    )
    off_scale_elements = serializers.ListField(
        child=serializers.CharField(),
        help_text="Models stored before preprocessing version 2 only: elements whose edge lies outside the training "
        "spectra's range and over 5 eV from their median (another code, preset or calibration); they abstain.",
    )
    warnings = serializers.ListField(child=serializers.CharField())
