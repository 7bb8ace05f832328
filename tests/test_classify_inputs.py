"""What a material submitted to classify may be (``materials.learning.classify_inputs``), and reading the
files it comes in (``materials.ingest.spectrum_files``, ``materials.ingest.structure_files``): the rules
``POST /api/classify/`` and ``manage.py classify`` share. Each bad input gets its own error,
naming the field (and the element) at fault. No database, no model: these are the checks made
before a model is asked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from materials.ingest.structure_files import StructureFileError, read_structure, space_group_number
from materials.learning.classify_inputs import (
    ClassifyInputError,
    check_submission,
    read_request,
    read_structure_upload,
    spectra_from_files,
)

DATA = Path(__file__).resolve().parent.parent / "data"


def co_points() -> tuple[list[float], list[float]]:
    record = json.loads((DATA / "reference" / "licoo2_co_k_mp.json").read_text())
    return list(record["energies_ev"]), list(record["mu"])


def errors_of(call) -> dict:
    with pytest.raises(ClassifyInputError) as caught:
        call()
    return caught.value.errors


def co_errors(energies, mu, **options) -> dict:
    return errors_of(lambda: check_submission({"Co": (energies, mu)}, **options))["spectra"]["Co"]


# --- Spectra: each problem its own message, under its field --------------------------------------------


def test_a_good_spectrum_with_formula_and_space_group_is_taken_as_it_is():
    energies, mu = co_points()
    submission = check_submission({"Co": (energies, mu)}, formula="LiCoO2", space_group=166)
    assert submission.composition_source == "formula" and submission.space_group_source == "payload"
    assert submission.composition == pytest.approx({"Li": 0.25, "Co": 0.25, "O": 0.5})
    assert submission.spectra["Co"][0].dtype == np.float64 and submission.spectra["Co"][0].tolist() == energies


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda e, m: (e, m[:7] + [math.nan] + m[8:]), "mu", "mu[7] is NaN"),
        (lambda e, m: (e[:3] + [math.inf] + e[4:], m), "energies_ev", "energies_ev[3] is infinite"),
        (lambda e, m: (e[:9], m[:9]), "energies_ev", "9 points; at least 10 are needed"),
        (lambda e, m: (e, m[:-1]), "mu", "99 mu values but 100 energies"),
        (lambda e, m: ([x - 3000 for x in e], m), "energies_ev", "outside the Co K-edge region"),
        (lambda e, m: (e[:5] + [e[6], e[5]] + e[7:], m), "energies_ev", "index 6 decreases"),
        (lambda e, m: (e[:10] + [e[9]] + e[11:], m), "energies_ev", "index 10 repeats"),
        (lambda e, m: (e, m[:4] + ["abc"] + m[5:]), "mu", "item 4 is 'abc'"),
        (lambda e, m: ("7700", m), "energies_ev", "Expected a list of numbers but got str"),
    ],
)
def test_each_bad_spectrum_is_refused_under_its_field(change, field, message):
    errors = co_errors(*change(*co_points()))
    assert list(errors) == [field] and message in errors[field][0]


def test_unsorted_points_are_refused_with_a_hint_and_taken_when_sorting_is_asked():
    energies, mu = co_points()
    energies[5], energies[6] = energies[6], energies[5]
    assert "(set sort_energies to sort digitised data first)" in co_errors(energies, mu)["energies_ev"][0]
    submission = check_submission({"Co": (energies, mu)}, sort_energies=True)
    assert np.all(np.diff(submission.spectra["Co"][0]) > 0)


def test_duplicates_are_refused_even_when_sorting():
    energies, mu = co_points()
    energies[10] = energies[9]
    assert "repeats" in co_errors(energies, mu, sort_energies=True)["energies_ev"][0]


def test_unknown_elements_and_no_spectra():
    energies, mu = co_points()
    errors = errors_of(lambda: check_submission({"Xx": (energies, mu), "He": (energies, mu)}))["spectra"]
    assert "unknown absorbing element 'Xx'" in errors["Xx"][0] and "H or He" in errors["He"][0]
    assert errors_of(lambda: check_submission({}))["spectra"] == ["give at least one spectrum"]


# --- Formula, space group, structure --------------------------------------------------------------------


def test_formula_and_space_group_errors_are_reported_together():
    energies, mu = co_points()
    errors = errors_of(lambda: check_submission({"Co": (energies, mu)}, formula="LiQq2", space_group=231))
    assert set(errors) == {"formula", "space_group"} and "outside 1-230" in errors["space_group"][0]


def test_a_spectrum_of_an_element_outside_the_formula():
    energies, mu = co_points()
    errors = errors_of(lambda: check_submission({"Co": (energies, mu)}, formula="TiO2"))
    assert errors == {"spectra": {"Co": ["Co is not in the material's composition"]}}


def test_a_structure_gives_composition_and_space_group():
    structure = read_structure((DATA / "structures" / "LiCoO2_mp24850.cif").read_text())
    submission = check_submission({"Co": co_points()}, structure=structure.as_dict())
    assert submission.composition_source == "structure" and submission.space_group_source == "structure"
    assert submission.space_group == 166 and set(submission.composition) == {"Li", "Co", "O"}


def test_a_structure_that_disagrees_with_the_formula():
    structure = read_structure((DATA / "structures" / "LiCoO2_mp24850.cif").read_text())
    errors = errors_of(lambda: check_submission({"Co": co_points()}, formula="CoO", structure=structure))
    assert "elements of the formula and of the structure differ" in errors["formula"][0]


def test_a_disordered_structure_is_refused_whichever_way_it_comes():
    path = Path(__file__).resolve().parent / "bad_inputs" / "structure_partial_occupancy.cif"
    structure = read_structure_upload(path.name, path.read_bytes())
    for given in (structure, structure.as_dict()):
        errors = errors_of(lambda given=given: check_submission({"Co": co_points()}, structure=given))
        assert "partial occupancy (disordered structure)" in errors["structure"][0]


def test_malformed_structures():
    errors = errors_of(lambda: check_submission({"Co": co_points()}, structure={"sites": []}))
    assert "non-empty 'sites'" in errors["structure"][0]
    errors = errors_of(lambda: read_structure_upload("prose.cif", b"not a crystal"))
    assert errors["structure"][0].startswith("cannot read prose.cif: ")


# --- The JSON request body -------------------------------------------------------------------------------


def test_the_request_body_is_checked_field_by_field():
    assert "expected a JSON object" in errors_of(lambda: read_request([1, 2]))["non_field_errors"][0]
    assert errors_of(lambda: read_request({}))["spectra"] == ["This field is required."]
    errors = errors_of(lambda: read_request({"spectra": {"Co": {"mu": [1]}}, "space_group": "x"}))
    assert errors["spectra"]["Co"] == {"energies_ev": ["This field is required."]}
    assert errors["space_group"] == ["A valid integer is required."]
    assert "boolean" in errors_of(lambda: read_request({"spectra": {}, "sort_energies": "maybe"}))["sort_energies"][0]


def test_the_request_body_and_the_values_give_the_same_submission():
    energies, mu = co_points()
    body = {"spectra": {"Co": {"energies_ev": energies, "mu": mu}}, "formula": "LiCoO2", "space_group": "166"}
    from_body = read_request(body)
    from_values = check_submission({"Co": (energies, mu)}, formula="LiCoO2", space_group=166)
    assert from_body.space_group == from_values.space_group == 166
    assert from_body.composition == from_values.composition
    assert np.array_equal(from_body.spectra["Co"][1], from_values.spectra["Co"][1])


def test_the_error_reads_as_one_line_per_field():
    energies, mu = co_points()
    with pytest.raises(ClassifyInputError) as caught:
        check_submission({"Co": (energies, mu[:-1])}, space_group=0)
    assert str(caught.value).startswith("spectra.Co.mu: 99 mu values but 100 energies")
    assert "space_group: space group 0 is outside 1-230" in str(caught.value)


# --- Files ------------------------------------------------------------------------------------------------


def test_csv_and_xdi_files_give_the_same_points():
    energies, mu = co_points()
    csv = "energy,mu\n" + "".join(f"{e},{m}\n" for e, m in zip(energies, mu, strict=True))
    xdi = "# XDI/1.0\n# Column.1: energy eV\n# Column.2: mutrans\n# Element.symbol: Co\n# Element.edge: K\n#---\n"
    xdi += "".join(f"{e} {m}\n" for e, m in zip(energies, mu, strict=True))
    from_csv = spectra_from_files([("co.csv", csv.encode())], "Co")
    from_xdi = spectra_from_files([("co.xdi", xdi.encode())])
    assert from_csv == from_xdi == {"Co": (energies, mu)}


def test_two_spectra_of_one_element_and_unreadable_files_name_the_file():
    energies, mu = co_points()
    csv = ("energy,mu\n" + "".join(f"{e},{m}\n" for e, m in zip(energies, mu, strict=True))).encode()
    errors = errors_of(lambda: spectra_from_files([("a.csv", csv), ("b.csv", csv)], "Co"))
    assert errors == {"file": ["b.csv: a second Co spectrum"]}
    errors = errors_of(lambda: spectra_from_files([("c.csv", csv)]))
    assert errors["file"][0].startswith("c.csv: ") and "absorbing element is not given" in errors["file"][0]


def test_one_structure_parse_for_cif_and_poscar():
    cif = read_structure((DATA / "structures" / "LiCoO2_mp24850.cif").read_text(), "cif")
    poscar = read_structure((DATA / "structures" / "mp-390.POSCAR").read_text(), "poscar")
    assert cif.composition.reduced_formula == "LiCoO2" and space_group_number(cif) == 166
    assert poscar.composition.reduced_formula == "TiO2" and space_group_number(poscar) == 141
    with pytest.raises(StructureFileError, match="cannot parse CIF: "):
        read_structure("data_x\n_cell_length_a 3\n")
