"""Classify one submitted material: the one home of the answer ``POST /api/classify/`` and
``manage.py classify`` give (the API serialises it, the command prints it or, with ``--json``,
writes the API's body).

Inputs are checked by :mod:`materials.learning.classify_inputs`
(a :class:`~materials.learning.classify_inputs.Submission`);
:func:`classify_submission` adds what depends on the model (space group and composition for the
kinds that read them, each spectrum's coverage of the model's window), runs
:func:`materials.learning.inference.classify_material` (the answering model, decide or abstain,
contributions) and returns the answer as plain JSON values: the calibrated probability, the raw
one, the decision and its reasons, the answering model, the elements seen and missing, trust,
edge offsets and warnings.
"""

from __future__ import annotations

import json

import numpy as np

from materials.learning.classify_inputs import ClassifyInputError, Submission
from materials.models import ModelVersion
from mlcore.models import MODEL_KINDS


class ModelUnavailable(RuntimeError):
    """No production model, or its artifact cannot be loaded (the API answers 503)."""


def classify_submission(submission: Submission, version: ModelVersion | None = None) -> dict:
    """The answer for ``submission`` from ``version`` (the production model by default).

    Raises
    ------
    ModelUnavailable
        No production model, or the model cannot be loaded.
    ClassifyInputError
        Input this model cannot take (no space group for a model that reads it, a spectrum
        that does not cover the model's window...).
    """
    from materials.learning.inference import classify_material, load_bundle

    if version is None:
        version = production_model()
    try:
        bundle = load_bundle(version)
    except (OSError, ValueError) as error:
        raise ModelUnavailable(f"The production model {version.pk} cannot be loaded: {error}") from None
    check_model_inputs(version, bundle, submission)
    try:
        result = classify_material(version, records_for(submission), composition_elements=list(submission.composition))
    except ValueError as error:
        raise ClassifyInputError({"spectra": [str(error)]}) from None
    registered = MODEL_KINDS[version.kind]
    notes = list(submission.warnings)
    if result.missing_elements:
        notes.append(
            f"no spectrum for {', '.join(result.missing_elements)}: classified with "
            f"{', '.join(result.elements) or 'no spectra'} only"
        )
    if not registered.uses_spectra:
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
        "composition": submission.composition,
        "composition_source": submission.composition_source,
        "space_group": submission.space_group,
        "space_group_source": submission.space_group_source,
        "contributions": result.contributions,
        "trust": result.trust,
        "edge_offsets_ev": result.edge_offsets_ev,
        "off_scale_elements": sorted(result.off_scale),
        "warnings": notes,
    }
    return plain_json(answer)


def production_model() -> ModelVersion:
    version = ModelVersion.objects.production()
    if version is None:
        raise ModelUnavailable("No production model: train a model and promote it first (manage.py train --promote).")
    return version


def check_model_inputs(version: ModelVersion, bundle, submission: Submission) -> None:
    """What depends on the model: symmetry, composition, and each element's energy window."""
    registered = MODEL_KINDS[version.kind]
    errors: dict = {}
    if registered.uses_symmetry and submission.space_group is None:
        errors["space_group"] = [
            f"the production model ({version.kind}, v{version.pk}) uses the space group: "
            "give space_group or a structure"
        ]
    if (registered.uses_composition or registered.uses_prior) and submission.composition_source == "spectra":
        errors["formula"] = [
            f"the production model ({version.kind}, v{version.pk}) uses the composition: give formula or a structure"
        ]
    preprocessor = bundle.preprocessor
    if preprocessor is not None:
        spectra_errors = {}
        for element, (energies, mu) in submission.spectra.items():
            try:
                problem = preprocessor.coverage_problem(element, energies, mu)
            except ValueError as error:  # cannot be normalised (version 2): no edge, too short
                problem = str(error).removeprefix("material 0: ")
            if problem:
                spectra_errors[element] = {"energies_ev": [problem]}
        if spectra_errors:
            errors["spectra"] = spectra_errors
    if errors:
        raise ClassifyInputError(errors)


def records_for(submission: Submission):
    """The submission as one row of :class:`materials.learning.arrays.MaterialRecords` (unlabelled)."""
    from materials.learning.arrays import MaterialRecords
    from mlcore.data import RawSpectrum

    spectra = [
        RawSpectrum(element=element, energies_ev=energies, mu=mu)
        for element, (energies, mu) in sorted(submission.spectra.items())
    ]
    return MaterialRecords(
        material_ids=np.array([0], dtype=np.int64),
        spectra=[spectra],
        # Models without symmetry ignore the number; 1 keeps the arrays valid.
        space_groups=np.array([submission.space_group or 1], dtype=np.int64),
        compositions=[submission.composition],
        labels=np.array([-1], dtype=np.int64),
    )


def plain_json(value):
    """``value`` as JSON holds it: NumPy numbers as Python's, NaN and infinities as null, tuples
    as lists; so the API's body and the command's ``--json`` are the same document."""
    text = json.dumps(value, default=lambda item: item.item() if isinstance(item, np.generic) else item.tolist())
    return json.loads(text, parse_constant=lambda _constant: None)
