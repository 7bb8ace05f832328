"""Classifiers and the registry the application uses to create and load them.

Every model takes a :class:`mlcore.data.MaterialSpectra`, has
``fit(X, y, sample_weight=None, validation_data=None, progress_callback=None)``
returning ``self``, ``predict_proba(X)`` returning the (N,) probability of the
topological class, ``save(path)`` writing one zip file, and ``load(path)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlcore.artifacts import read_artifact
from mlcore.models.base import SpectraClassifier
from mlcore.models.kmeans import KMeansPCAClassifier
from mlcore.models.svm import SVMClassifier
from mlcore.models.type_only import TypeOnlyClassifier


def _cnn_class() -> type[SpectraClassifier]:
    # TensorFlow takes seconds to import; only the CNN kinds pay for it.
    from mlcore.models.cnn import SpectraCNNClassifier

    return SpectraCNNClassifier


_CLASS_FACTORIES: dict[str, Callable[[], type[SpectraClassifier]]] = {
    "SpectraCNNClassifier": _cnn_class,
    "SVMClassifier": lambda: SVMClassifier,
    "KMeansPCAClassifier": lambda: KMeansPCAClassifier,
    "TypeOnlyClassifier": lambda: TypeOnlyClassifier,
}


@dataclass(frozen=True, eq=False)
class ModelKind:
    """A registered model kind: a class, the hyperparameters that define the kind, and
    the inputs it reads. This is the one place that says which kind uses what.

    The class is resolved on first use, so listing kinds or loading a non-CNN model
    never imports TensorFlow.

    Attributes
    ----------
    label : str
        Human-readable name for pages and reports.
    uses_spectra, uses_symmetry, uses_composition : bool
        Inputs the model reads from :class:`mlcore.data.MaterialSpectra`.
    uses_prior : bool
        Needs a fitted composition + symmetry prior (``prior=``), stored inside it.
    augmented : bool
        Trained on the +-1 eV shift-augmented copies of the training spectra.
    """

    name: str
    class_name: str
    fixed_hyperparameters: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    uses_spectra: bool = True
    uses_symmetry: bool = False
    uses_composition: bool = False
    uses_prior: bool = False
    augmented: bool = False

    @property
    def model_class(self) -> type[SpectraClassifier]:
        return _CLASS_FACTORIES[self.class_name]()

    def make(self, **hyperparameters: Any) -> SpectraClassifier:
        """New, unfitted model of this kind (see :func:`make_model`)."""
        fixed = self.fixed_hyperparameters
        conflicting = sorted(k for k in fixed if k in hyperparameters and hyperparameters[k] != fixed[k])
        if conflicting:
            raise ValueError(f"model kind {self.name!r} fixes {conflicting}; choose another kind instead")
        try:
            return self.model_class(**{**hyperparameters, **fixed})
        except TypeError as error:
            raise ValueError(f"bad hyperparameters for {self.name!r}: {error}") from None

    def load(self, path: str | Path) -> SpectraClassifier:
        """Load a model of this kind saved with ``save(path)``; ``ValueError`` if it is another kind."""
        model = self.model_class.load(path)
        if not self.matches(model):
            raise ValueError(f"{path} does not hold a {self.name!r} model")
        return model

    def matches(self, model: SpectraClassifier) -> bool:
        """Whether ``model`` is an instance of this kind."""
        return (
            type(model).__name__ == self.class_name
            and all(getattr(model, name) == value for name, value in self.fixed_hyperparameters.items())
            and (getattr(model, "prior", None) is not None) == self.uses_prior
        )


_CNN = "SpectraCNNClassifier"
MODEL_KINDS: dict[str, ModelKind] = {
    kind.name: kind
    for kind in (
        ModelKind(
            "cnn-sg", _CNN, {"use_symmetry": True, "use_composition": False}, "CNN-sg (spectra + symmetry)",
            uses_symmetry=True, augmented=True,
        ),
        ModelKind(
            "cnn", _CNN, {"use_symmetry": False, "use_composition": False}, "CNN (spectra only)", augmented=True
        ),
        ModelKind(
            "cnn-sg-composition", _CNN, {"use_symmetry": True, "use_composition": True}, "CNN-sg + composition",
            uses_symmetry=True, uses_composition=True, augmented=True,
        ),
        ModelKind(
            "stacked", _CNN, {"use_symmetry": True, "use_composition": False}, "Prior + spectra (stacked)",
            uses_symmetry=True, uses_composition=True, uses_prior=True, augmented=True,
        ),
        ModelKind("svm-sg", "SVMClassifier", label="SVM-sg", uses_symmetry=True),
        ModelKind("kmeans", "KMeansPCAClassifier", label="k-means on PCA"),
        ModelKind(
            "type-only", "TypeOnlyClassifier", label="Type-only (composition + space group)",
            uses_spectra=False, uses_symmetry=True, uses_composition=True,
        ),
    )
}  # fmt: skip


def make_model(kind: str, **hyperparameters: Any) -> SpectraClassifier:
    """New, unfitted model of ``kind`` (a key of :data:`MODEL_KINDS`).

    Raises
    ------
    ValueError
        For an unknown kind, or a hyperparameter that contradicts the kind
        (e.g. ``use_symmetry=False`` for ``"cnn-sg"``) or that the model lacks.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[kind].make(**hyperparameters)


def load_model(path: str | Path) -> SpectraClassifier:
    """Load any model saved with ``save(path)``, whatever its class."""
    manifest, arrays = read_artifact(path)
    class_name = manifest.get("class")
    if class_name not in _CLASS_FACTORIES:
        raise ValueError(f"{path} holds an unknown model class {class_name!r}")
    return _CLASS_FACTORIES[class_name]().from_artifact(manifest, arrays)


def model_kind(model: SpectraClassifier) -> str:
    """The registry kind of a model instance (inverse of :func:`make_model`)."""
    for kind in MODEL_KINDS.values():
        if kind.matches(model):
            return kind.name
    raise ValueError(f"{type(model).__name__} with these settings is not a registered kind")


__all__ = ["MODEL_KINDS", "ModelKind", "SpectraClassifier", "load_model", "make_model", "model_kind"]
