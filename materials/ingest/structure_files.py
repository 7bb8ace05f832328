"""Reading a structure file (CIF or POSCAR) into a pymatgen ``Structure``, and its space group:
the one home of that parse, for the bundled data (``bundled.py``), a screened release's
structures (``screening/structures.py``, stage 2 and the slow path of stage 1) and a structure
submitted to classify (``classify_inputs.py``).

Stage 1 of a screening reads most CIFs without building a ``Structure`` at all
(``screening.structures.summarise_cif``, a few milliseconds); a CIF that path cannot read
comes here.
"""

from __future__ import annotations

import warnings

#: spglib's tolerance for the space group of a structure, in Ångström.
SYMPREC_ANGSTROM = 0.1
FORMATS = ("cif", "poscar")


class StructureFileError(ValueError):
    """A structure file pymatgen cannot read: ``reason`` is pymatgen's first line."""

    def __init__(self, reason: str, fmt: str = "cif") -> None:
        super().__init__(f"cannot parse {fmt.upper()}: {reason}")
        self.reason, self.fmt = reason, fmt


def structure_format(name: str) -> str:
    """``poscar`` for VASP files by their name (``*.poscar``, ``*.vasp``, ``POSCAR*``), else ``cif``."""
    return "poscar" if name.lower().endswith((".poscar", ".vasp")) or "POSCAR" in name else "cif"


def decode_structure(raw: bytes) -> str:
    """A structure file's text: UTF-8 (with or without a byte-order mark), else Latin-1."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_structure(text: str, fmt: str = "cif", *, primitive: bool = True, keep_oxidation_states: bool = False):
    """The first structure in ``text`` (a CIF's primitive cell when ``primitive``).

    Species with oxidation states (ICSD CIFs name ``Co3+``) become their elements unless
    ``keep_oxidation_states``; a dummy species (not an element) is left for the caller to
    name.

    Raises
    ------
    StructureFileError
        With pymatgen's reason (first line, at most 200 characters), or "the CIF holds no
        structure".
    """
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifParser

    if fmt not in FORMATS:
        raise ValueError(f"unknown structure format {fmt!r}; expected one of {', '.join(FORMATS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if fmt == "poscar":
                structure = Structure.from_str(text, fmt="poscar")
            else:
                structures = CifParser.from_str(text).parse_structures(primitive=primitive)
                if not structures:
                    raise StructureFileError("the CIF holds no structure", fmt)
                structure = structures[0]
        except StructureFileError:
            raise
        except Exception as error:  # pymatgen raises many types for malformed files
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise StructureFileError(reason[:200], fmt) from None
    if not keep_oxidation_states:
        try:
            structure.remove_oxidation_states()
        except ValueError:
            pass  # a dummy species (not an element): the caller's element check names it
    return structure


def space_group_number(structure, symprec: float = SYMPREC_ANGSTROM) -> int:
    """The structure's space group number (spglib, ``symprec`` Å).

    Raises
    ------
    ValueError
        "symmetry analysis failed: ..." when spglib finds none (disorder, overlapping sites).
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number())
        except Exception as error:  # spglib failures surface as several types
            raise ValueError(f"symmetry analysis failed: {error}") from None
