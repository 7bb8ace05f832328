"""Predictions: batch classification of stored materials, and classifying one
submitted material with per-element contributions.
"""

from __future__ import annotations

import io
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from materials.learning.arrays import MaterialRecords, SpectraArrays, load_records, load_spectra_arrays
from materials.learning.artifacts import ModelBundle, read_bundle
from materials.learning.decisions import check_inputs, decide_one, decision_rule_for
from materials.learning.training import SPECTRAL_KINDS, transform_records
from materials.models import TOPOLOGICAL, TRIVIAL, ElementMetric, Material, ModelVersion, Prediction
from mlcore.models import MODEL_KINDS

logger = logging.getLogger(__name__)

CHUNK_SIZE = 10_000
#: Model kinds that read element fractions (parsed from formulas): the network, or its prior.
COMPOSITION_KINDS = frozenset(name for name, kind in MODEL_KINDS.items() if kind.uses_composition or kind.uses_prior)
#: Kinds that can answer for a material with spectra of only some of its elements (they read the
#: composition too), best first: those with the catalogue prior before the others.
PARTIAL_SPECTRA_KINDS = tuple(
    sorted(
        (name for name, kind in MODEL_KINDS.items() if kind.uses_spectra and kind.uses_composition),
        key=lambda name: not MODEL_KINDS[name].uses_prior,
    )
)


@lru_cache(maxsize=4)
def _cached_bundle(name: str, sha256: str) -> ModelBundle:
    return read_bundle(name, sha256)


def load_bundle(version: ModelVersion) -> ModelBundle:
    """The version's model and preprocessor, cached per artifact checksum."""
    if not version.artifact:
        raise ValueError(f"model {version.pk} has no artifact (status {version.status})")
    return _cached_bundle(version.artifact.name, version.artifact_sha256)


def predict_records(version: ModelVersion, records: MaterialRecords) -> np.ndarray:
    """P(topological) for each material in ``records``."""
    if len(records) == 0:
        return np.zeros(0)
    bundle = load_bundle(version)
    return np.asarray(bundle.model.predict_proba(transform_records(bundle.preprocessor, records)), dtype=np.float64)


def classifiable_materials(version: ModelVersion):
    """Materials this model can classify: complete spectra for spectral models,
    any material with a space group for the type-only baseline."""
    materials = Material.objects.exclude(space_group_number=None)
    if version.kind in SPECTRAL_KINDS:
        materials = materials.filter(has_spectra=True)
    return materials


def unpredicted_ids(version: ModelVersion) -> list[int]:
    done = Prediction.objects.filter(model_version=version).values("material_id")
    return list(classifiable_materials(version).exclude(pk__in=done).order_by("id").values_list("id", flat=True))


def classify_ids(version: ModelVersion, material_ids: list[int], timings: dict[str, float] | None = None) -> int:
    """Predict and store the given materials; returns how many rows were written.

    Spectral models read the spectra straight into arrays and resample them in one
    vectorized pass per element (``load_spectra_arrays`` → ``transform_arrays``): the
    same inputs, hence the same probabilities, as ``load_records`` → ``transform``,
    an order of magnitude faster at screening scale. Anything the array path does not
    take (see ``load_spectra_arrays``) goes through the record path.

    ``timings``, if given, accumulates wall seconds per stage: ``read``,
    ``preprocess``, ``infer`` and ``write``.
    """
    if not material_ids:
        return 0
    clock = _StageClock(timings)
    if version.kind in SPECTRAL_KINDS:
        with clock("read"):
            bundle = load_bundle(version)
            arrays = None
            if bundle.preprocessor is not None:
                arrays = load_spectra_arrays(material_ids, with_compositions=version.kind in COMPOSITION_KINDS)
        if arrays is not None:
            with clock("preprocess"):
                inputs = transform_arrays(bundle.preprocessor, arrays)
            with clock("infer"):
                probabilities = np.asarray(bundle.model.predict_proba(inputs), dtype=np.float64)
            with clock("write"):
                return write_predictions(version, arrays.material_ids, probabilities)
    with clock("read"):
        records = load_records(material_ids, with_spectra=version.kind in SPECTRAL_KINDS)
    with clock("preprocess"):
        bundle = load_bundle(version)
        inputs = transform_records(bundle.preprocessor, records)
    with clock("infer"):
        probabilities = np.asarray(bundle.model.predict_proba(inputs), dtype=np.float64)
    with clock("write"):
        return write_predictions(version, records.material_ids, probabilities)


