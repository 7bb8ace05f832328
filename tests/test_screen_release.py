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
def test_screen_a_folder_of_cifs_some_bad(production, tmp_path, monkeypatch):
    from materials.tasks.classify import screen_release

    release = tmp_path / "release"
    release.mkdir()
    known = list(Material.objects.filter(has_spectra=True, structure_source="amcsd").order_by("id")[:2])
    for material in known:
        CifWriter(material.get_structure()).write_file(release / f"known-{material.pk}.cif")
    # A new material: fcc aluminium is not in the loaded subset, so its Al K edge is computed with FEFF.
    assert not Material.objects.filter(reduced_formula="Al").exists()
    aluminium = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.05), ["Al"], [[0, 0, 0]])
    CifWriter(aluminium).write_file(release / "aluminium.cif")
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
    assert counts["files"] == 5 and counts["parsed"] == 3 and counts["unparseable"] == 2
    assert counts["existing_materials"] == 2 and counts["new_materials"] == 1
    assert counts["spectra_computed"] == 1 and counts["spectra_failed"] == 0
    assert counts["classified"] == 3
    text = out.getvalue()
    assert "rejected structure_not_a_cif.cif: cannot parse CIF" in text
    assert "rejected structure_partial_occupancy.cif: partial occupancy (disordered structure)" in text
    assert f"  classified           {counts['classified']}" in text
    assert Spectrum.objects.count() == spectra_before + 1
    new = Material.objects.get(reduced_formula="Al")
    assert new.spectra.get().source == Spectrum.Source.FEFF and new.has_spectra

    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert len(rows) == 3
    assert {int(row["material_id"]) for row in rows} == {new.pk, *(material.pk for material in known)}
    probabilities = [float(row["probability"]) for row in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert [int(row["rank"]) for row in rows] == [1, 2, 3]
    stored = dict(Prediction.objects.filter(model_version=production).values_list("material_id", "probability"))
    assert all(stored[int(row["material_id"])] == pytest.approx(float(row["probability"])) for row in rows)
