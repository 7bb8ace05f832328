"""``manage.py import_labels``: catalogue files in, idempotent labels out."""

from __future__ import annotations

import hashlib
import shutil
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from materials.models import Job, Material, Status, TopologyLabel

pytestmark = pytest.mark.django_db

# A TQC file in the documented format, for the format's sake: real compounds and ICSD ids
# (from Materiae), classes chosen to exercise the mapping, not copied from TQC.
TQC_ROWS = """icsd_id,formula,spacegroup,class
617101,Bi2Se3,166,NLC
16636,TiO2,136,LCEBR
32106,CuS,194,ES
65089,SrTiO3,221,LCEBR
"""


def import_labels(*args) -> str:
    out = StringIO()
    call_command("import_labels", *map(str, args), "--no-progress", stdout=out, stderr=StringIO())
    return out.getvalue()


def counts() -> tuple[int, int]:
    return Material.objects.count(), TopologyLabel.objects.count()


def test_a_materiae_file_imports_materials_and_labels_keeping_raw_class_and_tags(data_subset):
    path = data_subset / "labels" / "materiae_labels.csv"
    rows = len(path.read_text().splitlines()) - 1

    output = import_labels("--catalogue", "materiae", path)

    assert f"Imported {rows} materiae rows" in output
    labels = TopologyLabel.objects.filter(catalogue="materiae")
    assert Material.objects.count() == rows and 0 < labels.count() <= rows
    assert f"labels {labels.count()} new, 0 updated, 0 unchanged" in output
    ti4o5 = Material.objects.get(mp_id="mp-10734")
    label = ti4o5.labels.get()
    assert (label.raw_class, label.binary_class, label.tags) == ("TI", "topological", ["NSOC:HSL_SM"])
    assert ti4o5.label == "topological" and 77697 in ti4o5.icsd_ids
    assert "TI → topological:" in output and "Triv_Ins → trivial:" in output


def test_importing_the_same_file_again_changes_nothing(data_subset):
    path = data_subset / "labels" / "materiae_labels.csv"
    import_labels("--catalogue", "materiae", path)
    before = counts()
    rows = sorted(TopologyLabel.objects.values_list("id", "raw_class", "binary_class", "tags", "source_release"))

    output = import_labels("--catalogue", "materiae", path)

    assert counts() == before
    assert (
        sorted(TopologyLabel.objects.values_list("id", "raw_class", "binary_class", "tags", "source_release")) == rows
    )
    assert f"materials 0 new; labels 0 new, 0 updated, {before[1]} unchanged" in output


def test_an_arsenal_list_takes_its_class_from_the_file_name(data_subset):
    output = import_labels("--catalogue", "arsenal", data_subset / "labels" / "arsenal_ti.txt")

    assert set(TopologyLabel.objects.values_list("catalogue", "raw_class", "binary_class")) == {
        ("arsenal", "TI", "topological")
    }
    assert "TI → topological:" in output


def test_an_arsenal_list_whose_name_tells_no_class_needs_raw_class(data_subset, tmp_path):
    path = tmp_path / "semimetals.txt"
    shutil.copy(data_subset / "labels" / "arsenal_case3.txt", path)

    with pytest.raises(CommandError, match="cannot tell the Arsenal class from the file name; pass --raw-class"):
        import_labels("--catalogue", "arsenal", path)
    assert counts() == (0, 0)

    import_labels("--catalogue", "arsenal", "--raw-class", "case1", path)
    assert set(TopologyLabel.objects.values_list("raw_class", "binary_class")) == {("case1", "trivial")}


def test_raw_class_is_refused_for_catalogues_that_name_the_class_per_row(data_subset):
    with pytest.raises(CommandError, match="applies to Arsenal lists only"):
        import_labels("--catalogue", "materiae", "--raw-class", "TI", data_subset / "labels" / "materiae_labels.csv")


def test_a_tqc_file_labels_materials_by_icsd_id(tmp_path):
    path = tmp_path / "tqc.csv"
    path.write_text(TQC_ROWS)

    output = import_labels("--catalogue", "tqc", path)

    assert "Imported 4 tqc rows" in output
    bi2se3 = Material.objects.get(reduced_formula="Bi2Se3")
    assert bi2se3.icsd_ids == [617101] and bi2se3.space_group_number == 166
    assert bi2se3.labels.get().binary_class == "topological" and bi2se3.label == "topological"
    assert Material.objects.get(reduced_formula="SrTiO3").label == "trivial"


