"""Composition and symmetry facts about a material, from its formula and space group."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

from pymatgen.core import Composition, Element

# pymatgen warns once per noble gas while building its element table; it is noise here.
warnings.filterwarnings("ignore", message="No Pauling electronegativity")


@dataclass(frozen=True)
class Symmetry:
    number: int
    symbol: str
    point_group: str
    crystal_system: str


@lru_cache(maxsize=256)
def symmetry_of(space_group_number: int) -> Symmetry:
    """Hermann–Mauguin symbol, point group and crystal system of a space group.

    Raises
    ------
    ValueError
        If the number is not in 1–230.
    """
    from pymatgen.symmetry.groups import SpaceGroup

    number = int(space_group_number)
    if not 1 <= number <= 230:
        raise ValueError(f"space group must be in 1-230, got {space_group_number!r}")
    group = SpaceGroup.from_int_number(number)
    return Symmetry(number, group.symbol, group.point_group, group.crystal_system)


@dataclass(frozen=True)
class ParsedFormula:
    formula: str
    reduced_formula: str
    elements: list[str]
    fractions: dict[str, float]


@lru_cache(maxsize=65536)
def parse_formula(formula: str) -> ParsedFormula:
    """Parse a chemical formula ("Na5P3(H3O4)4", "Ag1F6Pd1").

    Raises
    ------
    ValueError
        If the formula is empty or names an element that does not exist.
    """
    text = (formula or "").strip()
    if not text:
        raise ValueError("empty formula")
    try:
        composition = Composition(text)
    except Exception as error:  # pymatgen raises several types for bad formulas
        raise ValueError(f"cannot parse formula {formula!r}: {error}") from None
    if composition.num_atoms <= 0:
        raise ValueError(f"formula {formula!r} has no atoms")
    # pymatgen accepts made-up symbols ("Qq2") as dummy species; a catalogue must not.
    unknown = sorted(getattr(el, "symbol", str(el)) for el in composition.elements if not isinstance(el, Element))
    if unknown:
        raise ValueError(f"formula {formula!r} names unknown element(s) {', '.join(unknown)}")
    fractions = {str(el): float(amount) for el, amount in composition.fractional_composition.items()}
    return ParsedFormula(
        formula=text,
        reduced_formula=composition.reduced_formula,
        elements=sorted(fractions),
        fractions=fractions,
    )
