"""The data model: materials, their spectra and topology labels, dataset splits,
trained model versions, predictions, metrics and long-running jobs.

Provenance rides on every record: each Spectrum knows its source and settings, each
TopologyLabel its catalogue and release, each ModelVersion its dataset and split hash
and library versions, each Prediction its ModelVersion.

One module per part, all importable from here (``from materials.models import Material``):
``work`` (Status, TrackedWork, Job), ``compounds`` (Material, Spectrum, TopologyLabel),
``learning`` (Dataset, SplitAssignment, ModelVersion, TrainingRun, Prediction, ElementMetric)
and ``screenings`` (ScreeningBatch, ScreeningRow).
"""

from materials.ingest.labels import TOPOLOGICAL, TRIVIAL
from materials.models.compounds import (
    BINARY_CLASSES,
    TRAINING_SOURCES,
    Material,
    MaterialQuerySet,
    Spectrum,
    TopologyLabel,
    TopologyLabelQuerySet,
    elements_key,
)
from materials.models.learning import (
    Dataset,
    ElementMetric,
    ModelVersion,
    ModelVersionQuerySet,
    Prediction,
    SplitAssignment,
    TrainingRun,
)
from materials.models.screenings import ScreeningBatch, ScreeningRow
from materials.models.work import Job, Status, TrackedWork

__all__ = [
    "BINARY_CLASSES",
    "TOPOLOGICAL",
    "TRAINING_SOURCES",
    "TRIVIAL",
    "Dataset",
    "ElementMetric",
    "Job",
    "Material",
    "MaterialQuerySet",
    "ModelVersion",
    "ModelVersionQuerySet",
    "Prediction",
    "ScreeningBatch",
    "ScreeningRow",
    "Spectrum",
    "SplitAssignment",
    "Status",
    "TopologyLabel",
    "TopologyLabelQuerySet",
    "TrackedWork",
    "TrainingRun",
    "elements_key",
]
