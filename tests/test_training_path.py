"""The app's one training path: production chosen by validation score, the stacked model
trained on the split's stored catalogue prior, the benchmark's schedule by default."""

import numpy as np
import pytest

from materials.ingest.bundled import load_bundled
from materials.learning.artifacts import read_bundle
from materials.learning.training import (
    best_by_validation,
    catalogue_training_records,
    get_or_create_split,
    split_records,
    train_model_version,
)
from materials.models import Dataset, ModelVersion, TrainingRun
from mlcore.training import CNN_SCHEDULE, hyperparameters_for
from tests.conftest import make_subset

pytestmark = pytest.mark.django_db


def _version(kind, validation_auc, test_auc, dataset):
    return ModelVersion.objects.create(
        kind=kind,
        dataset=dataset,
        status=ModelVersion.State.READY,
        metrics={
            "validation": {"roc_auc": validation_auc, "topological_f1": 0.8},
            "test": {"roc_auc": test_auc, "topological_f1": 0.8},
        },
    )


def test_production_is_chosen_by_validation_score_never_test():
    dataset = Dataset.objects.create(name="s", content_hash="x")
    better_on_test = _version("cnn-sg", validation_auc=0.80, test_auc=0.99, dataset=dataset)
    better_on_validation = _version("type-only", validation_auc=0.90, test_auc=0.70, dataset=dataset)
    failed = _version("stacked", validation_auc=0.99, test_auc=0.99, dataset=dataset)
    failed.status = ModelVersion.State.FAILED
    failed.save()
    assert best_by_validation([better_on_test, better_on_validation, failed]) == better_on_validation


@pytest.fixture
def bundled(tmp_path):
    load_bundled(make_subset(tmp_path / "data", n_compounds=30, n_extra_materiae=150))


def _train(kind, overrides, dataset) -> ModelVersion:
    """What a worker does with a queued training run, called here directly (no broker)."""
    version = ModelVersion.objects.create(
        kind=kind, hyperparameters=hyperparameters_for(kind, overrides), dataset=dataset
    )
    train_model_version(TrainingRun.objects.create(model_version=version).pk)
    version.refresh_from_db()
    assert version.status == ModelVersion.State.READY
    return version


def test_stacked_model_is_trained_on_the_splits_stored_catalogue_prior(bundled):
    dataset = get_or_create_split("test-split-seed0")
    prior_version = _train("type-only", {"max_iter": 30}, dataset)
    stacked_version = _train("stacked", {"epochs": 2}, dataset)
    prior = read_bundle(prior_version.artifact.name)
    stacked = read_bundle(stacked_version.artifact.name)
    records = split_records(dataset)
    inputs = stacked.preprocessor.transform(records.test.spectra, records.test.space_groups, records.test.compositions)
    # The prior inside the stacked model is the stored one: same log-odds on the same inputs.
    np.testing.assert_allclose(stacked.model.prior.decision_function(inputs), prior.model.decision_function(inputs))
    assert stacked_version.hyperparameters["epochs"] == 2
    assert stacked_version.hyperparameters["batch_size"] == CNN_SCHEDULE["batch_size"]
    assert "test_predictions" in stacked_version.metrics and "test_at_half" in stacked_version.metrics


def test_the_catalogue_prior_never_sees_a_held_out_formula(bundled):
    dataset = get_or_create_split("test-split-seed1")
    records = split_records(dataset)
    held_out = set(records.validation.material_ids) | set(records.test.material_ids)
    from materials.models import Material

    held_out_formulas = set(Material.objects.filter(pk__in=held_out).values_list("reduced_formula", flat=True))
    catalogue = catalogue_training_records(dataset)
    catalogue_formulas = set(
        Material.objects.filter(pk__in=catalogue.material_ids.tolist()).values_list("reduced_formula", flat=True)
    )
    assert len(catalogue) > len(records.train)
    assert not held_out_formulas & catalogue_formulas


def test_a_training_that_fails_on_the_worker_fails_its_run_and_its_model_version():
    from materials import jobs

    dataset = Dataset.objects.create(name="empty", content_hash="x")
    version = ModelVersion.objects.create(kind="svm-sg", hyperparameters={"no_such_setting": 1}, dataset=dataset)
    run = TrainingRun.objects.create(model_version=version)
    jobs.task(jobs.TRAIN_MODEL).apply(args=[run.pk])
    run.refresh_from_db()
    version.refresh_from_db()
    assert run.status == "failed" and "no_such_setting" in run.error
    assert version.status == ModelVersion.State.FAILED
