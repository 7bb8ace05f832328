"""The one crossing between ORM rows and NumPy arrays.

Nothing else in the app builds model inputs from rows, and nothing in ``mlcore``
knows about rows. ``load_records`` reads materials with their spectra in a constant
number of queries and returns plain arrays and ``mlcore.data.RawSpectrum`` lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from materials.models import TOPOLOGICAL, TRIVIAL, Material, Spectrum
from mlcore.data import RawSpectrum

# When a material has one element's spectrum from several sources, models use the
# first of these. Measured spectra are never training inputs: they come from another
# domain (instrument broadening, normalisation) than the computed ones.
TRAINING_SOURCES = (Spectrum.Source.MATERIALS_PROJECT, Spectrum.Source.FEFF)
LABEL_VALUES = {TOPOLOGICAL: 1, TRIVIAL: 0, "": -1}


@dataclass
class MaterialRecords:
    """Model inputs of N materials, in ``material_ids`` order.

    ``labels`` holds 1 (topological), 0 (trivial) or -1 (unlabelled).
    """

    material_ids: np.ndarray
    spectra: list[list[RawSpectrum]]
    space_groups: np.ndarray
    compositions: list[dict[str, float]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.material_ids)

    def element_sets(self) -> list[set[str]]:
        return [set(composition) for composition in self.compositions]

    def take(self, rows: Sequence[int] | np.ndarray) -> MaterialRecords:
        rows = np.asarray(rows, dtype=np.int64)
        return MaterialRecords(
            material_ids=self.material_ids[rows],
            spectra=[self.spectra[i] for i in rows],
            space_groups=self.space_groups[rows],
            compositions=[self.compositions[i] for i in rows],
            labels=self.labels[rows],
        )

    def drop_element(self, row: int, element: str) -> MaterialRecords:
        """The material in ``row`` with one element's spectrum left out."""
        single = self.take([row])
        single.spectra = [[s for s in single.spectra[0] if s.element != element]]
        return single


def composition_fractions(material: Material) -> dict[str, float]:
    from materials.chemistry import parse_formula

    return parse_formula(material.formula).fractions


def load_records(
    material_ids: Iterable[int] | None = None,
    *,
    queryset=None,
    sources: Sequence[str] = TRAINING_SOURCES,
    with_spectra: bool = True,
) -> MaterialRecords:
    """Read materials (and, optionally, their spectra) into arrays.

    Parameters
    ----------
    material_ids
        Which materials, in the order wanted; or pass ``queryset``.
    sources
        Spectrum sources to use, in order of preference per element.
    with_spectra
        False for composition/symmetry-only models (no spectra read at all).
    """
    if queryset is None:
        ids = list(material_ids or [])
        rows = Material.objects.in_bulk(ids)
        materials = [rows[pk] for pk in ids]
    else:
        materials = list(queryset.only("id", "formula", "elements", "space_group_number", "label"))
    ids = np.array([m.pk for m in materials], dtype=np.int64)
    spectra_by_material: dict[int, dict[str, Spectrum]] = {}
    if with_spectra and len(ids):
        rank = {source: i for i, source in enumerate(sources)}
        for chunk in _chunks(ids.tolist(), 5000):
            stored = Spectrum.objects.filter(material_id__in=chunk, source__in=list(sources), edge="K").only(
                "material_id", "element", "energies_ev", "mu", "source"
            )
            for spectrum in stored:
                chosen = spectra_by_material.setdefault(spectrum.material_id, {})
                current = chosen.get(spectrum.element)
                if current is None or rank[spectrum.source] < rank[current.source]:
                    chosen[spectrum.element] = spectrum
    raw = [
        [
            RawSpectrum(element=s.element, energies_ev=s.energies_ev.astype(np.float64), mu=s.mu.astype(np.float64))
            for _, s in sorted(spectra_by_material.get(m.pk, {}).items())
        ]
        for m in materials
    ]
    return MaterialRecords(
        material_ids=ids,
        spectra=raw,
        space_groups=np.array([m.space_group_number or 0 for m in materials], dtype=np.int64),
        compositions=[composition_fractions(m) for m in materials],
        labels=np.array([LABEL_VALUES[m.label] for m in materials], dtype=np.int64),
    )


def _chunks(values: list, size: int):
    for start in range(0, len(values), size):
        yield values[start : start + size]
