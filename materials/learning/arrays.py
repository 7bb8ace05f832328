"""The one crossing between ORM rows and NumPy arrays.

Nothing else in the app builds model inputs from rows, and nothing in ``mlcore``
knows about rows. ``load_records`` reads materials with their spectra in a constant
number of queries and returns plain arrays and ``mlcore.data.RawSpectrum`` lists.
``load_spectra_arrays`` is the screening path: the same spectra, chosen by the same
source preference, read with raw SQL straight into (M, L) float32 blocks, with no
model instance or per-spectrum object (``SpectrumPreprocessor.transform_arrays``
takes them as they are).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from django.db import connection

from materials.fields import DTYPE
from materials.models import TOPOLOGICAL, TRAINING_SOURCES, TRIVIAL, Material, Spectrum
from mlcore.data import RawSpectrum, composition_matrix
from mlcore.elements import ELEMENTS

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


@dataclass
class SpectraArrays:
    """Model inputs of N materials as arrays, in ``material_ids`` order (no labels).

    Spectra are rows of ``material_index`` / ``element_index`` (M,), sorted by
    (material, element), whose energies and absorption are stored in blocks of equal
    length: block b of ``energies_ev`` / ``mu`` is an (M_b, L_b) float32 array holding
    the next M_b spectra. Usually all spectra have 100 points and there is one block.
    """

    material_ids: np.ndarray
    space_groups: np.ndarray
    compositions: np.ndarray | None
    material_index: np.ndarray
    element_index: np.ndarray
    energies_ev: list[np.ndarray]
    mu: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.material_ids)

    @property
    def n_spectra(self) -> int:
        return len(self.material_index)


#: Spectrum rows per query of the screening loader (each row is ~1 kB of bytea).
ARRAY_CHUNK = 10_000
_ELEMENT_CODES = {symbol: code for code, symbol in enumerate(ELEMENTS)}


def load_spectra_arrays(
    material_ids: Sequence[int] | np.ndarray,
    *,
    sources: Sequence[str] = TRAINING_SOURCES,
    with_compositions: bool = False,
) -> SpectraArrays | None:
    """Read materials and their spectra into arrays, fast: what ``load_records`` reads
    for spectral models, without building model instances.

    Per material and element the first of ``sources`` that has a K-edge spectrum is
    used, as in ``load_records``. Compositions are parsed from the formulas only when
    ``with_compositions`` (composition models); otherwise ``compositions`` is None.

    Returns None when a stored spectrum cannot be put in an array (energies and
    absorption of different lengths, bytes that are not float32 values, an element
    symbol that does not exist) or ids repeat: the per-record path then handles them
    (and reports the problem) as it always has.

    Raises
    ------
    KeyError
        For an id that is not a stored material (as ``load_records``).
    """
    ids = np.asarray(material_ids, dtype=np.int64).reshape(-1)
    n_materials = len(ids)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    if n_materials and np.any(sorted_ids[1:] == sorted_ids[:-1]):
        return None  # repeated ids: rare enough for the record path
    table = Material._meta.db_table
    space_groups = np.zeros(n_materials, dtype=np.int64)
    found = np.zeros(n_materials, dtype=bool)
    formulas: list[str] = [""] * n_materials
    parts: list[_Rows] = []
    with connection.cursor() as cursor:
        for chunk in _chunks(sorted_ids.tolist(), ARRAY_CHUNK):
            where, params = _id_filter("id", chunk)
            cursor.execute(f"SELECT id, space_group_number, formula FROM {table} WHERE {where}", params)
            rows = cursor.fetchall()
            if rows:
                pks, numbers, chunk_formulas = zip(*rows, strict=True)
                positions = order[np.searchsorted(sorted_ids, np.asarray(pks, dtype=np.int64))]
                space_groups[positions] = [number or 0 for number in numbers]
                found[positions] = True
                if with_compositions:
                    for position, formula in zip(positions.tolist(), chunk_formulas, strict=True):
                        formulas[position] = formula
            chunk_parts = _fetch_spectra(cursor, chunk, sources)
            if chunk_parts is None or any(np.any(part.element_index < 0) for part in chunk_parts):
                return None  # see above; an unknown element symbol is reported by the record path
            parts.extend(chunk_parts)
    if not found.all():
        raise KeyError(int(ids[np.flatnonzero(~found)[0]]))
    compositions = None
    if with_compositions:
        from materials.chemistry import parse_formula

        parsed: dict[str, dict[str, float]] = {}
        compositions = composition_matrix(
            [parsed.get(f) or parsed.setdefault(f, parse_formula(f).fractions) for f in formulas]
        )
    material_index, element_index, energies, mu = _assemble(parts, sorted_ids, order)
    return SpectraArrays(
        material_ids=ids,
        space_groups=space_groups,
        compositions=compositions,
        material_index=material_index,
        element_index=element_index,
        energies_ev=energies,
        mu=mu,
    )


@dataclass
class _Rows:
    """Spectrum rows of one length as read: material ids, element codes (index into
    ELEMENTS), source ranks (position in ``sources``) and (rows, L) float32 arrays."""

    material_ids: np.ndarray
    element_index: np.ndarray
    ranks: np.ndarray
    energies_ev: np.ndarray
    mu: np.ndarray


def _id_filter(column: str, ids: list[int]) -> tuple[str, list]:
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [ids]
    return f"{column} IN ({', '.join(['%s'] * len(ids))})", list(ids)


def _fetch_spectra(cursor, ids: list[int], sources: Sequence[str]) -> list[_Rows] | None:
    """The materials' K-edge spectra from ``sources``, grouped by length; None if a
    spectrum cannot be an array row.

    On PostgreSQL the rows come in binary format (``bytea`` as raw bytes rather than hex
    text, half the volume and no encoding or decoding), which needs a cursor with
    server-side parameters on the same connection (Django's binds client-side).
    """
    where, params = _id_filter("material_id", ids)
    placeholders = ", ".join(["%s"] * len(sources))
    query = (
        f"SELECT material_id, element, source, energies_ev, mu FROM {Spectrum._meta.db_table} "
        f"WHERE {where} AND edge = 'K' AND source IN ({placeholders})"
    )
    if connection.vendor == "postgresql":
        import psycopg

        with psycopg.Cursor(cursor.connection) as binary:
            binary.execute(query, [*params, *sources], binary=True)
            rows = binary.fetchall()
    else:
        cursor.execute(query, [*params, *sources])
        rows = cursor.fetchall()
    if not rows:
        return []
    material_ids, elements, row_sources, energies, mu = zip(*rows, strict=True)
    del rows
    energy_bytes = np.fromiter(map(len, energies), dtype=np.int64, count=len(energies))
    mu_bytes = np.fromiter(map(len, mu), dtype=np.int64, count=len(mu))
    if np.any(energy_bytes != mu_bytes) or np.any(energy_bytes % DTYPE.itemsize):
        return None
    rank = {source: position for position, source in enumerate(sources)}
    material_ids = np.asarray(material_ids, dtype=np.int64)
    element_index = np.array([_ELEMENT_CODES.get(symbol, -1) for symbol in elements], dtype=np.int64)
    ranks = np.array([rank[source] for source in row_sources], dtype=np.int64)
    lengths = np.unique(energy_bytes).tolist()
    parts = []
    for nbytes in lengths:
        if len(lengths) == 1:
            pick, energies_of, mu_of = slice(None), energies, mu
        else:
            pick = np.flatnonzero(energy_bytes == nbytes)
            energies_of, mu_of = [energies[i] for i in pick.tolist()], [mu[i] for i in pick.tolist()]
        parts.append(
            _Rows(
                material_ids=material_ids[pick],
                element_index=element_index[pick],
                ranks=ranks[pick],
                energies_ev=_decode(energies_of, nbytes),
                mu=_decode(mu_of, nbytes),
            )
        )
    return parts


def _assemble(parts: list[_Rows], sorted_ids: np.ndarray, order: np.ndarray):
    """Material rows, element codes and float32 blocks (one per length) of the chosen
    spectra: per (material, element) the first source, sorted by (material, element)."""
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), [], []
    part = np.concatenate([np.full(len(p.material_ids), i) for i, p in enumerate(parts)])
    local = np.concatenate([np.arange(len(p.material_ids)) for p in parts])
    material_ids = np.concatenate([p.material_ids for p in parts])
    element_index = np.concatenate([p.element_index for p in parts])
    ranks = np.concatenate([p.ranks for p in parts])
    material_index = order[np.searchsorted(sorted_ids, material_ids)]
    chosen = np.lexsort((ranks, element_index, material_index))
    keys = material_index[chosen] * len(ELEMENTS) + element_index[chosen]
    chosen = chosen[np.concatenate([[True], keys[1:] != keys[:-1]])]  # first source of each (material, element)
    lengths = np.array([p.energies_ev.shape[1] for p in parts])[part[chosen]]
    blocks_e, blocks_mu, picks = [], [], []
    for length in np.unique(lengths).tolist():
        pick = chosen if np.all(lengths == length) else chosen[lengths == length]
        same = [i for i, p in enumerate(parts) if p.energies_ev.shape[1] == length]
        if len(same) == 1:
            rows = local[pick]
            energies, mu = parts[same[0]].energies_ev, parts[same[0]].mu
        else:  # several chunks of this length: stack them, then pick
            starts = {i: offset for i, offset in zip(same, np.cumsum([0] + [len(parts[i].mu) for i in same]))}
            rows = local[pick] + np.array([starts[i] for i in part[pick].tolist()], dtype=np.int64)
            energies = np.concatenate([parts[i].energies_ev for i in same])
            mu = np.concatenate([parts[i].mu for i in same])
        blocks_e.append(np.take(energies, rows, axis=0))
        blocks_mu.append(np.take(mu, rows, axis=0))
        picks.append(pick)
    pick = np.concatenate(picks)
    return material_index[pick], element_index[pick], blocks_e, blocks_mu


def _decode(values: Sequence[bytes], nbytes: int) -> np.ndarray:
    """(len(values), nbytes / 4) float32 array from equal-length little-endian buffers."""
    return np.frombuffer(b"".join(values), dtype=DTYPE).reshape(len(values), nbytes // DTYPE.itemsize)


def _chunks(values: list, size: int):
    for start in range(0, len(values), size):
        yield values[start : start + size]
