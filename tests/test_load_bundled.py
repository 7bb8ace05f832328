import json

import pytest
from django.core.management import CommandError, call_command

from materials.models import Material, Spectrum, TopologyLabel


def counts():
    return (Material.objects.count(), Spectrum.objects.count(), TopologyLabel.objects.count())


@pytest.mark.django_db
def test_it_loads_materials_spectra_labels_and_structures(data_subset):
    call_command("load_bundled", "--data-dir", str(data_subset), "--no-progress")
    materials, spectra, labels = counts()
    jsonl_lines = len((data_subset / "spectra" / "spectra.jsonl").read_text().splitlines())
    # FEFF head start + MP LiCoO2 reference + Lightshow FEFF anatase + measured anatase
    assert spectra == jsonl_lines + 3
    assert labels > 40 and materials >= 49
    licoo2 = Material.objects.get(mp_id="mp-24850")
    assert licoo2.get_structure().composition.reduced_formula == "LiCoO2"
    assert licoo2.spectra.get().source == "materials_project"
    assert Material.objects.filter(structure_source="amcsd").count() == 6
    # Complete compounds (a spectrum for every element) are the usable samples.
    complete = Material.objects.filter(has_spectra=True)
    assert complete.exists()
    for material in complete:
        assert set(material.elements) == set(material.spectra.values_list("element", flat=True))


@pytest.mark.django_db
def test_a_second_load_changes_nothing(data_subset):
    call_command("load_bundled", "--data-dir", str(data_subset), "--no-progress")
    first = counts()
    spectra_before = list(Spectrum.objects.values_list("id", "created"))
    labels_before = list(TopologyLabel.objects.order_by("id").values_list("id", "raw_class", "binary_class"))
    call_command("load_bundled", "--data-dir", str(data_subset), "--no-progress")
    assert counts() == first
    assert list(Spectrum.objects.values_list("id", "created")) == spectra_before
    assert list(TopologyLabel.objects.order_by("id").values_list("id", "raw_class", "binary_class")) == labels_before


@pytest.mark.django_db
def test_it_maps_catalogue_classes_to_binary_and_keeps_raw_class_and_tags(data_subset):
    call_command("load_bundled", "--data-dir", str(data_subset), "--no-progress")
    materiae = TopologyLabel.objects.filter(catalogue="materiae")
    assert set(materiae.filter(binary_class="topological").values_list("raw_class", flat=True)) <= {
        "TI",
        "TCI",
        "HSP_SM",
        "HSL_SM",
    }
    assert set(materiae.filter(binary_class="trivial").values_list("raw_class", flat=True)) == {"Triv_Ins"}
    assert all(tag.startswith("NSOC:") for tags in materiae.values_list("tags", flat=True) for tag in tags)
    assert TopologyLabel.objects.filter(catalogue="arsenal", raw_class="case1", binary_class="trivial").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "relative_path, line_number, corrupt, message",
    [
        ("spectra/spectra.jsonl", 3, lambda line: line[: len(line) // 2], "spectra.jsonl:3: invalid JSON"),
        (
            "spectra/spectra.jsonl",
            2,
            lambda line: line.replace('"mu": [', '"mu": [NaN, ', 1),
            "spectra.jsonl:2: S spectrum: 101 mu values but 100 energies",
        ),
        (
            "labels/materiae_labels.csv",
            5,
            lambda line: line.replace(",Triv_Ins,", ",Bogus,", 1),
            "materiae_labels.csv:5: unknown materiae class 'Bogus'",
        ),
        (
            "spectra/spectra.jsonl",
            1,
            lambda line: line.replace('"element": "Cu"', '"element": "Zn"', 1),
            "spectra.jsonl:1: absorbing element 'Zn' is not in the formula CuS",
        ),
        ("labels/arsenal_ti.txt", 4, lambda line: "not a line", "arsenal_ti.txt:4: expected 'spacegroup, formula'"),
    ],
)
def test_a_malformed_file_names_file_and_line_and_loads_nothing(
    data_subset, relative_path, line_number, corrupt, message
):
    path = data_subset / relative_path
    lines = path.read_text().splitlines()
    lines[line_number - 1] = corrupt(lines[line_number - 1])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CommandError) as raised:
        call_command("load_bundled", "--data-dir", str(data_subset), "--no-progress")
    assert message in str(raised.value)
    assert counts() == (0, 0, 0)


@pytest.mark.django_db
def test_it_rejects_a_missing_data_folder(tmp_path):
    with pytest.raises(CommandError, match="no such folder"):
        call_command("load_bundled", "--data-dir", str(tmp_path / "nope"), "--no-progress")


@pytest.mark.django_db
def test_extension_spectra_carry_their_own_release_and_library_versions(data_subset):
    from materials.ingest.bundled import FEFF_EXTENSION_RELEASE, FEFF_HEAD_START_RELEASE
    from tests.conftest import DATA

    head_start = (data_subset / "spectra" / "spectra.jsonl").read_text().splitlines()
    # The first line of the real extension file, and its compound's Materiae row.
    extra = (DATA / "spectra" / "spectra_extra.jsonl").read_text().splitlines()[0]
    (data_subset / "spectra" / "spectra_extra.jsonl").write_text(extra + "\n")
    materiae_id = json.loads(extra)["materiae_id"]
    catalogue = (DATA / "labels" / "materiae_labels.csv").read_text().splitlines()
    row = next(line for line in catalogue if line.startswith(materiae_id + ","))
    with open(data_subset / "labels" / "materiae_labels.csv", "a") as handle:
        handle.write(row + "\n")
    call_command("load_bundled", "--data-dir", str(data_subset), "--no-progress")
    feff = Spectrum.objects.filter(source="feff")
    assert feff.filter(source_release=FEFF_HEAD_START_RELEASE).count() >= len(head_start)
    added = feff.get(source_release=FEFF_EXTENSION_RELEASE)
    assert added.settings["library_versions"]["feff10-rs"] == "0.2.4"
    assert added.settings["preset"] == "fast"
