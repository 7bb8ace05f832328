"""Training workflow: split → preprocess → fit → evaluate → store, with provenance.

``request_training`` creates a ModelVersion and its TrainingRun and enqueues the work
on the ``train`` queue when the transaction commits; ``train_model_version`` does
the work (on a worker, or in-process when no broker is configured); ``promote``
makes one model the production model, atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

import mlcore
from materials.learning.arrays import MaterialRecords, load_records
from materials.learning.artifacts import ModelBundle, read_bundle, write_bundle
from materials.learning.decisions import decision_metrics
from materials.models import (
    Dataset,
    ElementMetric,
    Material,
    ModelVersion,
    SplitAssignment,
    TrainingRun,
)
from mlcore import evaluate
from mlcore.decision import fit_decision_rule
from mlcore.elements import ELEMENTS
from mlcore.models import MODEL_KINDS, make_model
from mlcore.split import element_balanced_split
from mlcore.training import FittedModel, fit_model, hyperparameters_for, model_inputs

logger = logging.getLogger(__name__)

#: The split the app trains on unless told otherwise (seed 0 of the benchmark's splits).
DEFAULT_SPLIT = "bundled-element-balanced-v2-seed0"
SPECTRAL_KINDS = frozenset(name for name, kind in MODEL_KINDS.items() if kind.uses_spectra)
KNOWN_ELEMENTS = frozenset(ELEMENTS)
LIBRARIES = ("numpy", "scipy", "scikit-learn", "tensorflow-cpu", "tensorflow", "keras", "pymatgen", "Django")


# --- Splits -------------------------------------------------------------------------


def dataset_hash(records: MaterialRecords) -> str:
    """sha256 over the labels and spectra a model is trained on."""
    digest = hashlib.sha256()
    for pk, label, spectra in zip(records.material_ids, records.labels, records.spectra, strict=True):
        digest.update(f"{pk}:{label}".encode())
        for spectrum in spectra:
            digest.update(spectrum.element.encode())
            digest.update(np.asarray(spectrum.energies_ev, dtype="<f4").tobytes())
            digest.update(np.asarray(spectrum.mu, dtype="<f4").tobytes())
    return digest.hexdigest()


def usable_materials():
    """Materials a spectral model can learn from: labelled, with every element's spectrum."""
    return Material.objects.with_spectra().labelled().order_by("id")


@transaction.atomic
def get_or_create_split(name: str = DEFAULT_SPLIT, seed: int | None = None) -> Dataset:
    """The named split, created with the paper's element-balanced procedure if new.

    A stored split is reused as it is: its assignments are data, so a model trained
    later on "the same split" sees exactly the same test materials.
    """
    existing = Dataset.objects.filter(name=name).first()
    if existing is not None:
        return existing
    if seed is None:  # "...-seed3" names its seed
        seed = int(name.rsplit("seed", 1)[1]) if name.rsplit("seed", 1)[-1].isdigit() else 0
    records = load_records(queryset=usable_materials(), with_spectra=False)
    if len(records) < 10 or len(set(records.labels.tolist())) < 2:
        raise ValueError(
            f"only {len(records)} labelled materials with complete spectra; load data first (manage.py load_bundled)"
        )
    result = element_balanced_split(
        records.element_sets(), records.labels, random_state=seed, keys=records.material_ids.tolist()
    )
    pairs = list(zip(records.material_ids.tolist(), [str(s) for s in result.assignment], strict=True))
    counts = {subset: int(np.sum(result.assignment == subset)) for subset in ("train", "validation", "test")}
    dataset = Dataset.objects.create(
        name=name,
        method="element_balanced",
        seed=seed,
        parameters={"test_fraction": 0.2, "validation_fraction": 0.1},
        content_hash=result.content_hash,
        counts=counts,
        balance=result.balance,
    )
    SplitAssignment.objects.bulk_create(
        [SplitAssignment(dataset=dataset, material_id=pk, subset=subset) for pk, subset in pairs], batch_size=5000
    )
    return dataset


def split_ids(dataset: Dataset) -> dict[str, list[int]]:
    subsets: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for pk, subset in dataset.assignments.order_by("material_id").values_list("material_id", "subset"):
        subsets[subset].append(pk)
    return subsets


# --- Requesting, training, promoting --------------------------------------------------


