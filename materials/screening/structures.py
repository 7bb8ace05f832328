"""Parsing structure files of a release: one home for each of the two ways a CIF is read.

``summarise_cif`` is stage 1's parse: what the prior needs (composition, space group)
plus what decides whether FEFF may run (ordered? hydrogen? how many sites?). It reads
the CIF's tokens with pymatgen's ``CifFile``, expands the asymmetric unit with the
CIF's own symmetry operations in NumPy and finds the space group with spglib: a few
milliseconds, where pymatgen's ``CifParser`` takes tens. A CIF it cannot read that way
goes through ``CifParser`` (the same answer, slower).

``parse_cif`` is stage 2's parse: the ordered primitive pymatgen ``Structure`` FEFF
computes from, only for the budgeted materials. Both build a ``Structure`` with
:func:`materials.ingest.structure_files.read_structure`, the one parse of a structure file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from materials.ingest.structure_files import SYMPREC_ANGSTROM, read_structure, space_group_number
from mlcore.elements import ELEMENTS

#: Fractional distance under which two images of a site are the same position.
SITE_TOLERANCE = 1e-3
ICSD_CODE = re.compile(r"_database_code_ICSD\s+(\d+)")
AMCSD_CODE = re.compile(r"_database_code_amcsd\s+(\d+)")
ICSD_FILENAME = re.compile(r"(?:icsd[_-]?)?(\d+)", re.IGNORECASE)
_KNOWN = set(ELEMENTS)
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass
class StructureSummary:
    """What stage 1 knows about one structure file."""

    file: str
    formula: str
    reduced_formula: str
    elements: list[str]
    space_group_number: int
    nsites: int  # sites in the conventional cell (primitive cells are smaller)
    ordered: bool
    icsd_id: int | None = None
    amcsd_id: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def has_hydrogen(self) -> bool:
        return "H" in self.elements


@dataclass
class ParsedStructure:
    file: str
    structure: object
    icsd_id: int | None
    space_group_number: int


def _float(text) -> float:
    match = _NUMBER.match(str(text).strip())
    if match is None:
        raise ValueError(f"not a number: {text!r}")
    return float(match.group(0))


@lru_cache(maxsize=4096)
def _operations(ops: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Rotation matrices (n, 3, 3) and translations (n, 3) of the CIF's xyz strings."""
    from pymatgen.core.operations import SymmOp

    rotations, translations = [], []
    for op in ops:
        symm = SymmOp.from_xyz_str(op.replace(" ", "").lower())
        rotations.append(symm.rotation_matrix)
        translations.append(symm.translation_vector)
    return np.array(rotations), np.array(translations)


#: Labels CIFs use for water and its atoms (as pymatgen reads them).
_SPECIAL_LABELS = (("Wat", "O"), ("wat", "O"), ("Ow", "O"), ("Hw", "H"), ("OH", "O"))


def _symbol(label: str) -> str:
    """The element of a CIF type symbol or label ("Fe2+", "O1", "Si4a", "Ow")."""
    for prefix, element in _SPECIAL_LABELS:
        if label.startswith(prefix):
            return element
    text = re.sub(r"[^A-Za-z]", " ", label).split()
    if not text:
        raise ValueError(f"no element in site label {label!r}")
    word = text[0]
    for candidate in (word[:2].title(), word[:1].upper()):
        if candidate in _KNOWN:
            return candidate
    if word.title() == "D":
        return "H"  # deuterium
    raise UnknownElement(f"unknown element(s) {word}: not chemical elements from H to Pu (site label {label!r})")


class UnknownElement(ValueError):
    """A site names no chemical element: the CIF cannot be used, by any parser."""


def _identifiers(name: str, text: str) -> tuple[int | None, int | None]:
    match = ICSD_CODE.search(text)
    amcsd = AMCSD_CODE.search(text)
    amcsd_id = int(amcsd.group(1)) if amcsd else None
    if match is None and amcsd_id is None:
        match = ICSD_FILENAME.fullmatch(Path(name).stem)
    return (int(match.group(1)) if match else None), amcsd_id


