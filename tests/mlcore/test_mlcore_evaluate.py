import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from mlcore.evaluate import (
    bootstrap_ci,
    choose_threshold,
    classification_report,
    compare_models,
    per_element_metrics,
    project_encoded,
    roc_points,
)


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(0)
    y = (rng.random(600) < 0.2).astype(int)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.15, y.size), 0, 1)
    return y, p


def test_report_matches_scikit_learn(scores):
    y, p = scores
    report = classification_report(y, p, 0.5)
    predicted = (p >= 0.5).astype(int)
    assert report["topological_recall"] == pytest.approx(recall_score(y, predicted))
    assert report["topological_precision"] == pytest.approx(precision_score(y, predicted))
    assert report["topological_f1"] == pytest.approx(f1_score(y, predicted))
    assert report["trivial_f1"] == pytest.approx(f1_score(y, predicted, pos_label=0))
    assert report["trivial_recall"] == pytest.approx(recall_score(y, predicted, pos_label=0))
    json.dumps(report)


def test_undefined_precision_is_none():
    report = classification_report(np.array([0, 1, 0]), np.array([0.1, 0.2, 0.3]), 0.9)
    assert report["topological_precision"] is None and report["topological_recall"] == 0.0


def test_youden_threshold_maximizes_tpr_minus_fpr(scores):
    y, p = scores
    threshold = choose_threshold(y, p)
    curve = roc_points(y, p)
    best = max(t - f for t, f in zip(curve["true_positive_rate"], curve["false_positive_rate"], strict=True))
    report = classification_report(y, p, threshold)
    assert report["topological_recall"] + report["trivial_recall"] - 1 == pytest.approx(best)
    json.dumps(curve)


def test_bootstrap_interval_brackets_the_estimate(scores):
    y, p = scores
    intervals = bootstrap_ci(y, p, 0.5, n_boot=300, random_state=1)
    for name, interval in intervals.items():
        assert interval["low"] <= interval["value"] <= interval["high"], name
    assert intervals == bootstrap_ci(y, p, 0.5, n_boot=300, random_state=1)
    json.dumps(intervals)


def test_per_element_metrics_cover_both_classes():
    sets = [{"O", "Ti"}, {"O"}, {"Ti"}, {"Cu"}]
    rows = per_element_metrics(sets, np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.1, 0.7]), 0.5)
    table = {(r["element"], r["target_class"]): r for r in rows}
    assert table[("Ti", "topological")]["recall"] == 0.5 and table[("Ti", "topological")]["support"] == 2
    assert table[("O", "trivial")]["recall"] == 1.0
    assert table[("Cu", "topological")]["recall"] is None and table[("Cu", "topological")]["support"] == 0
    json.dumps(rows)


def test_projection_is_the_first_two_principal_components():
    rng = np.random.default_rng(0)
    encoded = rng.normal(size=(200, 8)) * np.array([5, 3, 1, 1, 1, 1, 1, 1])
    projection = project_encoded(encoded)
    assert projection.shape == (200, 2)
    variance = projection.var(axis=0)
    assert variance[0] >= variance[1] >= np.var(encoded - encoded.mean(0), axis=0)[2:].max() * 0.5


def test_compare_models_returns_one_row_per_model(scores):
    y, p = scores
    rows = compare_models(y, {"a": p, "b": 1 - p}, {"a": 0.5, "b": 0.5}, n_boot=50)
    assert [r["model"] for r in rows] == ["a", "b"]
    assert rows[0]["metrics"]["roc_auc"]["value"] > 0.5 > rows[1]["metrics"]["roc_auc"]["value"]
