"""POST /api/classify/: one submitted material (JSON spectra or uploaded CSV/XDI files, with a
formula, space group or structure) classified by the production model, or by a model that can
use the composition when only some elements have spectra. ``ClassifyView.answer`` is the one
home of the answer; ``manage.py classify`` calls it too.
"""

from __future__ import annotations

import numpy as np
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from materials.api import classify_serializers as s
from materials.api.exceptions import ServiceUnavailable
from materials.api.parsers import LimitedJSONParser, LimitedMultiPartParser, SpectrumFileError, read_spectrum_file
from materials.api.serializers import finite_or_none
from materials.api.throttles import DEFAULT_THROTTLES, ClassifyThrottle
from materials.api.views import APIMixin
from materials.models import ModelVersion
from mlcore.models import MODEL_KINDS

# Which inputs each model kind reads besides spectra: the registry's own flags.
SYMMETRY_KINDS = frozenset(name for name, kind in MODEL_KINDS.items() if kind.uses_symmetry)
COMPOSITION_KINDS = frozenset(name for name, kind in MODEL_KINDS.items() if kind.uses_composition or kind.uses_prior)
SPECTRA_FREE_KINDS = frozenset(name for name, kind in MODEL_KINDS.items() if not kind.uses_spectra)


@extend_schema(
    summary="Classify one material from its spectra",
    tags=["classify"],
    request={
        "application/json": s.ClassifyRequestSerializer,
        "multipart/form-data": s.ClassifyUploadSerializer,
    },
    responses={200: s.ClassificationSerializer},
    description="Spectra as JSON, or measured spectra as CSV/XDI files (multipart). Classified by the production "
    "model; nothing is stored. Missing edges are allowed: the answer lists them in ``missing_elements``. "
    "Validation is strict: NaN or infinite values, unsorted or duplicate energies, fewer than 10 points, "
    "energies outside the element's K-edge window, unknown elements and bodies over the size limit are "
    "refused with field-level messages.",
)
class ClassifyView(APIMixin, APIView):
    parser_classes = [LimitedJSONParser, LimitedMultiPartParser]
    throttle_classes = [*DEFAULT_THROTTLES, ClassifyThrottle]
    extra_error_codes = ("503",)

    def post(self, request, *args, **kwargs):
        version = ModelVersion.objects.production()
        if version is None:
            raise ServiceUnavailable("No production model: train a model and promote it first.")
        if request.content_type.startswith("multipart/"):
            payload = self.payload_from_upload(request)
        elif isinstance(request.data, dict):
            payload = request.data
        else:
            raise ValidationError({"non_field_errors": ["expected a JSON object with a 'spectra' field"]})
        body = s.ClassifyRequestSerializer(data=payload)
        body.is_valid(raise_exception=True)
        return Response(finite_or_none(self.answer(version, body.validated_data)))

    def answer(self, version, data) -> dict:
        """The answer for validated request ``data`` with production model ``version``: the one
        home of what ``POST /api/classify/`` and ``manage.py classify`` return. Raises DRF's
        ``ValidationError`` / ``ServiceUnavailable`` for input the model cannot take."""
        from materials.inference import classify_material, load_bundle

        try:
            bundle = load_bundle(version)
        except (OSError, ValueError) as error:
            raise ServiceUnavailable(f"The production model {version.pk} cannot be loaded: {error}") from None
        self.check_model_inputs(version, bundle, data)
        records = records_for(data)
        try:
            result = classify_material(version, records, composition_elements=list(data["composition"]))
        except ValueError as error:
            raise ValidationError({"spectra": [str(error)]}) from None
        notes = list(data["warnings"])
        if result.missing_elements:
            notes.append(
                f"no spectrum for {', '.join(result.missing_elements)}: classified with "
                f"{', '.join(result.elements) or 'no spectra'} only"
            )
        if version.kind in SPECTRA_FREE_KINDS:
            notes.append(f"model {version.pk} ({version.kind}) reads composition and space group only")
        if result.model_version != version.pk:
            notes.append(f"answered by {result.answered_by}")
        answer = {
            "probability": result.probability,
            "raw_probability": result.raw_probability,
            "calibrated": result.calibrated,
            "decision": result.decision,
            "reasons": result.reasons,
            "band": result.band,
            "predicted_class": result.predicted_class,
            "threshold": result.threshold,
            "model_version": result.model_version,
            "model_kind": result.model_kind,
            "answered_by": result.answered_by,
            "preprocessing_version": result.preprocessing_version,
            "elements": result.elements,
            "missing_elements": result.missing_elements,
            "complete": not result.missing_elements,
            "composition": data["composition"],
            "composition_source": data["composition_source"],
            "space_group": data["space_group"],
            "space_group_source": data["space_group_source"],
            "contributions": result.contributions,
            "trust": result.trust,
            "edge_offsets_ev": result.edge_offsets_ev,
            "off_scale_elements": sorted(result.off_scale),
            "warnings": notes,
        }
        return answer

    def check_model_inputs(self, version, bundle, data) -> None:
        """What depends on the model: symmetry, composition, and each element's energy window."""
        errors = {}
        if version.kind in SYMMETRY_KINDS and data["space_group"] is None:
            errors["space_group"] = [
                f"the production model ({version.kind}, v{version.pk}) uses the space group: "
                "give space_group or a structure"
            ]
        if version.kind in COMPOSITION_KINDS and data["composition_source"] == "spectra":
            errors["formula"] = [
                f"the production model ({version.kind}, v{version.pk}) uses the composition: "
                "give formula or a structure"
            ]
        preprocessor = bundle.preprocessor
        if preprocessor is not None:
            spectra_errors = {}
            for element, (energies, mu) in data["spectra"].items():
                try:
                    problem = preprocessor.coverage_problem(element, energies, mu)
                except ValueError as error:  # cannot be normalised (version 2): no edge, too short
                    problem = str(error).removeprefix("material 0: ")
                if problem:
                    spectra_errors[element] = {"energies_ev": [problem]}
            if spectra_errors:
                errors["spectra"] = spectra_errors
        if errors:
            raise ValidationError(errors)

    def payload_from_upload(self, request) -> dict:
        form = s.ClassifyUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        files = request.FILES.getlist("file")
        if len(files) > s.MAX_SPECTRA:
            raise ValidationError({"file": [f"at most {s.MAX_SPECTRA} files"]})
        element = form.validated_data.get("element") or None
        spectra: dict[str, dict] = {}
        for upload in files:
            try:
                found = read_spectrum_file(upload.name or "upload", upload.read(), element)
            except SpectrumFileError as error:
                raise ValidationError({"file": [f"{upload.name}: {error}"]}) from None
            for symbol, (energies, mu) in found.items():
                if symbol in spectra:
                    raise ValidationError({"file": [f"{upload.name}: a second {symbol} spectrum"]})
                spectra[symbol] = {"energies_ev": energies, "mu": mu}
        payload = {
            "spectra": spectra,
            "space_group": form.validated_data.get("space_group"),
            "formula": form.validated_data.get("formula", ""),
            "sort_energies": form.validated_data.get("sort_energies", False),
        }
        structure_file = form.validated_data.get("structure")
        if structure_file is not None:
            payload["structure"] = structure_from_file(structure_file)
        return payload


