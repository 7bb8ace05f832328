"""Serializers of POST /api/classify/: the request (JSON spectra, or uploads), strict point
checks, and the answer (calibrated probability, decision, reasons)."""

from __future__ import annotations

import math
import warnings

import numpy as np
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from materials.api.serializers import MAX_POINTS, MAX_SPECTRA, MAX_STRUCTURE_SITES, significant
from materials.models import BINARY_CLASSES
from mlcore.decision import DECISIONS, REASON_CODES
from mlcore.elements import ABSORBING_ELEMENTS, ELEMENTS
from mlcore.preprocess import MIN_POINTS, k_edge_region_ev, validate_spectrum

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
