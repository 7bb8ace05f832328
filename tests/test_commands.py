"""The everyday commands as a user runs them (README "Everyday commands"): what each
stored and what it printed, and a clear error with nothing changed on bad input.

Tasks run in-process, as with no broker (the README's default); the same code runs on a
worker in ``tests/test_workflows.py``. ``screen`` is run end to end in
``tests/test_screen_release.py`` and ``demo`` in ``tests/test_demo.py``."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from materials.learning.inference import classifiable_materials
from materials.models import Job, ModelVersion, Prediction, Status, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def state() -> tuple:
    """What a refused command must leave as it was."""
    return (
        sorted(ModelVersion.objects.values_list("id", "status", "is_production")),
        TrainingRun.objects.count(),
        Prediction.objects.count(),
    )


def test_train_stores_a_ready_model_and_prints_its_test_metrics(bundled_subset, eager_tasks):
    out = run("train", "--kind", "type-only")

    version = ModelVersion.objects.get()
    assert version.status == ModelVersion.State.READY and not version.is_production
    assert version.artifact and version.threshold is not None and version.split_hash
    assert TrainingRun.objects.get().status == Status.DONE
    assert version.element_metrics.filter(subset="test").exists()
    assert f"model {version.pk} (type-only) on split {version.dataset.name}" in out
    for target in ("topological", "trivial"):
        ci = version.metrics["test_ci"][f"{target}_recall"]
        assert f"test {target:12s} recall {ci['value']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]" in out
    assert ModelVersion.objects.production() is None  # only --promote promotes


def test_train_with_promote_makes_the_new_model_production(bundled_subset, eager_tasks):
    first = ModelVersion.objects.get(pk=_train("type-only"))
    out = run("train", "--kind", "svm-sg", "--promote")

    trained = ModelVersion.objects.exclude(pk=first.pk).get()
    assert ModelVersion.objects.production() == trained
    assert f"promoted {trained} to production" in out


def test_train_refuses_bad_input_and_stores_nothing(bundled_subset, eager_tasks):
    before = state()
    with pytest.raises(CommandError, match="invalid choice: 'resnet'"):
        run("train", "--kind", "resnet")
    with pytest.raises(CommandError, match="bogus"):
        run("train", "--kind", "type-only", "--param", "bogus=1")
    assert state() == before


def test_promote_switches_production_to_exactly_the_named_model(bundled_subset, eager_tasks):
    first, second = _train("type-only"), _train("svm-sg")
    run("promote", str(first))

    out = run("promote", str(second))

    assert list(ModelVersion.objects.filter(is_production=True).values_list("pk", flat=True)) == [second]
    assert f"{ModelVersion.objects.get(pk=second)} is now in production" in out


def test_promote_refuses_a_missing_or_untrained_model_and_changes_nothing(bundled_subset, eager_tasks):
    production = _train("type-only")
    run("promote", str(production))
    untrained = ModelVersion.objects.create(kind="svm-sg")
    before = state()

    with pytest.raises(CommandError, match="no model version 999999"):
        run("promote", "999999")
    with pytest.raises(CommandError, match=f"model {untrained.pk} is .*; only a trained model can be promoted"):
        run("promote", str(untrained.pk))

    assert state() == before and ModelVersion.objects.production().pk == production


def test_classify_all_predicts_every_classifiable_material_once(bundled_subset, eager_tasks):
    version = ModelVersion.objects.get(pk=_train("svm-sg"))
    run("promote", str(version.pk))
    expected = classifiable_materials(version).count()
    assert expected >= 30  # the subset's complete compounds

    out = run("classify_all")

    predictions = Prediction.objects.filter(model_version=version)
    assert predictions.count() == expected
    assert set(predictions.values_list("material_id", flat=True)) == set(
        classifiable_materials(version).values_list("id", flat=True)
    )
    assert all(0.0 <= p <= 1.0 for p in predictions.values_list("probability", flat=True))
    assert f"{expected} new predictions from {version}" in out
    assert Job.objects.get(kind=Job.Kind.CLASSIFY).status == Status.DONE
    # A second run has nothing left to predict.
    assert f"0 new predictions from {version}" in run("classify_all")
    assert predictions.count() == expected


def test_classify_all_with_a_chosen_model_leaves_production_alone(bundled_subset, eager_tasks):
    production, other = _train("type-only"), _train("svm-sg")
    run("promote", str(production))

    run("classify_all", "--model", str(other))

    assert Prediction.objects.filter(model_version_id=other).exists()
    assert not Prediction.objects.filter(model_version_id=production).exists()


def test_classify_all_without_a_model_is_a_clear_error_and_stores_nothing(bundled_subset, eager_tasks):
    with pytest.raises(CommandError, match="no production model; promote one first"):
        run("classify_all")
    with pytest.raises(CommandError, match="no such model"):
        run("classify_all", "--model", "999999")
    assert not Prediction.objects.exists() and not Job.objects.exists()


def _train(kind: str) -> int:
    run("train", "--kind", kind)
    return ModelVersion.objects.order_by("-id").values_list("pk", flat=True)[0]
