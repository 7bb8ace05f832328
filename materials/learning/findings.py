"""What spectra add: the benchmark's finding, and the same comparison on one stored split.

``bench/evaluate_bundled.py`` writes ``bench/results/summary.json`` over many splits,
with one plain sentence (``finding``); the compare page shows that sentence as it is,
and next to it the paired differences between the models stored for the split on
screen, computed from their stored test predictions with the benchmark's own function
and resampling seed, so the page and ``bench/results/split_seedS.json`` agree number
for number when the models were trained on that split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from django.conf import settings

from mlcore.evaluate import paired_bootstrap_difference

SUMMARY = Path("bench") / "results" / "summary.json"
#: (model kind, baseline kind) pairs compared on a split, as in the benchmark.
PAIRS = (("stacked", "type-only"), ("cnn-sg", "type-only"), ("cnn-sg-composition", "type-only"))


@dataclass
class Finding:
    sentence: str
    n_splits: int
    commit: str
    command: str


@cache
def published_finding() -> Finding | None:
    """The committed benchmark's sentence, or None when no summary is present."""
    path = Path(settings.BASE_DIR) / SUMMARY
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return Finding(
        sentence=summary.get("finding", ""),
        n_splits=len(summary.get("seeds", [])),
        commit=summary.get("commit", "")[:12],
        command=summary.get("command", ""),
    )


@dataclass
class PairedDifference:
    model: str
    baseline: str
    topological_f1: dict
    roc_auc: dict

    @staticmethod
    def _text(entry: dict) -> str:
        if entry.get("difference") is None:
            return "n/a"
        return f"{entry['difference']:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}]"

    @property
    def topological_f1_text(self) -> str:
        return self._text(self.topological_f1)

    @property
    def roc_auc_text(self) -> str:
        return self._text(self.roc_auc)


def paired_differences(versions, seed: int, n_boot: int = 1000) -> list[PairedDifference]:
    """Model − baseline on the split's test compounds, for the pairs stored on this split
    (the newest ready version of each kind)."""
    newest = {}
    for version in sorted(versions, key=lambda v: v.pk):
        if (version.metrics or {}).get("test_predictions"):
            newest[version.kind] = version
    rows = []
    for model_kind, baseline_kind in PAIRS:
        if model_kind not in newest or baseline_kind not in newest:
            continue
        model, baseline = newest[model_kind].metrics, newest[baseline_kind].metrics
        if model["test_predictions"]["material_id"] != baseline["test_predictions"]["material_id"]:
            continue
        labels = np.asarray(model["test_predictions"]["label"])
        differences = {
            metric: paired_bootstrap_difference(
                labels,
                np.asarray(model["test_predictions"]["probability"]),
                model["threshold"],
                np.asarray(baseline["test_predictions"]["probability"]),
                baseline["threshold"],
                metric=metric,
                n_boot=n_boot,
                random_state=seed,
            )
            for metric in ("topological_f1", "roc_auc")
        }
        rows.append(PairedDifference(model_kind, baseline_kind, **differences))
    return rows
