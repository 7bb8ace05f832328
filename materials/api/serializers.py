"""Serializers: explicit fields everywhere; the hot list (predictions) has a fast path."""

from __future__ import annotations

import math
import warnings

import numpy as np
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from materials.decisions import calibrate_one, rule_for_version_id
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
from mlcore.elements import ABSORBING_ELEMENTS, ELEMENTS
from mlcore.preprocess import MIN_POINTS, k_edge_region_ev, validate_spectrum

MAX_POINTS = 20_000
MAX_SPECTRA = 20
MAX_STRUCTURE_SITES = 500
LABEL_OUT = {"topological": "topological", "trivial": "trivial", "": "unlabelled"}
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


class PredictionSerializer(serializers.Serializer):
    """One prediction with the facts of its material that clients filter on.

    Reads ``.values(*PREDICTION_VALUES)`` rows and builds each dict directly: the
    predictions list is the API's hottest path (see bench/bench_api.py).
    """

    id = serializers.IntegerField()
    material = serializers.IntegerField(help_text="Material id.")
    model_version = serializers.IntegerField()
    probability = serializers.FloatField(help_text="P(topological) as the model gave it (raw).")
    calibrated_probability = serializers.FloatField(
        allow_null=True, help_text="P(topological) mapped by the model's calibrator (fitted on its validation split)."
    )
    decision = serializers.ChoiceField(
        choices=list(DECISIONS),
        help_text="The model's abstain band applied to the calibrated probability (the inputs were checked when "
        "the prediction was stored): topological, trivial or abstain.",
    )
    predicted_class = serializers.ChoiceField(choices=BINARY_CLASSES)
    reduced_formula = serializers.CharField()
    formula = serializers.CharField()
    mp_id = serializers.CharField(allow_null=True)
    space_group = serializers.IntegerField(allow_null=True)
    elements = serializers.ListField(child=serializers.CharField())
    label = serializers.ChoiceField(choices=LABEL_OUT_CHOICES, help_text="The material's training label.")

    def to_representation(self, row):
        probability = row["probability"]
        finite = math.isfinite(probability)
        rules = self.context.setdefault("_decision_rules", {})
        rule = rules.get(row["model_version_id"])
        if rule is None:
            rule = rules[row["model_version_id"]] = rule_for_version_id(row["model_version_id"])
        calibrated = calibrate_one(rule, probability) if finite else None
        return {
            "id": row["id"],
            "material": row["material_id"],
            "model_version": row["model_version_id"],
            "probability": probability if finite else None,
            "calibrated_probability": calibrated,
            "decision": rule.band.decide(calibrated) if finite else "abstain",
            "predicted_class": row["predicted_class"],
            "reduced_formula": row["material__reduced_formula"],
            "formula": row["material__formula"],
            "mp_id": row["material__mp_id"],
            "space_group": row["material__space_group_number"],
            "elements": elements_from_key(row["material__elements_key"]),
            "label": LABEL_OUT.get(row["material__label"], "unlabelled"),
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


# --- Classifying a submitted material ------------------------------------------------------------

POINTS_SCHEMA = {
    "type": "array",
    "items": {"type": "number"},
    "minItems": MIN_POINTS,
    "maxItems": MAX_POINTS,
}


@extend_schema_field(POINTS_SCHEMA)
class PointsField(serializers.Field):
    """A list of numbers, read straight into a float64 array (no per-item field objects).

    NaN and infinities (which lenient JSON and CSV uploads can carry) are reported with
    their index by the spectrum checks, not here.
    """

    default_error_messages = {
        "not_a_list": "Expected a list of numbers but got {kind}.",
        "not_a_number": "Every value must be a number; item {index} is {value!r}.",
        "too_long": f"At most {MAX_POINTS} points are accepted; got {{count}}.",
    }

    def to_internal_value(self, data):
        if isinstance(data, np.ndarray):
            return data.astype(np.float64)
        if not isinstance(data, (list, tuple)):
            self.fail("not_a_list", kind=type(data).__name__)
        if len(data) > MAX_POINTS:
            self.fail("too_long", count=len(data))
        for index, value in enumerate(data):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail("not_a_number", index=index, value=value if not isinstance(value, str) else value[:40])
        try:
            return np.array(data, dtype=np.float64)
        except OverflowError:
            # An integer beyond float range is not a finite number either.
            return np.array([float(v) if abs(v) < 1e308 else math.inf for v in data], dtype=np.float64)

    def to_representation(self, value):
        return significant(value)


class SpectrumInputSerializer(serializers.Serializer):
    energies_ev = PointsField(help_text="Photon energies in eV, strictly increasing, at least 10 points.")
    mu = PointsField(help_text="Absorption at each energy (any units; standardized per element).")


def check_spectrum_points(element: str, energies: np.ndarray, mu: np.ndarray, sort: bool) -> tuple:
    """The checks that can be made on one spectrum alone, with field-level messages.

    Returns ``(energies, mu, errors)``; ``errors`` maps field → messages (empty when valid).
    """
    errors: dict[str, list[str]] = {}
    if energies.size != mu.size:
        errors["mu"] = [f"{mu.size} mu values but {energies.size} energies; give one mu value per energy"]
        return energies, mu, errors
    if energies.size < MIN_POINTS:
        errors["energies_ev"] = [f"{energies.size} points; at least {MIN_POINTS} are needed"]
        return energies, mu, errors
    for name, values in (("energies_ev", energies), ("mu", mu)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            index = int(bad[0])
            kind = "NaN" if np.isnan(values[index]) else "infinite"
            errors[name] = [
                f"{name}[{index}] is {kind} ({bad.size} non-finite value(s) in all); "
                "every value must be a finite number"
            ]
    if errors:
        return energies, mu, errors
    if sort:
        order = np.argsort(energies, kind="stable")
        energies, mu = energies[order], mu[order]
    steps = np.diff(energies)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        index = int(bad[0]) + 1
        what = "repeats" if steps[bad[0]] == 0 else "decreases"
        hint = "" if sort else " (set sort_energies to sort digitised data first)"
        errors["energies_ev"] = [
            f"energies must be strictly increasing; energy {energies[index]:.6g} eV at index {index} {what}{hint}"
        ]
        return energies, mu, errors
    low, high = k_edge_region_ev(element)
    if energies[-1] < low or energies[0] > high:
        errors["energies_ev"] = [
            f"{element} energies {energies[0]:.1f}-{energies[-1]:.1f} eV are outside the {element} K-edge region "
            f"{low:.1f}-{high:.1f} eV"
        ]
        return energies, mu, errors
    try:
        energies, mu = validate_spectrum(element, energies, mu)
    except ValueError as error:  # anything mlcore checks that is not covered above
        errors["non_field_errors"] = [str(error)]
    return energies, mu, errors


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

    def validate_spectra(self, spectra):
        if not spectra:
            raise serializers.ValidationError("give at least one spectrum")
        if len(spectra) > MAX_SPECTRA:
            raise serializers.ValidationError(f"at most {MAX_SPECTRA} spectra per material")
        sort = bool(self.initial_data.get("sort_energies") in (True, "true", "True", "1", 1, "on"))
        errors, cleaned = {}, {}
        for element, spectrum in spectra.items():
            if element not in ABSORBING_ELEMENTS:
                known = "H or He (no K-edge XANES in range)" if element in ("H", "He") else "not an element symbol"
                errors[element] = [f"unknown absorbing element {element[:10]!r} ({known}); use Li to Pu"]
                continue
            energies, mu, problems = check_spectrum_points(element, spectrum["energies_ev"], spectrum["mu"], sort)
            if problems:
                errors[element] = problems
            else:
                cleaned[element] = (energies, mu)
        if errors:
            raise serializers.ValidationError(errors)
        return cleaned

    def validate_formula(self, formula):
        if not formula:
            return None
        from materials.chemistry import parse_formula

        try:
            parsed = parse_formula(formula)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None
        if any(element not in ELEMENTS for element in parsed.elements):
            raise serializers.ValidationError(f"{formula!r} has elements beyond Pu")
        return parsed

    def validate_structure(self, value):
        if value in (None, "", {}):
            return None
        if not isinstance(value, dict):
            raise serializers.ValidationError("expected a pymatgen Structure.as_dict() object")
        sites = value.get("sites")
        if not isinstance(sites, list) or not sites:
            raise serializers.ValidationError("a pymatgen Structure dict needs a non-empty 'sites' list")
        if len(sites) > MAX_STRUCTURE_SITES:
            raise serializers.ValidationError(f"{len(sites)} sites; at most {MAX_STRUCTURE_SITES} are accepted")
        from pymatgen.core import Structure

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                structure = Structure.from_dict(value)
            except Exception as error:  # pymatgen raises many types for malformed dicts
                raise serializers.ValidationError(f"not a pymatgen Structure: {str(error)[:200]}") from None
        try:
            structure.remove_oxidation_states()  # species such as Co3+ count as their element
        except ValueError:
            pass  # a dummy species (not an element): refused just below
        unknown = [str(e) for e in structure.composition.elements if str(e) not in ELEMENTS]
        if unknown:
            raise serializers.ValidationError(f"elements beyond Pu: {', '.join(unknown)}")
        return structure

    def validate(self, attrs):
        structure, parsed = attrs.get("structure"), attrs.get("formula")
        warnings_out: list[str] = []
        composition, composition_source = None, "spectra"
        if parsed is not None:
            composition, composition_source = dict(parsed.fractions), "formula"
        if structure is not None:
            from_structure = {str(e): float(x) for e, x in structure.composition.fractional_composition.items()}
            if composition is not None and set(composition) != set(from_structure):
                raise serializers.ValidationError(
                    {"formula": [f"elements of the formula and of the structure differ ({parsed.formula})"]}
                )
            if composition is None:
                composition, composition_source = from_structure, "structure"
        space_group, space_group_source = attrs.get("space_group"), "payload"
        if structure is not None:
            found = structure_space_group(structure)
            if space_group is None:
                space_group, space_group_source = found, "structure"
            elif found is not None and found != space_group:
                warnings_out.append(f"space group {space_group} given; the structure's symmetry is {found}")
        if space_group is None:
            space_group_source = None
        spectra = attrs["spectra"]
        if composition is not None:
            outside = sorted(set(spectra) - set(composition))
            if outside:
                raise serializers.ValidationError(
                    {"spectra": {e: [f"{e} is not in the material's composition"] for e in outside}}
                )
        else:
            composition = {element: 1.0 / len(spectra) for element in spectra}
        attrs.update(
            composition=composition,
            composition_source=composition_source,
            space_group=space_group,
            space_group_source=space_group_source,
            warnings=warnings_out,
        )
        return attrs


def structure_space_group(structure) -> int | None:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return int(SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number())
        except Exception:  # spglib fails on some inputs (disorder, overlapping sites)
            return None


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


class ReasonSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=list(REASON_CODES),
        help_text="unseen_element: a spectrum of an element the model never saw in training; off_distribution: a "
        "spectrum that, aligned and normalised, lies outside the training spectra (models stored before "
        "preprocessing version 2: an edge off the training energy scale); missing_spectra: most of the formula's "
        "elements lack a spectrum and the model cannot use the composition; uncertain: the calibrated probability "
        "lies inside the abstain band chosen on validation.",
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
    reasons = ReasonSerializer(many=True, help_text="Why the answer is abstain; empty when it is decided.")
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
