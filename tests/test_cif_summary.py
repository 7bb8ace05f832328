"""Stage 1's CIF summary (``materials.screening.structures.summarise_cif``) against
pymatgen's full parse, on real AMCSD entries and on the cases it must get right."""

from __future__ import annotations

import random
import warnings

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from materials.screening.release import amcsd_ids, read_amcsd
from materials.screening.structures import _pymatgen_summary, summarise_cif


def test_the_summary_agrees_with_pymatgen_on_real_amcsd_entries():
    random.seed(7)
    files, unreadable = read_amcsd(random.sample(amcsd_ids(), 120))
    assert not unreadable
    compared = formula_agrees = both_agree = 0
    for item in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference = _pymatgen_summary(item.name, item.text)
        except ValueError:
            continue  # pymatgen refuses a few AMCSD CIFs (occupancies over 1)
        summary = summarise_cif(item.name, item.text)
        compared += 1
        formula_agrees += summary.reduced_formula == reference.reduced_formula
        both_agree += (summary.reduced_formula, summary.space_group_number, summary.ordered) == (
            reference.reduced_formula,
            reference.space_group_number,
            reference.ordered,
        )
    assert compared >= 100
    assert formula_agrees / compared >= 0.97, (formula_agrees, compared)
    assert both_agree / compared >= 0.9, (both_agree, compared)


def test_a_cif_written_in_p1_gets_its_space_group_from_the_atoms():
    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    summary = summarise_cif("nacl.cif", str(CifWriter(rocksalt)))  # no symprec: written as P1
    assert (summary.reduced_formula, summary.space_group_number, summary.nsites) == ("NaCl", 225, 8)
    assert summary.ordered and not summary.has_hydrogen


def test_identifiers_and_hydrogen_are_read_from_a_real_entry():
    (portlandite,), _ = read_amcsd([116])
    summary = summarise_cif(portlandite.name, portlandite.text)
    assert summary.amcsd_id == 116 and summary.reduced_formula == "Ca(HO)2" and summary.has_hydrogen


def test_a_mixed_site_is_disordered_and_counts_both_elements():
    alloy = Structure(Lattice.cubic(2.9), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    summary = summarise_cif("feco.cif", str(CifWriter(alloy)))
    assert not summary.ordered and summary.elements == ["Co", "Fe"] and summary.nsites == 1
    assert summary.reduced_formula == "Fe0.5Co0.5" and summary.space_group_number == 221  # one mixed site, cubic: Pm-3m


def test_a_site_naming_no_element_is_refused_by_name():
    text = str(CifWriter(Structure(Lattice.cubic(3.0), ["Fe"], [[0, 0, 0]]))).replace(" Fe ", " Xq ")
    with pytest.raises(ValueError, match="unknown element"):
        summarise_cif("odd.cif", text.replace("Fe", "Xq"))
