"""``manage.py screen`` end to end on a folder of real CIFs, some bad: stored spectra for
the known structures, FEFF for the new one, per-stage counts, rejected files with their
reasons, and a ranked CSV."""

import csv
import io
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from materials.models import Material, Prediction, ScreeningBatch, Spectrum
from tests.api_support import train_and_promote
from tests.conftest import make_subset

BAD_INPUTS = Path(__file__).resolve().parent / "bad_inputs"


@pytest.fixture
def production(db, settings, tmp_path):
    from materials.bundled import load_bundled

    settings.MEDIA_ROOT = tmp_path / "media"
    load_bundled(make_subset(tmp_path / "data", n_compounds=30))
    return train_and_promote("svm-sg")


@pytest.mark.django_db
@pytest.mark.parametrize("feff_processes", [1, 2])
def test_screen_a_folder_of_cifs_some_bad(production, tmp_path, monkeypatch, settings, feff_processes):
    """With one FEFF process (as inside a Celery worker) and with two (the CLI on a laptop)."""
    from materials.tasks.classify import screen_release

    release = tmp_path / "release"
    release.mkdir()
    known = list(Material.objects.filter(has_spectra=True, structure_source="amcsd").order_by("id")[:2])
    for material in known:
        CifWriter(material.get_structure()).write_file(release / f"known-{material.pk}.cif")
    # New materials, not in the loaded subset: their K edges (Al; K and Br) are computed with FEFF.
    assert not Material.objects.filter(reduced_formula__in=["Al", "KBr"]).exists()
    aluminium = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.05), ["Al"], [[0, 0, 0]])
    CifWriter(aluminium).write_file(release / "aluminium.cif")
    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(6.60), ["K", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    CifWriter(rocksalt).write_file(release / "kbr.cif")
    settings.SCREEN_FEFF_PROCESSES = feff_processes
    for name in ("structure_not_a_cif.cif", "structure_partial_occupancy.cif"):
        shutil.copy(BAD_INPUTS / name, release / name)
    # Run the screening task here, as a worker would (without a broker it would run eagerly on commit).
    monkeypatch.setattr(
        "materials.management.commands.screen.start_screening_batch",
        lambda batch_id: screen_release.apply(args=[batch_id]),
    )
    spectra_before = Spectrum.objects.count()

    out = StringIO()
    output = tmp_path / "ranked.csv"
    call_command("screen", str(release), "--name", "monday", "--output", str(output), stdout=out)

    batch = ScreeningBatch.objects.get(name="monday")
    assert batch.status == "done", batch.error
    counts = batch.stage_counts
    assert counts["files"] == 6 and counts["parsed"] == 4 and counts["unparseable"] == 2
    assert counts["existing_materials"] == 2 and counts["new_materials"] == 2
    assert counts["spectra_computed"] == 3 and counts["spectra_failed"] == 0
    assert counts["classified"] == 4
    text = out.getvalue()
    assert "rejected structure_not_a_cif.cif: cannot parse CIF" in text
    assert "rejected structure_partial_occupancy.cif: partial occupancy (disordered structure)" in text
    assert f"  classified           {counts['classified']}" in text
    assert Spectrum.objects.count() == spectra_before + 3
    new = Material.objects.filter(reduced_formula__in=["Al", "KBr"])
    for material in new:
        assert set(material.spectra.values_list("source", flat=True)) == {Spectrum.Source.FEFF}
        assert material.has_spectra and material.spectra.count() == len(material.elements)

    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert len(rows) == 4
    assert {int(row["material_id"]) for row in rows} == {*(m.pk for m in new), *(m.pk for m in known)}
    probabilities = [float(row["probability"]) for row in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert [int(row["rank"]) for row in rows] == [1, 2, 3, 4]
    stored = dict(Prediction.objects.filter(model_version=production).values_list("material_id", "probability"))
    assert all(stored[int(row["material_id"])] == pytest.approx(float(row["probability"])) for row in rows)
