"""Topology catalogues: raw classes, their binary mapping, and the training-label rule.

Raw classes are kept exactly as each catalogue spells them; the binary class is what
the models learn.

* Materiae (Zhang et al., Nature 566, 475 (2019)), with spin–orbit coupling:
  ``TI``, ``TCI``, ``HSP_SM``, ``HSL_SM`` are topological, ``Triv_Ins`` trivial; an
  empty class is unknown and yields no label. The class without SOC is kept as a tag.
* Topological Materials Arsenal (Tang et al., Nature 566, 486 (2019)): ``case1``
  (trivial symmetry indicators) is trivial; ``case3`` (enforced semimetal), ``TCI``
  and ``TI`` are topological.
* Topological quantum chemistry (Vergniory et al., Nature 566, 480 (2019)): ``LCEBR``
  is trivial; ``NLC``, ``SEBR``, ``ES`` and ``ESFD`` are topological.

Training-label rule: a material may carry one label per catalogue. The label used for
training is the one from the first catalogue in ``TRAINING_PRIORITY`` that has one:
a user's curated label wins, then Materiae (the catalogue the bundled data were
selected from, with SOC), then TQC, then the Arsenal (keyed only by formula and space
group, so the least specific).
"""

from __future__ import annotations

from collections.abc import Iterable

TOPOLOGICAL = "topological"
TRIVIAL = "trivial"

BINARY_BY_RAW_CLASS: dict[str, dict[str, str]] = {
    "materiae": {
        "TI": TOPOLOGICAL,
        "TCI": TOPOLOGICAL,
        "HSP_SM": TOPOLOGICAL,
        "HSL_SM": TOPOLOGICAL,
        "Triv_Ins": TRIVIAL,
    },
    "arsenal": {"case1": TRIVIAL, "case3": TOPOLOGICAL, "TCI": TOPOLOGICAL, "TI": TOPOLOGICAL},
    "tqc": {"LCEBR": TRIVIAL, "NLC": TOPOLOGICAL, "SEBR": TOPOLOGICAL, "ES": TOPOLOGICAL, "ESFD": TOPOLOGICAL},
    "user": {TOPOLOGICAL: TOPOLOGICAL, TRIVIAL: TRIVIAL, "TI": TOPOLOGICAL, "Triv_Ins": TRIVIAL},
}

TRAINING_PRIORITY = ("user", "materiae", "tqc", "arsenal")


def binary_class(catalogue: str, raw_class: str) -> str:
    """Map a catalogue's raw class to topological/trivial.

    Raises
    ------
    ValueError
        If the catalogue or the class is not one we know.
    """
    try:
        mapping = BINARY_BY_RAW_CLASS[catalogue]
    except KeyError:
        raise ValueError(f"unknown catalogue {catalogue!r}; expected one of {sorted(BINARY_BY_RAW_CLASS)}") from None
    try:
        return mapping[raw_class]
    except KeyError:
        raise ValueError(f"unknown {catalogue} class {raw_class!r}; expected one of {sorted(mapping)}") from None


def training_label(labels: Iterable):
    """Pick the label used for training from a material's labels (see module docstring)."""
    by_catalogue = {label.catalogue: label for label in labels}
    for catalogue in TRAINING_PRIORITY:
        if catalogue in by_catalogue:
            return by_catalogue[catalogue]
    return None