def transform_arrays(preprocessor, arrays: SpectraArrays):
    """Model inputs of ``arrays`` (the array twin of ``training.transform_records``)."""
    return preprocessor.transform_arrays(
        arrays.material_index,
        arrays.element_index,
        arrays.energies_ev,
        arrays.mu,
        arrays.space_groups,
        arrays.compositions,
    )


class _StageClock:
    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings

    @contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.timings is not None:
                self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - started


def write_predictions(version: ModelVersion, material_ids: np.ndarray, probabilities: np.ndarray) -> int:
    """Store predictions in bulk; an existing (material, model) prediction is kept.

    On PostgreSQL the rows go through COPY into a temporary table and one
    ``INSERT … ON CONFLICT DO NOTHING``; elsewhere through ``bulk_create``. Either
    way concurrent workers writing the same materials cannot create duplicates: the
    unique constraint on (material, model_version) decides.
    """
    classes = np.where(probabilities >= version.threshold, TOPOLOGICAL, TRIVIAL)
    now = timezone.now()
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE prediction_load (material_id bigint, probability double precision, "
                "predicted_class varchar(16)) ON COMMIT DROP"
            )
            buffer = io.StringIO()
            for pk, p, c in zip(material_ids.tolist(), probabilities.tolist(), classes.tolist(), strict=True):
                buffer.write(f"{pk}\t{p!r}\t{c}\n")
            with cursor.cursor.copy("COPY prediction_load FROM STDIN") as copy:
                copy.write(buffer.getvalue())
            cursor.execute(
                f"INSERT INTO {Prediction._meta.db_table} (material_id, model_version_id, probability, "
                "predicted_class, created) SELECT material_id, %s, probability, predicted_class, %s "
                "FROM prediction_load ON CONFLICT (material_id, model_version_id) DO NOTHING",
                [version.pk, now],
            )
            written = cursor.rowcount
            # Dropped now, not only at commit: a caller's transaction may write again.
            cursor.execute("DROP TABLE prediction_load")
            return written
    rows = [
        Prediction(material_id=pk, model_version=version, probability=p, predicted_class=c, created=now)
        for pk, p, c in zip(material_ids.tolist(), probabilities.tolist(), classes.tolist(), strict=True)
    ]
    before = Prediction.objects.filter(model_version=version).count()
    Prediction.objects.bulk_create(rows, batch_size=5000, ignore_conflicts=True)
    return Prediction.objects.filter(model_version=version).count() - before


