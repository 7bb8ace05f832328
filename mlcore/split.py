"""Element-balanced train / validation / test assignment (the paper's Methods).

Elements are visited in increasing order of their abundance among topological
samples (ties: total abundance, then symbol). For each element, the samples that
contain it and are not yet assigned are shuffled within each class, and
``test_fraction`` / ``validation_fraction`` of each class go to test / validation,
the rest to train. Rare elements are therefore split first, while they still have
all their samples, which is what keeps every element represented in every subset.

Per-class counts are rounded cumulatively (largest-remainder over the whole pass),
so the overall fractions stay exact even though most elements contribute only a
handful of unassigned samples.

Every element reaches training. Rounding alone would send all samples of a rare
element (one or two compounds of Lu, Pu, Np, Tm) to validation or test, and a model
never sees their spectra; the paper's procedure loses rare elements from the *test*
set, never from training. So when an element is visited and none of its samples is
in train yet, one of its unassigned samples (drawn at random) goes to train first;
it counts towards the cumulative totals, so later elements make up the held-out
share. An element whose samples were all assigned while rarer elements were visited
and none landed in train gets one of them moved to train at the end.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

SUBSETS: tuple[str, ...] = ("train", "validation", "test")


@dataclass
class SplitResult:
    """Outcome of :func:`element_balanced_split`.

    Attributes
    ----------
    assignment : numpy.ndarray
        (N,) strings ``"train"``, ``"validation"`` or ``"test"``.
    balance : list of dict
        One row per (element, subset): ``element``, ``subset``, ``n_samples``,
        ``n_topological``, ``topological_fraction`` (the paper's Fig. S1c).
    content_hash : str
        SHA-256 of the assignment (keyed by ``keys`` when given), for provenance.
    """

    assignment: np.ndarray
    balance: list[dict] = field(default_factory=list)
    content_hash: str = ""

    def rows(self, subset: str) -> np.ndarray:
        """Sample rows assigned to ``subset``."""
        if subset not in SUBSETS:
            raise ValueError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
        return np.flatnonzero(self.assignment == subset)

    @property
    def train(self) -> np.ndarray:
        return self.rows("train")

    @property
    def validation(self) -> np.ndarray:
        return self.rows("validation")

    @property
    def test(self) -> np.ndarray:
        return self.rows("test")


def assignment_hash(assignment: Sequence[str], keys: Sequence | None = None) -> str:
    """SHA-256 of an assignment; with ``keys`` it is independent of row order."""
    if keys is None:
        payload = list(map(str, assignment))
    else:
        payload = sorted([str(key), str(subset)] for key, subset in zip(keys, assignment, strict=True))
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def element_balanced_split(
    element_sets: Sequence[Iterable[str]],
    y: Sequence[int] | np.ndarray,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    random_state: int = 0,
    keys: Sequence | None = None,
) -> SplitResult:
    """Assign every sample to train / validation / test, balanced per element and class.

    Parameters
    ----------
    element_sets : sequence of iterables of str
        Absorbing elements of each sample.
    y : array_like
        (N,) labels, 1 = topological, 0 = trivial.
    test_fraction, validation_fraction : float
        Target fractions (paper: 0.2 and 0.1); the rest is train.
    random_state : int
        Seed for the within-class shuffles; the result is deterministic given it.
    keys : sequence, optional
        Stable sample identifiers (e.g. material ids) for ``content_hash``.
    """
    labels = np.asarray(y).reshape(-1)
    sets = [set(elements) for elements in element_sets]
    if labels.shape[0] != len(sets):
        raise ValueError(f"{len(sets)} element sets but {labels.shape[0]} labels")
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError("y must contain only 0 (trivial) and 1 (topological)")
    if min(test_fraction, validation_fraction) < 0 or test_fraction + validation_fraction >= 1:
        raise ValueError("test_fraction and validation_fraction must be >= 0 and sum to less than 1")
    if keys is not None and len(keys) != len(sets):
        raise ValueError(f"{len(keys)} keys for {len(sets)} samples")

    topological_counts = Counter(e for s, label in zip(sets, labels, strict=True) if label == 1 for e in s)
    total_counts = Counter(e for s in sets for e in s)
    order = sorted(total_counts, key=lambda e: (topological_counts[e], total_counts[e], e))

    rng = np.random.default_rng(random_state)
    assignment = np.full(len(sets), "", dtype=object)
    # Per class: samples handed out so far and how many went to test / validation.
    seen = {0: 0, 1: 0}
    to_test = {0: 0, 1: 0}
    to_validation = {0: 0, 1: 0}

    def allocate(candidates: np.ndarray, members_of_element: np.ndarray | None = None) -> None:
        if members_of_element is not None and candidates.size and not np.any(assignment[members_of_element] == "train"):
            reserved = int(rng.choice(candidates))
            assignment[reserved] = "train"
            seen[int(labels[reserved])] += 1
            candidates = candidates[candidates != reserved]
        for label in (1, 0):
            members = rng.permutation(candidates[labels[candidates] == label])
            seen[label] += members.size
            cumulative_test = round(test_fraction * seen[label])
            cumulative_held_out = round((test_fraction + validation_fraction) * seen[label])
            n_test = int(np.clip(cumulative_test - to_test[label], 0, members.size))
            already_held_out = to_test[label] + to_validation[label] + n_test
            n_validation = int(np.clip(cumulative_held_out - already_held_out, 0, members.size - n_test))
            assignment[members[:n_test]] = "test"
            assignment[members[n_test : n_test + n_validation]] = "validation"
            assignment[members[n_test + n_validation :]] = "train"
            to_test[label] += n_test
            to_validation[label] += n_validation

    membership: dict[str, list[int]] = {e: [] for e in order}
    for row, elements in enumerate(sets):
        for element in elements:
            membership[element].append(row)
    for element in order:
        rows = np.asarray(membership[element], dtype=np.int64)
        allocate(rows[assignment[rows] == ""], rows)
    allocate(np.flatnonzero(assignment == ""))  # samples without any element
    for element in order:  # all assigned before this element's turn, none to train
        rows = np.asarray(membership[element], dtype=np.int64)
        if rows.size and not np.any(assignment[rows] == "train"):
            assignment[int(rng.choice(rows))] = "train"
    assignment = assignment.astype(str)

    return SplitResult(
        assignment=assignment,
        balance=_balance_table(sets, labels, assignment, order),
        content_hash=assignment_hash(assignment, keys),
    )


def _balance_table(sets: list[set[str]], labels: np.ndarray, assignment: np.ndarray, order: list[str]) -> list[dict]:
    rows = []
    for element in sorted(order):
        contains = np.fromiter((element in s for s in sets), dtype=bool, count=len(sets))
        for subset in SUBSETS:
            selected = contains & (assignment == subset)
            n_samples = int(selected.sum())
            n_topological = int(labels[selected].sum())
            rows.append(
                {
                    "element": element,
                    "subset": subset,
                    "n_samples": n_samples,
                    "n_topological": n_topological,
                    "topological_fraction": n_topological / n_samples if n_samples else None,
                }
            )
    return rows
