"""Unsupervised baseline: per-element PCA + 2-cluster k-means, clusters matched to classes."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

from mlcore.data import MaterialSpectra
from mlcore.elements import ELEMENTS, element_indices
from mlcore.models.base import SpectraClassifier, check_dataset

N_CLUSTERS = 2


class KMeansPCAClassifier(SpectraClassifier):
    """The paper's exploratory method, turned into a classifier.

    For each element with enough training spectra: project its spectra onto their
    first ``n_components`` principal components, cluster them with 2-means, and map
    clusters to classes with the assignment that maximizes the summed per-class
    recall (class counts normalized, so the majority class does not win every
    cluster), via ``scipy.optimize.linear_sum_assignment``. Labels are used only for
    this matching.

    A material's probability is the mean of its elements' votes (1 when the
    spectrum's cluster maps to topological, 0 otherwise). Materials with no element
    that has a fitted clustering get the training fraction of topological samples.

    Parameters
    ----------
    n_components : int, default 2
        Principal components per element.
    min_spectra : int, default 4
        Elements with fewer training spectra get no clustering.
    n_init : int, default 10
        k-means restarts per element (the best inertia is kept).
    random_state : int
        Seed for k-means initialisation.

    Attributes
    ----------
    elements_ : numpy.ndarray
        Element indices with a fitted clustering.
    means_, components_, centroids_ : numpy.ndarray
        Per element (stacked in ``elements_`` order): spectrum mean (E, L), principal
        axes (E, n_components, L) and cluster centres in PC space (E, 2, n_components).
    cluster_class_ : numpy.ndarray
        (E, 2) class (0/1) assigned to each cluster.
    prior_ : float
        Fraction of topological training samples.
    """

    def __init__(self, n_components: int = 2, min_spectra: int = 4, n_init: int = 10, random_state: int = 0) -> None:
        self.n_components = n_components
        self.min_spectra = min_spectra
        self.n_init = n_init
        self.random_state = random_state

    def _fit(self, X, y, sample_weight, validation_data, progress_callback) -> None:
        """Fit one clustering per element. ``sample_weight`` and ``validation_data`` are unused."""
        spectrum_labels = y[X.material_index]
        class_sizes = np.bincount(y, minlength=2).astype(np.float64)
        elements, means, components, centroids, cluster_class = [], [], [], [], []
        candidates = [e for e in np.unique(X.element_index) if np.sum(X.element_index == e) >= self.min_spectra]
        for step, element in enumerate(candidates, start=1):
            rows = X.element_index == element
            spectra = X.spectra[rows].astype(np.float64)
            mean = spectra.mean(axis=0)
            centered = spectra - mean
            # Principal axes from the (L, L) scatter matrix: cheaper than an SVD of the
            # (n_spectra, L) data and identical up to sign, which clustering ignores.
            _, eigenvectors = np.linalg.eigh(centered.T @ centered)
            axes = eigenvectors[:, ::-1][:, : min(self.n_components, len(spectra))].T
            axes = _padded(axes, self.n_components)
            projected = centered @ axes.T
            kmeans = KMeans(N_CLUSTERS, n_init=self.n_init, random_state=self.random_state).fit(projected)
            if np.unique(kmeans.labels_).size < N_CLUSTERS:
                continue  # identical spectra: no clustering to learn
            # counts[k, c]: spectra of class c in cluster k, as a fraction of class c overall.
            counts = np.zeros((N_CLUSTERS, 2))
            np.add.at(counts, (kmeans.labels_, spectrum_labels[rows]), 1.0)
            _, matched_class = linear_sum_assignment(counts / np.maximum(class_sizes, 1.0), maximize=True)
            elements.append(element)
            means.append(mean)
            components.append(axes)
            centroids.append(kmeans.cluster_centers_)
            cluster_class.append(matched_class)
            if progress_callback is not None:
                progress_callback(step, len(candidates), {"n_spectra": float(rows.sum())})
        if not elements:
            raise ValueError(f"no element has at least {self.min_spectra} distinct training spectra to cluster")
        self.elements_ = np.asarray(elements, dtype=np.int64)
        self.means_ = np.stack(means)
        self.components_ = np.stack(components)
        self.centroids_ = np.stack(centroids)
        self.cluster_class_ = np.stack(cluster_class).astype(np.int64)
        self.prior_ = float(y.mean())

    def spectrum_votes(self, X: MaterialSpectra) -> tuple[np.ndarray, np.ndarray]:
        """Class vote (0/1) of each spectrum whose element has a clustering, and the mask of such spectra."""
        self._check_fitted()
        X = check_dataset(X)
        position = np.full(len(ELEMENTS), -1)
        position[self.elements_] = np.arange(self.elements_.size)
        slot = position[X.element_index]
        usable = slot >= 0
        slot = slot[usable]
        centered = X.spectra[usable].astype(np.float64) - self.means_[slot]
        projected = np.einsum("ml,mcl->mc", centered, self.components_[slot])
        distance = np.sum((projected[:, None, :] - self.centroids_[slot]) ** 2, axis=2)
        cluster = np.argmin(distance, axis=1)
        return self.cluster_class_[slot, cluster], usable

    def predict_proba(self, X: MaterialSpectra) -> np.ndarray:
        """(N,) mean per-element vote for topological (training prior when no element votes)."""
        votes, usable = self.spectrum_votes(X)
        materials = X.material_index[usable]
        n_votes = np.bincount(materials, minlength=X.n_materials)
        topological_votes = np.bincount(materials, weights=votes, minlength=X.n_materials)
        return np.where(n_votes > 0, topological_votes / np.maximum(n_votes, 1), self.prior_)

    def _get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        state = {"elements": self.element_symbols_, "prior": self.prior_}
        arrays = {
            "means": self.means_,
            "components": self.components_,
            "centroids": self.centroids_,
            "cluster_class": self.cluster_class_,
        }
        return state, arrays

    def _set_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        self.elements_ = element_indices(state["elements"])
        self.prior_ = float(state["prior"])
        self.means_ = arrays["means"]
        self.components_ = arrays["components"]
        self.centroids_ = arrays["centroids"]
        self.cluster_class_ = arrays["cluster_class"]


def _padded(axes: np.ndarray, n_components: int) -> np.ndarray:
    """Pad principal axes with zero rows when an element has fewer spectra than components."""
    if axes.shape[0] == n_components:
        return axes
    return np.vstack([axes, np.zeros((n_components - axes.shape[0], axes.shape[1]))])