def chunked(values: list[int], size: int = CHUNK_SIZE) -> list[list[int]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


# --- One submitted material -------------------------------------------------------


@dataclass
class Classification:
    """One submitted material's answer. ``probability`` is calibrated (the decision rule of
    the answering model); ``raw_probability`` is the model's own output; ``decision`` is
    topological, trivial or abstain, with ``reasons`` ({code, text}) whenever it abstains."""

    probability: float
    predicted_class: str
    threshold: float
    model_version: int
    elements: list[str]
    missing_elements: list[str] = field(default_factory=list)
    contributions: dict[str, float] = field(default_factory=dict)
    trust: dict[str, dict] = field(default_factory=dict)
    edge_offsets_ev: dict[str, float] = field(default_factory=dict)
    off_scale: dict[str, str] = field(default_factory=dict)
    raw_probability: float = 0.0
    decision: str = ""
    reasons: list[dict] = field(default_factory=list)
    calibrated: bool = False
    band: dict = field(default_factory=dict)
    model_kind: str = ""
    answered_by: str = ""
    preprocessing_version: int | None = None


def element_trust(version: ModelVersion, elements) -> dict[str, dict]:
    """Validation recall and support of each element, for both classes."""
    trust: dict[str, dict] = {element: {} for element in elements}
    metrics = ElementMetric.objects.filter(model_version=version, subset="validation", element__in=list(elements))
    for metric in metrics:
        trust[metric.element][metric.target_class] = {"recall": metric.recall, "support": metric.support}
    return trust


def answering_model(version: ModelVersion, present, expected) -> tuple[ModelVersion, str]:
    """The model that answers for a material with spectra of ``present`` elements out of the
    formula's ``expected``: the given (production) model, unless the spectra are partial and it
    cannot use the composition for the rest; then the newest ready model of a kind that can
    (stacked prior + spectra first, then CNN-sg + composition), if there is one."""
    registered = MODEL_KINDS[version.kind]
    partial = bool(set(expected) - set(present))
    if not partial or not registered.uses_spectra or registered.uses_composition or registered.uses_prior:
        return version, "production model"
    for kind in PARTIAL_SPECTRA_KINDS:
        candidate = (
            ModelVersion.objects.filter(kind=kind, status=ModelVersion.State.READY)
            .exclude(artifact="")
            .order_by("-created", "-pk")
            .first()
        )
        if candidate is not None:
            return candidate, (
                f"{kind} model {candidate.pk}: spectra of {len(set(present))} of {len(set(expected))} elements, and "
                f"the production model ({version.kind}) cannot use the composition for the rest"
            )
    return version, "production model (no ready model can use the composition for the missing elements)"


def classify_material(version: ModelVersion, records: MaterialRecords, composition_elements=None) -> Classification:
    """Classify one material (``records`` of length 1), decide or abstain, and explain it.

    The answering model is ``version`` unless the spectra are partial and a model that can
    use the composition exists (:func:`answering_model`). Each element's contribution is the
    change in calibrated P(topological) when that element's spectrum is left out (positive:
    the spectrum pushes towards topological). Elements of the composition without a spectrum
    are reported as missing.
    """
    present = [spectrum.element for spectrum in records.spectra[0]]
    expected = set(composition_elements or records.compositions[0])
    version, answered_by = answering_model(version, present, expected)
    bundle = load_bundle(version)
    rule = decision_rule_for(bundle, version.threshold)
    raw = float(predict_records(version, records)[0])
    contributions = {}
    if version.kind in SPECTRAL_KINDS and len(present) > 1:
        calibrated = float(rule.calibrate(np.array([raw]))[0])
        for element in present:
            without = float(predict_records(version, records.drop_element(0, element))[0])
            contributions[element] = calibrated - float(rule.calibrate(np.array([without]))[0])
    preprocessor = bundle.preprocessor if version.kind in SPECTRAL_KINDS else None
    spectra = records.spectra[0]
    checked = check_inputs(version.kind, preprocessor, spectra, sorted(expected | set(present)))
    decided = decide_one(rule, raw, checked)
    known = [s for s in spectra if preprocessor is not None and s.element in preprocessor.windows_ev_]
    return Classification(
        probability=decided.probability,
        predicted_class=TOPOLOGICAL if raw >= version.threshold else TRIVIAL,
        threshold=version.threshold,
        model_version=version.pk,
        elements=present,
        missing_elements=sorted(expected - set(present)),
        contributions=contributions,
        trust=element_trust(version, present or expected),
        edge_offsets_ev=preprocessor.edge_offsets_ev(known) if preprocessor else {},
        off_scale=preprocessor.off_scale(known) if preprocessor else {},
        raw_probability=raw,
        decision=decided.decision,
        reasons=decided.reasons_json(),
        calibrated=rule.calibrator.method != "identity",
        band={"low": rule.band.low, "high": rule.band.high, "target_precision": rule.band.target_precision},
        model_kind=version.kind,
        answered_by=answered_by,
        preprocessing_version=getattr(preprocessor, "version", None),
    )