def request_training(
    kind: str, hyperparameters: dict | None = None, dataset: Dataset | None = None, user=None, name: str = ""
) -> TrainingRun:
    """Create a model version and its training run, and enqueue training on commit.

    Raises
    ------
    ValueError
        For an unknown model kind or invalid hyperparameters.
    """
    from materials import jobs

    if kind not in ModelVersion.Kind.values:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(ModelVersion.Kind.values)}")
    hyperparameters = hyperparameters_for(kind, hyperparameters)  # the run records the defaults it used
    make_model(kind, **hyperparameters)  # invalid names fail here, before anything is stored
    with transaction.atomic():
        dataset = dataset or get_or_create_split()
        version = ModelVersion.objects.create(
            kind=kind, name=name or kind, hyperparameters=hyperparameters, dataset=dataset
        )
        run = TrainingRun.objects.create(model_version=version, requested_by=user)
        jobs.enqueue_training(run)
    return run


@dataclass
class SplitRecords:
    """One split's materials as records (see :mod:`mlcore.training`)."""

    train: MaterialRecords
    validation: MaterialRecords
    test: MaterialRecords


def split_records(dataset: Dataset) -> SplitRecords:
    """The spectral models' training, validation and test materials of a split."""
    ids = split_ids(dataset)
    return SplitRecords(*(load_records(ids[subset]) for subset in ("train", "validation", "test")))


def catalogue_training_records(dataset: Dataset) -> MaterialRecords:
    """The catalogue prior's training set: every labelled material with a space group
    except those sharing a reduced formula with any validation or test material of the
    split (any polymorph of a held-out compound would leak its answer)."""
    ids = split_ids(dataset)
    held_out = set(ids["validation"]) | set(ids["test"])
    held_out_formulas = set(Material.objects.filter(pk__in=held_out).values_list("reduced_formula", flat=True))
    candidates = Material.objects.labelled().exclude(space_group_number=None).order_by("id")
    train_ids = [
        pk
        for pk, elements, formula in candidates.values_list("id", "elements", "reduced_formula")
        if pk not in held_out
        and formula not in held_out_formulas
        and set(elements) <= KNOWN_ELEMENTS  # the Arsenal lists Rf, outside the vocabulary
    ]
    return load_records(train_ids, with_spectra=False)


def catalogue_prior(dataset: Dataset, records: SplitRecords, progress_callback=None):
    """The split's catalogue prior: the newest ready type-only model of this split, or
    one fitted now (the same computation) when none is stored."""
    stored = (
        ModelVersion.objects.filter(dataset=dataset, kind=ModelVersion.Kind.TYPE_ONLY, status=ModelVersion.State.READY)
        .exclude(artifact="")
        .order_by("-pk")
        .first()
    )
    if stored is not None:
        return read_bundle(stored.artifact.name, stored.artifact_sha256).model
    train = catalogue_training_records(dataset)
    return fit_model("type-only", train, records.validation, progress_callback=progress_callback).model


def fit_for_split(kind: str, dataset: Dataset, hyperparameters: dict | None = None, progress_callback=None):
    """Fit one model of ``kind`` on a stored split, the one training path of the app.

    Returns the fitted model and the split's records.
    """
    records = split_records(dataset)
    prior = None
    if MODEL_KINDS[kind].uses_prior:
        prior = catalogue_prior(dataset, records)
    train = records.train if MODEL_KINDS[kind].uses_spectra else catalogue_training_records(dataset)
    fitted = fit_model(
        kind,
        train,
        records.validation,
        hyperparameters=hyperparameters,
        prior=prior,
        progress_callback=progress_callback,
    )
    return fitted, records


#: Training order of "every kind": the catalogue prior first, so the stacked model reads it.
EVERY_KIND = ("type-only", "cnn-sg", "cnn", "cnn-sg-composition", "stacked", "svm-sg", "kmeans")


def validation_score(version: ModelVersion) -> tuple[float, float]:
    """How production is chosen: validation ROC AUC, then validation topological F1
    (never a test figure)."""
    validation = (version.metrics or {}).get("validation", {})
    return (validation.get("roc_auc") or 0.0, validation.get("topological_f1") or 0.0)


def best_by_validation(versions) -> ModelVersion:
    """The ready model with the best :func:`validation_score`."""
    ready = [v for v in versions if v.status == ModelVersion.State.READY]
    if not ready:
        raise ValueError("no trained model to choose from")
    return max(ready, key=lambda version: (validation_score(version), -version.pk))


