"""Thresholds, metrics with bootstrap confidence intervals, per-element metrics.

Everything returns plain floats, lists and dicts (JSON-serializable); undefined
values (e.g. precision with no predicted positives) are ``None`` rather than 0.
Class 1 is topological, class 0 trivial; ``p`` is always P(topological).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from sklearn import metrics as sk_metrics

CLASS_NAMES = {1: "topological", 0: "trivial"}
METRIC_NAMES: tuple[str, ...] = (
    "topological_recall",
    "topological_precision",
    "topological_f1",
    "trivial_recall",
    "trivial_precision",
    "trivial_f1",
    "accuracy",
    "roc_auc",
)


def _check(y: np.ndarray | Sequence[int], p: np.ndarray | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y).reshape(-1).astype(np.int64)
    probabilities = np.asarray(p, dtype=np.float64).reshape(-1)
    if labels.shape != probabilities.shape:
        raise ValueError(f"{labels.size} labels but {probabilities.size} probabilities")
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError("y must contain only 0 (trivial) and 1 (topological)")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("probabilities contain NaN or infinite values")
    return labels, probabilities


def roc_points(y: np.ndarray, p: np.ndarray) -> dict:
    """ROC points for plotting: false/true positive rates, thresholds and the AUC.

    The first threshold of scikit-learn's curve is +inf (nothing predicted
    topological); it is reported as ``None``.
    """
    labels, probabilities = _check(y, p)
    fpr, tpr, thresholds = sk_metrics.roc_curve(labels, probabilities)
    return {
        "false_positive_rate": fpr.tolist(),
        "true_positive_rate": tpr.tolist(),
        "thresholds": [float(t) if np.isfinite(t) else None for t in thresholds],
        "auc": float(sk_metrics.auc(fpr, tpr)),
    }


def choose_threshold(y_val: np.ndarray, p_val: np.ndarray) -> float:
    """Decision threshold maximizing Youden's J (TPR - FPR) on the validation ROC.

    Youden's J weighs both classes' recall equally, which suits the imbalanced data
    (about one topological example per four trivial ones) better than accuracy.
    A material is predicted topological when ``p >= threshold``.
    """
    labels, probabilities = _check(y_val, p_val)
    if np.unique(labels).size < 2:
        raise ValueError("choosing a threshold needs both classes in the validation labels")
    fpr, tpr, thresholds = sk_metrics.roc_curve(labels, probabilities)
    finite = np.isfinite(thresholds)
    best = np.argmax(np.where(finite, tpr - fpr, -np.inf))
    return float(thresholds[best])


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def _count_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Recall/precision/F1 of both classes and accuracy along the last axis (vectorized)."""
    true_positive = np.sum((labels == 1) & (predicted == 1), axis=-1)
    false_positive = np.sum((labels == 0) & (predicted == 1), axis=-1)
    false_negative = np.sum((labels == 1) & (predicted == 0), axis=-1)
    true_negative = np.sum((labels == 0) & (predicted == 0), axis=-1)
    result = {}
    for name, hits, false_alarms, misses in (
        ("topological", true_positive, false_positive, false_negative),
        ("trivial", true_negative, false_negative, false_positive),
    ):
        recall = _ratio(hits, hits + misses)
        precision = _ratio(hits, hits + false_alarms)
        result[f"{name}_recall"] = recall
        result[f"{name}_precision"] = precision
        result[f"{name}_f1"] = _ratio(2 * hits, 2 * hits + false_alarms + misses)
    result["accuracy"] = _ratio(true_positive + true_negative, np.asarray(labels.shape[-1]))
    return result