def summarise_cif(name: str, text: str) -> StructureSummary:
    """Composition, space group and FEFF-relevant facts of one CIF.

    Raises
    ------
    ValueError
        With the reason the CIF cannot be used at all.
    """
    icsd_id, amcsd_id = _identifiers(name, text)
    try:
        summary = _fast_summary(name, text)
    except UnknownElement:
        raise
    except Exception:  # anything unusual: pymatgen's parser decides
        summary = _pymatgen_summary(name, text)
    summary.icsd_id, summary.amcsd_id = icsd_id, amcsd_id
    return summary


def _first(data: dict, *keys):
    for key in keys:
        if key in data:
            return data[key]
    return None


def _fast_summary(name: str, text: str) -> StructureSummary:
    from pymatgen.io.cif import CifFile

    blocks = CifFile.from_str(text).data
    data = next(block.data for block in blocks.values() if "_atom_site_fract_x" in block.data)
    ops = _first(
        data, "_space_group_symop_operation_xyz", "_symmetry_equiv_pos_as_xyz", "_space_group_symop.operation_xyz"
    )
    if ops is None:
        raise ValueError("no symmetry operations")
    ops = (ops,) if isinstance(ops, str) else tuple(ops)
    rotations, translations = _operations(ops)
    a, b, c, alpha, beta, gamma = (
        _float(data[f"_cell_{key}"])
        for key in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")
    )
    labels = _first(data, "_atom_site_type_symbol", "_atom_site_label")
    xs, ys, zs = data["_atom_site_fract_x"], data["_atom_site_fract_y"], data["_atom_site_fract_z"]
    if isinstance(xs, str):
        labels, xs, ys, zs = [labels], [xs], [ys], [zs]
    occupancies = data.get("_atom_site_occupancy") or ["1"] * len(xs)
    if isinstance(occupancies, str):
        occupancies = [occupancies]
    elements = [_symbol(label) for label in labels]
    occupancy = np.array([1.0 if occ in ("?", ".") else _float(occ) for occ in occupancies])
    frac = np.array([[_float(x), _float(y), _float(z)] for x, y, z in zip(xs, ys, zs, strict=True)])
    # Every image of every site on a grid of SITE_TOLERANCE, as one integer per
    # (site, position): the distinct ones are the cell's atoms.
    steps = round(1 / SITE_TOLERANCE)
    images = np.einsum("nij,sj->sni", rotations, frac) + translations[None, :, :]
    grid = np.rint(images * steps).astype(np.int64) % steps
    position = (grid[..., 0] * steps + grid[..., 1]) * steps + grid[..., 2]
    span = steps**3
    keys = np.unique(np.arange(len(frac), dtype=np.int64)[:, None] * span + position)
    site, position = keys // span, keys % span
    # Rows sharing a position (mixed occupancy written as two rows) are one site.
    positions, first, group = np.unique(position, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    amounts: dict[str, float] = {}
    for index, count in enumerate(np.bincount(site, minlength=len(frac)).tolist()):
        amounts[elements[index]] = amounts.get(elements[index], 0.0) + occupancy[index] * count
    per_position = np.bincount(group, minlength=len(positions))
    ordered = bool(np.all(per_position == 1) and np.all(occupancy >= 0.99))
    lattice = _lattice(a, b, c, alpha, beta, gamma)
    number = _declared_space_group(ops, lattice)
    if number in (None, 1):  # not a group spglib can name, or P1 as written by many tools: search the atoms
        members: list[list[tuple[str, float]]] = [[] for _ in range(len(positions))]
        for index, where in zip(site.tolist(), group.tolist(), strict=True):
            members[where].append((elements[index], round(float(occupancy[index]), 3)))
        kinds = {key: i for i, key in enumerate(sorted({tuple(sorted(m)) for m in members}))}
        coords = np.stack([positions // steps**2, positions // steps % steps, positions % steps], axis=1) / steps
        number = _space_group(lattice, coords, [kinds[tuple(sorted(m))] for m in members])
    return _summary(name, amounts, number, len(positions), ordered)


def _lattice(a, b, c, alpha, beta, gamma) -> np.ndarray:
    from pymatgen.core import Lattice

    return Lattice.from_parameters(a, b, c, alpha, beta, gamma).matrix


#: Space-group type of each set of operations met (the type depends on the operations,
#: written in the lattice's basis, not on the cell lengths).
_TYPES: dict[tuple[str, ...], int | None] = {}


def _declared_space_group(ops: tuple[str, ...], lattice: np.ndarray) -> int | None:
    """The space group of the CIF's own operations, or None when spglib cannot name it."""
    if ops not in _TYPES:
        import spglib

        rotations, translations = _operations(ops)
        try:
            found = spglib.get_spacegroup_type_from_symmetry(
                np.rint(rotations).astype(np.intc), translations, lattice, symprec=1e-3
            )
        except Exception:  # spglib refuses sets that are not a group
            found = None
        _TYPES[ops] = int(found.number) if found is not None else None
    return _TYPES[ops]


def _space_group(lattice: np.ndarray, coords: np.ndarray, types: list[int]) -> int:
    import spglib

    dataset = spglib.get_symmetry_dataset((lattice, coords, types), symprec=SYMPREC_ANGSTROM)
    if dataset is None:
        raise ValueError("symmetry analysis failed (spglib found no space group)")
    return int(dataset.number)


def _summary(name, amounts: dict[str, float], number: int, nsites: int, ordered: bool) -> StructureSummary:
    from pymatgen.core import Composition

    amounts = {element: amount for element, amount in amounts.items() if amount > 1e-6}
    if not amounts:
        raise ValueError("the CIF holds no atoms")
    unknown = sorted(set(amounts) - _KNOWN)
    if unknown:
        raise ValueError(f"unknown element(s) {', '.join(unknown)}: not chemical elements from H to Pu")
    composition = Composition(amounts)
    return StructureSummary(
        file=name,
        formula=composition.formula.replace(" ", ""),
        reduced_formula=composition.reduced_formula,
        elements=sorted(amounts),
        space_group_number=number,
        nsites=nsites,
        ordered=ordered,
    )


def _pymatgen_summary(name: str, text: str) -> StructureSummary:
    structure = read_structure(text, "cif", primitive=False)
    number = space_group_number(structure, SYMPREC_ANGSTROM)
    amounts: dict[str, float] = {}
    for element, amount in structure.composition.items():
        symbol = getattr(element, "symbol", str(element))
        amounts[symbol] = amounts.get(symbol, 0.0) + float(amount)
    return _summary(name, amounts, number, len(structure), structure.is_ordered)


def parse_cif(item) -> ParsedStructure:
    """Parse one CIF into the ordered primitive structure FEFF needs, with its space group.

    Raises
    ------
    ValueError
        With the reason the CIF cannot be used for FEFF.
    """
    structure = read_structure(item.text, "cif", primitive=True)
    unknown = sorted({getattr(s, "symbol", str(s)) for s in structure.composition.elements} - _KNOWN)
    if unknown:
        raise ValueError(f"unknown element(s) {', '.join(unknown)}: not chemical elements from H to Pu")
    if not structure.is_ordered:
        raise ValueError("partial occupancy (disordered structure); FEFF needs an ordered structure")
    number = space_group_number(structure, SYMPREC_ANGSTROM)
    icsd_id, _ = _identifiers(item.name, item.text)
    return ParsedStructure(file=item.name, structure=structure, icsd_id=icsd_id, space_group_number=number)


# --- Chunks of a release, in worker processes (no Django here) -------------------------------


def summarise_files(files) -> tuple[list[StructureSummary], list[dict]]:
    """Summaries of ``ReleaseFile`` items, and the files that cannot be used, with the reason."""
    summaries, rejected = [], []
    for item in files:
        try:
            summaries.append(summarise_cif(item.name, item.text))
        except Exception as error:  # ValueError with a reason; anything else is a parser failure on odd input
            reason = str(error) if isinstance(error, ValueError) else f"cannot parse CIF: {error}"
            rejected.append({"file": item.name, "reason": reason[:300]})
    return summaries, rejected


def summarise_amcsd(ids: list[int]) -> tuple[list[StructureSummary], list[dict]]:
    """``summarise_files`` of AMCSD entries, read in this process."""
    from materials.screening.release import read_amcsd

    files, unreadable = read_amcsd(ids)
    summaries, rejected = summarise_files(files)
    return summaries, unreadable + rejected