def transform_records(preprocessor, records: MaterialRecords):
    """Model inputs of ``records`` (see :func:`mlcore.training.model_inputs`)."""
    return model_inputs(preprocessor, records)


def train_model_version(run_id: int) -> None:
    """Train the run's model version end to end and store everything it produced."""
    run = TrainingRun.objects.select_related("model_version__dataset").get(pk=run_id)
    version = run.model_version
    dataset = version.dataset or get_or_create_split()
    total_epochs = int(hyperparameters_for(version.kind, version.hyperparameters).get("epochs", 1))
    TrainingRun.objects.filter(pk=run.pk).update(total_epochs=total_epochs, history=[], epoch=0)

    def on_epoch(epoch: int, total: int, logs: dict) -> None:
        # Only numbers go in the history (k-means reports which element it fitted).
        entry = {"epoch": epoch, **{k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}}
        run.history.append(entry)
        scores = ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k in ("loss", "val_loss", "val_accuracy"))
        message = f"{version.kind}: step {epoch}/{total}" + (f": {scores}" if scores else "")
        logger.info(message)  # live on the console in-process; on the TrainingRun for pages
        TrainingRun.objects.filter(pk=run.pk).update(
            epoch=epoch,
            total_epochs=total,
            history=run.history,
            progress=min(epoch / max(total, 1), 0.99),
            progress_message=message,
        )

    fitted, records = fit_for_split(version.kind, dataset, version.hyperparameters, progress_callback=on_epoch)
    model = fitted.model
    p_validation = fitted.predict_proba(records.validation)
    p_test = fitted.predict_proba(records.test)
    threshold = float(evaluate.choose_threshold(records.validation.labels, p_validation))
    metrics = evaluation_metrics(fitted, records, p_validation, p_test, threshold)
    # Calibration and abstain band (materials.learning.decisions): fitted and chosen on validation only,
    # measured on test.
    rule = fit_decision_rule(records.validation.labels, p_validation, records.test.labels, p_test, threshold)
    metrics.update(decision_metrics(rule, fitted.preprocessor))
    relative, sha = write_bundle(
        f"models/model-{version.pk}-{timezone.now():%Y%m%d%H%M%S}.zip",
        ModelBundle(kind=version.kind, model=model, preprocessor=fitted.preprocessor, decision_rule=rule),
    )
    with transaction.atomic():
        version.artifact.name = relative
        version.artifact_sha256 = sha
        version.threshold = threshold
        version.metrics = metrics
        version.dataset = dataset
        version.split_hash = dataset.content_hash
        version.dataset_hash = dataset_hash(records.train)
        version.code_version = code_version()
        version.library_versions = library_versions()
        version.status = ModelVersion.State.READY
        version.save()
        store_element_metrics(version, records, p_validation, p_test, threshold)
        history = getattr(model, "history_", None)
        if history:
            TrainingRun.objects.filter(pk=run.pk).update(history=_jsonable(history))


def evaluation_metrics(fitted: FittedModel, records: SplitRecords, p_validation, p_test, threshold) -> dict:
    """Everything the pages, the API and the benchmark report about a model, as plain JSON.

    Test metrics at the validation-chosen threshold and at 0.5, with each subset's
    prevalence (precision and F1 depend on it), and every test probability by material
    id, so models of one split can be compared pairwise on the same compounds.
    """
    y_validation, y_test = records.validation.labels, records.test.labels
    metrics = {
        "threshold": threshold,
        "n": {"train": fitted.n_train, "validation": int(len(y_validation)), "test": int(len(y_test))},
        "prevalence": {
            subset: float(np.mean(getattr(records, subset).labels)) if len(getattr(records, subset)) else None
            for subset in ("train", "validation", "test")
        },
        "test": evaluate.classification_report(y_test, p_test, threshold),
        "test_at_half": evaluate.classification_report(y_test, p_test, 0.5),
        "test_ci": evaluate.bootstrap_ci(y_test, p_test, threshold, random_state=0),
        "validation": evaluate.classification_report(y_validation, p_validation, threshold),
        "roc": evaluate.roc_points(y_test, p_test),
        "validation_roc": evaluate.roc_points(y_validation, p_validation),
        "test_predictions": {
            "material_id": records.test.material_ids.tolist(),
            "label": y_test.tolist(),
            "probability": np.asarray(p_test).tolist(),
        },
    }
    if hasattr(fitted.model, "encode"):
        projection = evaluate.project_encoded(fitted.model.encode(fitted.arrays(records.test)))
        metrics["projection"] = {
            "x": projection[:, 0].tolist(),
            "y": projection[:, 1].tolist(),
            "label": y_test.tolist(),
            "probability": np.asarray(p_test).tolist(),
        }
    return _jsonable(metrics)