def _plain(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    if np.unique(labels).size < 2:
        return float("nan")
    return float(sk_metrics.roc_auc_score(labels, probabilities))


def classification_report(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Recall, precision and F1 for both classes, accuracy and ROC AUC at ``threshold``."""
    labels, probabilities = _check(y, p)
    predicted = (probabilities >= threshold).astype(np.int64)
    report = {name: _plain(value) for name, value in _count_metrics(labels, predicted).items()}
    report["roc_auc"] = _plain(_roc_auc(labels, probabilities))
    report.update(threshold=float(threshold), n_samples=int(labels.size), n_topological=int(labels.sum()))
    return report


def bootstrap_ci(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    n_boot: int = 1000,
    random_state: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, float | None]]:
    """Point estimates and percentile bootstrap intervals of every metric.

    Returns
    -------
    dict
        ``{metric: {"value": v, "low": lo, "high": hi}}`` for each name in
        :data:`METRIC_NAMES`; resamples in which a metric is undefined are skipped.
    """
    labels, probabilities = _check(y, p)
    point = classification_report(labels, probabilities, threshold)
    rng = np.random.default_rng(random_state)
    samples = rng.integers(0, labels.size, size=(n_boot, labels.size))
    resampled_labels = labels[samples]
    resampled = _count_metrics(resampled_labels, (probabilities[samples] >= threshold).astype(np.int64))
    resampled["roc_auc"] = np.array([_roc_auc(resampled_labels[b], probabilities[samples[b]]) for b in range(n_boot)])
    tail = (1.0 - confidence) / 2.0 * 100.0
    intervals = {}
    for name in METRIC_NAMES:
        values = resampled[name][np.isfinite(resampled[name])]
        low, high = np.percentile(values, [tail, 100.0 - tail]) if values.size else (np.nan, np.nan)
        intervals[name] = {"value": point[name], "low": _plain(low), "high": _plain(high)}
    return intervals


def per_element_metrics(
    element_sets: Sequence[Iterable[str]], y: np.ndarray, p: np.ndarray, threshold: float
) -> list[dict]:
    """Recall, precision and F1 of each class among the samples containing each element.

    Returns
    -------
    list of dict
        ``{"element", "target_class", "recall", "precision", "f1", "support"}`` for
        every element and both classes; ``support`` counts the element's samples of
        ``target_class``.
    """
    labels, probabilities = _check(y, p)
    sets = [set(elements) for elements in element_sets]
    if len(sets) != labels.size:
        raise ValueError(f"{len(sets)} element sets but {labels.size} labels")
    predicted = (probabilities >= threshold).astype(np.int64)
    rows = []
    for element in sorted({e for s in sets for e in s}):
        contains = np.fromiter((element in s for s in sets), dtype=bool, count=len(sets))
        scores = _count_metrics(labels[contains], predicted[contains])
        for target, name in CLASS_NAMES.items():
            rows.append(
                {
                    "element": element,
                    "target_class": name,
                    "recall": _plain(scores[f"{name}_recall"]),
                    "precision": _plain(scores[f"{name}_precision"]),
                    "f1": _plain(scores[f"{name}_f1"]),
                    "support": int(np.sum(labels[contains] == target)),
                }
            )
    return rows


def project_encoded(encoded: np.ndarray) -> np.ndarray:
    """(N, 2) projection of learned representations onto their first two principal components.

    Component signs are fixed so the largest-magnitude loading is positive, making
    the projection reproducible.
    """
    values = np.asarray(encoded, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError("encoded must be a 2-D array with at least two rows")
    centered = values - values.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    components = components[:2]
    signs = np.sign(components[np.arange(components.shape[0]), np.argmax(np.abs(components), axis=1)])
    projection = centered @ (components * signs[:, None]).T
    if projection.shape[1] < 2:  # a single encoded feature: pad the second axis
        projection = np.column_stack([projection, np.zeros(values.shape[0])])
    return projection


def compare_models(
    y: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    thresholds: Mapping[str, float],
    n_boot: int = 1000,
    random_state: int = 0,
) -> list[dict]:
    """Test metrics with bootstrap CIs for several models on the same samples.

    Parameters
    ----------
    y : numpy.ndarray
        (N,) test labels.
    probabilities : mapping
        Model name -> (N,) P(topological) on the same samples.
    thresholds : mapping
        Model name -> decision threshold (normally from :func:`choose_threshold`).

    Returns
    -------
    list of dict
        ``{"model", "threshold", "metrics": bootstrap_ci(...)}`` per model, in the
        mapping's order. The same bootstrap resamples are used for every model.
    """
    return [
        {
            "model": name,
            "threshold": float(thresholds[name]),
            "metrics": bootstrap_ci(y, p, thresholds[name], n_boot=n_boot, random_state=random_state),
        }
        for name, p in probabilities.items()
    ]


def paired_bootstrap_difference(
    y: np.ndarray,
    p_model: np.ndarray,
    threshold_model: float,
    p_baseline: np.ndarray,
    threshold_baseline: float,
    metric: str = "topological_f1",
    n_boot: int = 1000,
    random_state: int = 0,
    confidence: float = 0.95,
) -> dict[str, float | None]:
    """What a model adds over a baseline on the same samples: metric(model) - metric(baseline).

    Both models are scored on the same bootstrap resamples, so the interval reflects
    the paired difference rather than two independent intervals (which overlap far
    more easily). An interval that excludes 0 is evidence of a real difference.

    Returns
    -------
    dict
        ``{"metric", "difference", "low", "high", "p_not_better"}``; ``p_not_better``
        is the fraction of resamples in which the model is not better than the baseline.
    """
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {METRIC_NAMES}, got {metric!r}")
    labels, first = _check(y, p_model)
    _, second = _check(y, p_baseline)
    rng = np.random.default_rng(random_state)
    samples = rng.integers(0, labels.size, size=(n_boot, labels.size))
    resampled_labels = labels[samples]
    if metric == "roc_auc":  # threshold-free: the thresholds are not used
        point = _roc_auc(labels, first) - _roc_auc(labels, second)
        model_scores = np.array([_roc_auc(resampled_labels[b], first[samples[b]]) for b in range(n_boot)])
        baseline_scores = np.array([_roc_auc(resampled_labels[b], second[samples[b]]) for b in range(n_boot)])
    else:
        point = (
            _count_metrics(labels, (first >= threshold_model).astype(np.int64))[metric]
            - _count_metrics(labels, (second >= threshold_baseline).astype(np.int64))[metric]
        )
        model_scores = _count_metrics(resampled_labels, (first[samples] >= threshold_model).astype(np.int64))[metric]
        baseline_scores = _count_metrics(resampled_labels, (second[samples] >= threshold_baseline).astype(np.int64))[
            metric
        ]
    differences = model_scores - baseline_scores
    differences = differences[np.isfinite(differences)]
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(differences, [tail, 100.0 - tail]) if differences.size else (np.nan, np.nan)
    return {
        "metric": metric,
        "difference": _plain(point),
        "low": _plain(low),
        "high": _plain(high),
        "p_not_better": _plain(float(np.mean(differences <= 0)) if differences.size else np.nan),
    }
