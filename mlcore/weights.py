"""Sample weights correcting class and element imbalance (the paper's Methods)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np


def sample_weights(element_sets: Sequence[Iterable[str]], y: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-sample misclassification weights, normalized to mean 1.

    The weight of sample i is inversely proportional to the product of the abundance
    of its class and the abundance of its least frequent element, both counted over
    the samples given (normally the training set, before augmentation; repeat the
    weights for augmented copies).

    Parameters
    ----------
    element_sets : sequence of iterables of str
        Elements of each sample.
    y : array_like
        (N,) labels, 1 = topological, 0 = trivial.

    Returns
    -------
    numpy.ndarray
        (N,) float64 weights with mean 1.

    Raises
    ------
    ValueError
        If a sample has no elements or the lengths differ.
    """
    labels = np.asarray(y).reshape(-1)
    sets = [set(elements) for elements in element_sets]
    if labels.shape[0] != len(sets):
        raise ValueError(f"{len(sets)} element sets but {labels.shape[0]} labels")
    if not sets:
        raise ValueError("no samples to weight")
    empty = [row for row, elements in enumerate(sets) if not elements]
    if empty:
        raise ValueError(f"sample {empty[0]} has no elements; its element abundance is undefined")
    element_counts = Counter(element for elements in sets for element in elements)
    class_values, class_sizes = np.unique(labels, return_counts=True)
    class_counts = dict(zip(class_values.tolist(), class_sizes.tolist(), strict=True))
    rarest = np.array([min(element_counts[e] for e in elements) for elements in sets], dtype=np.float64)
    abundance = np.array([class_counts[label] for label in labels.tolist()], dtype=np.float64) * rarest
    weights = 1.0 / abundance
    return weights / weights.mean()