def store_element_metrics(version, records: SplitRecords, p_validation, p_test, threshold) -> None:
    rows = []
    for subset, subset_records, p in (
        ("validation", records.validation, p_validation),
        ("test", records.test, p_test),
    ):
        for entry in evaluate.per_element_metrics(subset_records.element_sets(), subset_records.labels, p, threshold):
            rows.append(
                ElementMetric(
                    model_version=version,
                    subset=subset,
                    element=entry["element"],
                    target_class=entry["target_class"],
                    recall=entry["recall"],
                    precision=entry["precision"],
                    f1=entry["f1"],
                    support=entry["support"],
                )
            )
    ElementMetric.objects.filter(model_version=version).delete()
    ElementMetric.objects.bulk_create(rows)


#: PostgreSQL advisory-lock key that serialises promotions ("PROM").
PROMOTION_LOCK_ID = 0x50524F4D


@transaction.atomic
def promote(model_version_id: int) -> ModelVersion:
    """Make this model the only production model.

    Concurrent promotions run one after the other: on PostgreSQL each takes a
    transaction-scoped advisory lock first (row locks alone cannot serialise them:
    with no production model yet there is no row to lock, and the loser would hit the
    unique index). The partial unique index guarantees at most one production model
    regardless.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PROMOTION_LOCK_ID])
    version = ModelVersion.objects.select_for_update().get(pk=model_version_id)
    if version.status != ModelVersion.State.READY or not version.artifact:
        raise ValueError(f"model {version.pk} is {version.status}; only a trained model can be promoted")
    list(ModelVersion.objects.select_for_update().filter(is_production=True))
    ModelVersion.objects.filter(is_production=True).exclude(pk=version.pk).update(is_production=False)
    if not version.is_production:
        version.is_production = True
        version.save(update_fields=["is_production"])
    return version


# --- One training at a time per split ----------------------------------------------------

#: What a run waiting for ``training_lock`` shows.
QUEUED_MESSAGE = "queued: another training of the same split is running"
#: High 32 bits of the PostgreSQL advisory-lock key of a split's training ("TRAN").
TRAINING_LOCK_NAMESPACE = 0x5452414E


@contextmanager
def training_lock(dataset_id: int | None, on_wait=None, poll_s: float = 1.0):
    """Hold the training lock of one split while the block runs.

    Two trainings of the same split never run at once: the second waits here, still
    queued (``on_wait`` is called once when it starts waiting), and runs when the first
    is done. On PostgreSQL the lock is a session advisory lock, so it is released when
    its holder's connection ends, a worker killed with -9 included; elsewhere (SQLite,
    in-process tasks) it is an exclusive ``flock`` on a file under DATA_DIR.
    """
    key = int(dataset_id or 0)
    if connection.vendor == "postgresql":
        lock_id = (TRAINING_LOCK_NAMESPACE << 32) | (key & 0xFFFFFFFF)

        def acquire() -> bool:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [lock_id])
                return bool(cursor.fetchone()[0])

        def release() -> None:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_id])
            except DatabaseError:  # the connection is gone, and the lock with it
                logger.warning("training lock of split %s: connection lost before unlocking", key)

    else:
        import fcntl

        folder = Path(settings.DATA_DIR) / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / f"training-{key}.lock", "a+")  # noqa: SIM115 - closed in release()

        def acquire() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        def release() -> None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    waiting = False
    try:
        while not acquire():
            if not waiting and on_wait is not None:
                on_wait()
            waiting = True
            time.sleep(poll_s)
    except BaseException:
        if connection.vendor != "postgresql":
            handle.close()
        raise
    try:
        yield
    finally:
        release()


# --- Provenance -------------------------------------------------------------------


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"mlcore {mlcore.__version__}" + (f" @ {sha}" if sha else "")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _jsonable(value):
    return json.loads(json.dumps(value, default=_default))


def _default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
