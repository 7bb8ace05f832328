"""The paper's ICSD quality filter (Methods): refinement, temperature factors,
0.09–0.11 MPa, 285–300 K, standard deviations on the cell."""

from __future__ import annotations

import pytest

from materials.ingest.catalogues import CatalogueFormatError
from materials.ingest.icsd_quality import (
    check_quality,
    metadata_from_cif,
    normalize_metadata,
    passes_quality_filter,
    read_icsd_metadata,
)

GOOD = {
    "icsd_id": "16636",
    "r_value": "0.024",
    "temperature_factors": "yes",
    "pressure_mpa": "0.101325",
    "temperature_k": "295",
    "cell_std_devs": "yes",
}

# The head of an ICSD CIF for rutile, in ICSD's layout (values illustrative).
RUTILE_CIF = """data_16636-ICSD
_database_code_ICSD 16636
_chemical_formula_sum 'O2 Ti1'
_cell_length_a 4.5937(3)
_cell_length_b 4.5937(3)
_cell_length_c 2.9587(2)
_cell_angle_alpha 90.
_cell_angle_beta 90.
_cell_angle_gamma 90.
_cell_measurement_temperature 295
_diffrn_ambient_pressure 101.325
_refine_ls_R_factor_all 0.024
_symmetry_space_group_name_H-M 'P 42/m n m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_B_iso_or_equiv
Ti1 Ti4+ 0 0 0 0.42(2)
O1 O2- 0.3048(1) 0.3048(1) 0 0.60(3)
"""


def test_an_entry_meeting_every_criterion_passes():
    assert passes_quality_filter(GOOD) == (True, "")


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"r_value": ""}, "no structural refinement (no R value)"),
        ({"temperature_factors": "no"}, "no temperature factors"),
        ({"pressure_mpa": "0.089"}, "pressure 0.089 MPa outside 0.09-0.11 MPa"),
        ({"pressure_mpa": "2000"}, "pressure 2000 MPa outside 0.09-0.11 MPa"),
        ({"temperature_k": "284.9"}, "temperature 284.9 K outside 285-300 K"),
        ({"temperature_k": "300.5"}, "temperature 300.5 K outside 285-300 K"),
        ({"cell_std_devs": "no"}, "no standard deviations on the cell parameters"),
        ({"pressure_mpa": ""}, "pressure not recorded"),
        ({"temperature_k": ""}, "temperature not recorded"),
    ],
)
def test_each_criterion_fails_an_entry_with_its_reason(change, reason):
    assert passes_quality_filter({**GOOD, **change}) == (False, reason)


@pytest.mark.parametrize("pressure, temperature", [("0.09", "285"), ("0.11", "300"), ("0.1(1)", "293(2)")])
def test_the_ranges_include_their_ends_and_values_may_carry_uncertainties(pressure, temperature):
    assert check_quality({**GOOD, "pressure_mpa": pressure, "temperature_k": temperature}).passed


def test_every_failed_criterion_is_reported_in_the_papers_order():
    verdict = check_quality({"icsd_id": "1"})
    assert not verdict.passed
    assert verdict.reasons == (
        "no structural refinement (no R value)",
        "no temperature factors",
        "pressure not recorded",
        "temperature not recorded",
        "no standard deviations on the cell parameters",
    )


def test_unrecorded_conditions_can_be_allowed_but_recorded_ones_must_be_in_range():
    entry = {**GOOD, "pressure_mpa": "", "temperature_k": ""}
    assert passes_quality_filter(entry, allow_missing_conditions=True) == (True, "")
    hot = {**entry, "temperature_k": "400"}
    assert passes_quality_filter(hot, allow_missing_conditions=True) == (False, "temperature 400 K outside 285-300 K")


def test_icsd_export_headers_kpa_and_the_printed_cell_are_understood():
    row = {
        "CollectionCode": "16636",
        "R-value": "0.024",
        "Temperature Factors": "X",
        "Pressure (kPa)": "",
        "pressure_kpa": "101.3",
        "Temperature": "293",
        "CellParameter": "4.5937(3) 4.5937(3) 2.9587(2) 90. 90. 90.",
    }
    entry = normalize_metadata(row)
    assert entry["icsd_id"] == 16636 and entry["pressure_mpa"] == pytest.approx(0.1013)
    assert entry["cell_std_devs"] is True and entry["temperature_factors"] is True
    assert check_quality(row).passed
    assert not check_quality({**row, "CellParameter": "4.5937 4.5937 2.9587 90 90 90"}).passed


def test_a_refinement_flag_stands_in_for_a_missing_r_value():
    assert check_quality({**GOOD, "r_value": "", "structure_refined": "true"}).passed


@pytest.mark.parametrize(
    "change, message",
    [({"temperature_k": "room"}, "temperature_k 'room' is not a number"), ({"cell_std_devs": "maybe"}, "not yes/no")],
)
def test_a_value_that_cannot_be_read_is_an_error_not_a_verdict(change, message):
    with pytest.raises(ValueError, match=message):
        check_quality({**GOOD, **change})


def test_the_csv_reader_keys_entries_by_icsd_id_and_rejects_bad_rows(tmp_path):
    path = tmp_path / "icsd.csv"
    path.write_text(
        "CollectionCode,RValue,temperature_factors,pressure_mpa,temperature_k,cell_std_devs\n"
        "16636,0.024,yes,0.1,295,yes\n"
        "9852,,yes,0.1,295,yes\n"
        ",0.03,yes,0.1,295,yes\n"
        "16636,0.02,yes,0.1,295,yes\n"
        "77,0.03,yes,0.1,warm,yes\n"
    )

    entries, rejected = read_icsd_metadata(path)

    assert sorted(entries) == [9852, 16636]
    assert check_quality(entries[16636]).passed and not check_quality(entries[9852]).passed
    assert [str(r) for r in rejected] == [
        f"{path}:4: no ICSD id",
        f"{path}:5: ICSD id 16636 listed twice",
        f"{path}:6: temperature_k 'warm' is not a number",
    ]


@pytest.mark.parametrize(
    "content, message",
    [(b"formula,pressure\nTiO2,0.1\n", "no ICSD id column"), ("a,b\n1,2\n".encode("utf-16"), "not UTF-8 text")],
)
def test_a_metadata_file_that_cannot_be_read_is_refused_whole(tmp_path, content, message):
    path = tmp_path / "icsd.csv"
    path.write_bytes(content)
    with pytest.raises(CatalogueFormatError, match=message):
        read_icsd_metadata(path)


def test_metadata_is_read_from_an_icsd_cif():
    entry = metadata_from_cif(RUTILE_CIF)

    assert entry == {
        "icsd_id": 16636,
        "r_value": 0.024,
        "structure_refined": None,
        "temperature_factors": True,
        "pressure_mpa": pytest.approx(0.101325),
        "temperature_k": 295.0,
        "cell_std_devs": True,
    }
    assert check_quality(entry).passed


def test_a_cif_without_displacement_parameters_or_cell_uncertainties_fails():
    text = RUTILE_CIF.replace("4.5937(3)", "4.5937").replace("2.9587(2)", "2.9587")
    text = text.replace("_atom_site_B_iso_or_equiv\n", "").replace(" 0.42(2)", "").replace(" 0.60(3)", "")

    verdict = check_quality(metadata_from_cif(text))

    assert verdict.reasons == ("no temperature factors", "no standard deviations on the cell parameters")


def test_text_that_is_not_a_cif_is_an_error():
    with pytest.raises(ValueError, match="not a CIF"):
        metadata_from_cif("just some words")