def structure_from_file(upload) -> dict:
    import warnings

    from pymatgen.core import Structure
    from pymatgen.io.cif import CifParser

    raw = upload.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if (upload.name or "").lower().endswith((".poscar", ".vasp")) or "POSCAR" in (upload.name or ""):
                structure = Structure.from_str(text, fmt="poscar")
            else:
                structures = CifParser.from_str(text).parse_structures(primitive=True)
                if not structures:
                    raise ValueError("no structure in the CIF")
                structure = structures[0]
        except Exception as error:  # pymatgen raises many types for malformed files
            raise ValidationError({"structure": [f"cannot read {upload.name}: {str(error)[:200]}"]}) from None
    try:
        structure.remove_oxidation_states()  # ICSD CIFs name species (Co3+); composition needs the elements
    except ValueError:
        pass  # a dummy species (not an element): the serializer names it
    if not structure.is_ordered:
        raise ValidationError(
            {
                "structure": [
                    f"{upload.name}: partial occupancy (disordered structure); give an ordered structure, "
                    "or formula and space_group instead"
                ]
            }
        )
    return structure.as_dict()


def records_for(data):
    from materials.arrays import MaterialRecords
    from mlcore.data import RawSpectrum

    spectra = [
        RawSpectrum(element=element, energies_ev=energies, mu=mu)
        for element, (energies, mu) in sorted(data["spectra"].items())
    ]
    return MaterialRecords(
        material_ids=np.array([0], dtype=np.int64),
        spectra=[spectra],
        # Models without symmetry ignore the number; 1 keeps the arrays valid.
        space_groups=np.array([data["space_group"] or 1], dtype=np.int64),
        compositions=[data["composition"]],
        labels=np.array([-1], dtype=np.int64),
    )
