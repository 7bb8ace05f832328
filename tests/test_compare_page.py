"""The compare page says what the benchmark found and shows the same paired comparison
on the split on screen, computed from the stored test predictions."""

import json

import numpy as np
import pytest
from django.conf import settings
from django.urls import reverse

from materials.learning.findings import SUMMARY
from materials.models import Dataset, ModelVersion
from mlcore.evaluate import paired_bootstrap_difference

pytestmark = pytest.mark.django_db


def _metrics(probabilities, labels, ids, threshold=0.5):
    return {
        "threshold": threshold,
        "validation": {"roc_auc": 0.8, "topological_f1": 0.8},
        "test": {"roc_auc": 0.8, "topological_f1": 0.8, "n_samples": len(ids), "n_topological": int(sum(labels))},
        "test_predictions": {"material_id": ids, "label": labels, "probability": probabilities},
    }


def test_compare_page_states_the_benchmark_finding_and_the_splits_paired_differences(
    client, django_assert_max_num_queries
):
    dataset = Dataset.objects.create(name="bundled-element-balanced-v2-seed3", seed=3, content_hash="h" * 64)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60).tolist()
    ids = list(range(1, 61))
    prior = np.clip(np.array(labels) * 0.6 + rng.random(60) * 0.4, 0, 1).tolist()
    stacked = np.clip(np.array(labels) * 0.7 + rng.random(60) * 0.3, 0, 1).tolist()
    for kind, probabilities in (("type-only", prior), ("stacked", stacked)):
        ModelVersion.objects.create(
            kind=kind, dataset=dataset, status=ModelVersion.State.READY, metrics=_metrics(probabilities, labels, ids)
        )
    with django_assert_max_num_queries(5):
        response = client.get(reverse("materials:model-compare"), {"dataset": dataset.pk})
    body = response.content.decode()
    assert response.status_code == 200
    expected = paired_bootstrap_difference(
        np.array(labels), np.array(stacked), 0.5, np.array(prior), 0.5, metric="roc_auc", random_state=3
    )
    assert "stacked − type-only" in body
    assert f"{expected['difference']:+.3f} [{expected['low']:+.3f}, {expected['high']:+.3f}]" in body
    summary = json.loads((settings.BASE_DIR / SUMMARY).read_text())
    assert summary["finding"] in body.replace("&#x27;", "'")


def test_benchmarks_md_states_the_finding_the_compare_page_shows():
    """One sentence, two places: BENCHMARKS.md "Model quality" and the compare page both read
    as ``bench/results/summary.json`` says, so a rerun that changes the finding must update both."""
    summary = json.loads((settings.BASE_DIR / SUMMARY).read_text())
    benchmarks = (settings.BASE_DIR / "BENCHMARKS.md").read_text()
    assert summary["finding"] in benchmarks
