"""Type-only baseline: composition and space group, no spectra.

Its input is the same :class:`MaterialSpectra` container, but only ``composition``
and ``space_group`` are read, so it also works for materials without spectra (build
the container with no spectrum rows). Features: element fractions over ``ELEMENTS``,
space group number, crystal system index and point group index.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from mlcore.data import MaterialSpectra
from mlcore.models.base import SpectraClassifier, balanced_class_weights, check_dataset
from mlcore.models.features import composition_and_symmetry

# Per-node arrays exported from scikit-learn's fitted trees.
_NODE_FIELDS = ("feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf", "value")


class TypeOnlyClassifier(SpectraClassifier):
    """Gradient-boosted trees on composition + symmetry (``HistGradientBoostingClassifier``).

    After fitting, the trees are exported to flat NumPy arrays and evaluated in NumPy
    (``x <= threshold`` goes left, NaN follows ``missing_go_to_left``, as in
    scikit-learn), so saved models need no pickle and predictions before and after
    ``save``/``load`` are identical.

    Parameters
    ----------
    max_iter, learning_rate, max_leaf_nodes, l2_regularization :
        Passed to ``HistGradientBoostingClassifier``.
    class_weight : "balanced" or None
        "balanced" rescales the sample weights so both classes carry the same total
        weight (the intent of scikit-learn's ``class_weight="balanced"``, but
        idempotent: weights from :func:`mlcore.weights.sample_weights` already
        correct class imbalance and are not corrected twice).
    random_state : int
        Seed for the internal early-stopping split.
    n_threads : int or None, default 1
        OpenMP threads while fitting (None: the library's default, every core). The
        result does not depend on it. One thread is the default because these fits
        are small and machines are shared: on the 2-core machine with other work
        running, a catalogue fit (28,500 rows) took 136 s on every core and 15 s on one.

    Attributes
    ----------
    baseline_ : float
        Raw score before any tree (log-odds).
    tree_roots_ : numpy.ndarray
        (n_trees,) index of each tree's root in the flat node arrays.
    nodes_ : dict of numpy.ndarray
        Flat per-node arrays (feature, threshold, children, leaf flag, value).
    """

    _fitted_attribute = "nodes_"

    def __init__(
        self,
        max_iter: int = 300,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 31,
        l2_regularization: float = 0.0,
        class_weight: str | None = "balanced",
        random_state: int = 0,
        n_threads: int | None = 1,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.l2_regularization = l2_regularization
        self.class_weight = class_weight
        self.random_state = random_state
        self.n_threads = n_threads

    def _fit(self, X, y, sample_weight, validation_data, progress_callback) -> None:
        """Fit the boosted trees; ``validation_data`` is unused (internal early stopping)."""
        booster = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            l2_regularization=self.l2_regularization,
            random_state=self.random_state,
        )
        if self.class_weight == "balanced":
            sample_weight = balanced_class_weights(y, sample_weight)
        with threadpool_limits(limits=self.n_threads):
            booster.fit(composition_and_symmetry(X), y, sample_weight=sample_weight)
        self._export(booster)
        if progress_callback is not None:
            progress_callback(1, 1, {"n_trees": int(self.tree_roots_.size)})

    def _export(self, booster: HistGradientBoostingClassifier) -> None:
        # Binary problems have one tree per boosting iteration.
        trees = [predictors[0].nodes for predictors in booster._predictors]
        offsets = np.cumsum([0] + [tree.shape[0] for tree in trees[:-1]]).astype(np.int64)
        nodes = np.concatenate(trees) if trees else np.zeros(0, dtype=booster._predictors[0][0].nodes.dtype)
        tree_of_node = np.repeat(offsets, [tree.shape[0] for tree in trees])
        self.nodes_ = {name: np.asarray(nodes[name]) for name in _NODE_FIELDS}
        # Child indices are local to each tree; make them global in the flat arrays.
        self.nodes_["left"] = self.nodes_["left"].astype(np.int64) + tree_of_node
        self.nodes_["right"] = self.nodes_["right"].astype(np.int64) + tree_of_node
        self.tree_roots_ = offsets
        self.baseline_ = float(np.ravel(booster._baseline_prediction)[0])

    def decision_function(self, X: MaterialSpectra, batch_size: int = 8192) -> np.ndarray:
        """(N,) log-odds of topological: baseline plus the leaf values of every tree."""
        self._check_fitted()
        features = composition_and_symmetry(check_dataset(X))
        scores = np.empty(features.shape[0])
        for start in range(0, features.shape[0], batch_size):
            scores[start : start + batch_size] = self._tree_sum(features[start : start + batch_size])
        return self.baseline_ + scores

    def _tree_sum(self, features: np.ndarray) -> np.ndarray:
        """Sum over trees of each row's leaf value; only (row, tree) pairs not yet at a leaf advance."""
        nodes = self.nodes_
        n_rows, n_trees = features.shape[0], self.tree_roots_.size
        current = np.tile(self.tree_roots_, n_rows)  # (row, tree) pairs, row-major
        row_of_pair = np.repeat(np.arange(n_rows), n_trees)
        active = np.arange(current.size)
        while active.size:
            node = current[active]
            inner = ~nodes["is_leaf"][node].astype(bool)
            active, node = active[inner], node[inner]
            value = features[row_of_pair[active], nodes["feature_idx"][node]]
            missing_left = nodes["missing_go_to_left"][node].astype(bool)
            go_left = np.where(np.isnan(value), missing_left, value <= nodes["num_threshold"][node])
            current[active] = np.where(go_left, nodes["left"][node], nodes["right"][node])
        return nodes["value"][current].reshape(n_rows, n_trees).sum(axis=1)

    def predict_proba(self, X: MaterialSpectra) -> np.ndarray:
        """(N,) probability that each material is topological."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(X)))

    def _get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"baseline": self.baseline_}, {"tree_roots": self.tree_roots_, **self.nodes_}

    def _set_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        self.baseline_ = float(state["baseline"])
        self.tree_roots_ = arrays["tree_roots"]
        self.nodes_ = {name: arrays[name] for name in _NODE_FIELDS}