def test_tqc_labels_join_the_catalogue_material_with_the_same_icsd_id(data_subset, tmp_path):
    import_labels("--catalogue", "materiae", data_subset / "labels" / "materiae_labels.csv")
    materials = Material.objects.count()
    path = tmp_path / "tqc.csv"
    path.write_text(TQC_ROWS)

    import_labels("--catalogue", "tqc", path)

    rutile = Material.objects.get(mp_id="mp-2657")  # Materiae lists ICSD 16636 for it
    assert set(rutile.labels.values_list("catalogue", "raw_class")) == {("materiae", "Triv_Ins"), ("tqc", "LCEBR")}
    assert Material.objects.count() < materials + 4


def test_rejected_rows_are_listed_with_file_line_and_reason_while_good_rows_import(tmp_path):
    path = tmp_path / "tqc.csv"
    path.write_text(TQC_ROWS + "12,Bi2Se3,400,NLC\nxx,Bi2Se3,166,NLC\n13,Bi2Se(3,166,NLC\n14,Bi2Se3,166,Bogus\n")

    output = import_labels("--catalogue", "tqc", path)

    assert "Imported 4 tqc rows" in output and "4 row(s) rejected:" in output
    assert f"{path}:6: space group 400 is outside 1-230" in output
    assert f"{path}:7: icsd_id 'xx' is not an integer" in output
    assert f"{path}:8: cannot parse formula 'Bi2Se(3'" in output
    assert f"{path}:9: unknown tqc class 'Bogus'" in output
    assert TopologyLabel.objects.count() == 4


def test_strict_stops_at_any_rejected_row_and_stores_nothing(tmp_path):
    path = tmp_path / "tqc.csv"
    path.write_text(TQC_ROWS + "12,Bi2Se3,400,NLC\n")

    with pytest.raises(CommandError, match="nothing was imported: .*1 row\\(s\\) rejected and --strict is set"):
        import_labels("--catalogue", "tqc", "--strict", path)

    assert counts() == (0, 0)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"formula,spacegroup\nBi2Se3,166\n", "missing column(s) materiae_id, mp_id, icsd_ids"),
        ("materiae_id,formula\nMAT1,Bi₂Se₃\n".encode("utf-16"), "not UTF-8 text (bad byte at offset 0)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8 text"),
        (b'{"materials": [{"formula": "Bi2Se3"}]}', "missing column(s)"),
        (b"", "missing column(s)"),
    ],
    ids=["missing-columns", "utf-16", "binary", "json", "empty"],
)
def test_a_file_that_cannot_be_read_at_all_names_the_problem_and_changes_nothing(
    data_subset, tmp_path, content, message
):
    import_labels("--catalogue", "arsenal", data_subset / "labels" / "arsenal_tci.txt")
    before = counts()
    path = tmp_path / "materiae.csv"
    path.write_bytes(content)

    with pytest.raises(CommandError) as raised:
        import_labels("--catalogue", "materiae", path)

    assert message in str(raised.value) and str(path) in str(raised.value)
    assert counts() == before


def test_a_csv_given_as_an_arsenal_list_is_refused_whole(data_subset):
    with pytest.raises(CommandError, match="no row could be read as a arsenal file"):
        import_labels("--catalogue", "arsenal", "--raw-class", "TI", data_subset / "labels" / "materiae_labels.csv")
    assert counts() == (0, 0)


def test_the_release_is_recorded_on_each_label(tmp_path):
    path = tmp_path / "tqc.csv"
    path.write_text(TQC_ROWS)

    import_labels("--catalogue", "tqc", path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert set(TopologyLabel.objects.values_list("source_release", flat=True)) == {f"tqc tqc.csv sha256:{digest}"}

    output = import_labels("--catalogue", "tqc", "--release", "TQC (Vergniory et al. 2019)", path)
    assert set(TopologyLabel.objects.values_list("source_release", flat=True)) == {"TQC (Vergniory et al. 2019)"}
    assert "labels 0 new, 4 updated, 0 unchanged" in output


def test_the_import_task_records_its_result_on_the_job(tmp_path):
    from materials.tasks.ingest import import_labels as import_task

    path = tmp_path / "tqc.csv"
    path.write_text(TQC_ROWS + "12,Bi2Se3,400,NLC\n")
    job = Job.objects.create(kind=Job.Kind.IMPORT_LABELS, parameters={"catalogue": "tqc", "path": str(path)})

    import_task.apply(args=[job.pk])

    job.refresh_from_db()
    assert job.status == Status.DONE, job.error
    assert job.result["labels_created"] == 4 and job.result["rejected"] == [
        f"{path}:6: space group 400 is outside 1-230"
    ]
