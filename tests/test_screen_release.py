"""Screening a release in two stages, end to end on real CIFs.

Stage 1: every parsed structure of a zip (real AMCSD entries, structures of stored
materials, a disordered and a hydrogen-bearing one, a broken file) gets the prior, in
bulk, with a bounded number of queries. Stage 2: the FEFF budget's material is computed
by a real Celery worker on the ``feff`` queue and classified from its spectra; a worker
killed mid-job loses nothing, and re-running the screening computes nothing twice.
"""

from __future__ import annotations

import csv
import io
import zipfile
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from materials.models import Job, Material, ModelVersion, Prediction, ScreeningBatch, ScreeningRow, Spectrum, Status
from materials.screening import stage1, stage2
from materials.screening.release import amcsd_ids, read_amcsd
from tests.api_support import train_and_promote
from tests.conftest import make_subset

BAD_INPUTS = Path(__file__).resolve().parent / "bad_inputs"
#: Real AMCSD entries: galena, clausthalite, altaite (new compounds); portlandite, Ca(OH)2 (hydrogen).
AMCSD_ENTRIES = [3, 4, 5, 116]


def train_prior():
    from unittest import mock

    from materials.learning import training

    with mock.patch("materials.tasks.base.enqueue_on_commit"):
        run = training.request_training("type-only")
    training.train_model_version(run.pk)
    return ModelVersion.objects.get(pk=run.model_version_id)


@pytest.fixture
def models(settings, tmp_path):
    """The bundled subset, a type-only prior and a promoted spectral model (SVM-sg)."""
    from materials.ingest.bundled import load_bundled

    settings.MEDIA_ROOT = str(tmp_path / "media")
    load_bundled(make_subset(tmp_path / "data", n_compounds=30))
    prior = train_prior()
    return prior, train_and_promote("svm-sg")


def release_zip(tmp_path: Path, extra: dict[str, str] | None = None) -> tuple[Path, list[Material]]:
    """Known structures, real AMCSD entries, a disordered and a broken CIF, in one zip."""
    known = list(Material.objects.filter(has_spectra=True, structure_source="amcsd").order_by("id")[:2])
    files, _ = read_amcsd(AMCSD_ENTRIES)
    members = {item.name: item.text for item in files}
    for material in known:
        members[f"known-{material.pk}.cif"] = str(CifWriter(material.get_structure()))
    for name in ("structure_not_a_cif.cif", "structure_partial_occupancy.cif"):
        members[name] = (BAD_INPUTS / name).read_text()
    members.update(extra or {})
    path = tmp_path / "release.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path, known


def run_in_process(monkeypatch):
    """The screening task runs here, as a worker would run it."""
    from materials.tasks.classify import screen_release

    monkeypatch.setattr(
        "materials.screening.background.start_screening_batch",
        lambda batch_id: screen_release.apply(args=[batch_id]),
    )


@pytest.mark.django_db
def test_stage_one_ranks_every_parsed_structure_and_says_why_each_stops(models, tmp_path, monkeypatch):
    prior, spectral = models
    path, known = release_zip(tmp_path)
    run_in_process(monkeypatch)
    spectra_before = Spectrum.objects.count()
    out, output = StringIO(), tmp_path / "ranked.csv"

    call_command("screen", str(path), "--name", "monday", "--output", str(output), stdout=out)

    batch = ScreeningBatch.objects.get(name="monday")
    assert batch.status == Status.DONE, batch.error
    assert batch.prior_version == prior and batch.model_version == spectral
    counts = batch.stage_counts
    assert counts["files"] == 8 and counts["parsed"] == 7 and counts["unparseable"] == 1
    assert counts["disordered"] == 1 and counts["hydrogen"] == 1
    assert counts["existing_materials"] == 2 and counts["new_materials"] == 5 and counts["ranked"] == 7
    assert counts["feff_budget"] == 0 and counts["feff_jobs"] == 0 and counts["spectral"] == 2
    assert Spectrum.objects.count() == spectra_before  # budget 0: no FEFF
    assert "rejected structure_not_a_cif.cif: cannot parse CIF" in out.getvalue()

    rows = {row.material_id: row for row in batch.rows.select_related("material")}
    assert len(rows) == 7 and all(row.prior_probability is not None for row in rows.values())
    prior_p = dict(Prediction.objects.filter(model_version=prior).values_list("material_id", "probability"))
    assert all(row.prior_probability == pytest.approx(prior_p[pk]) for pk, row in rows.items())
    for material in known:  # stored spectra: classified from them at once, for free
        row = rows[material.pk]
        assert row.stage == ScreeningRow.Stage.SPECTRAL and row.probability == row.spectral_probability
    by_file = {row.files[0]: row for row in rows.values()}
    disordered = by_file["structure_partial_occupancy.cif"]
    assert disordered.stage == "prior" and disordered.reason.startswith("prior only: disordered")
    assert disordered.probability == disordered.prior_probability
    assert by_file["amcsd_116.cif"].reason.startswith("prior only: hydrogen-bearing")
    assert by_file["amcsd_3.cif"].material.reduced_formula == "PbS"
    assert by_file["amcsd_3.cif"].reason == "prior only: outside the FEFF budget"
    assert Material.objects.get(pk=by_file["amcsd_3.cif"].material_id).amcsd_id == 3

    ranked = list(csv.DictReader(io.StringIO(output.read_text())))
    assert [int(r["rank"]) for r in ranked] == list(range(1, 8))
    probabilities = [float(r["probability"]) for r in ranked]
    assert probabilities == sorted(probabilities, reverse=True)
    assert {r["stage"] for r in ranked} == {"prior", "spectral"}
    rejected = list(csv.DictReader(io.StringIO(output.with_name("ranked-rejected.csv").read_text())))
    assert [r["file"] for r in rejected] == ["structure_not_a_cif.cif"]


@pytest.mark.django_db
def test_without_a_prior_screening_says_to_train_one(db, tmp_path, monkeypatch):
    path = tmp_path / "one.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("amcsd_3.cif", read_amcsd([3])[0][0].text)
    run_in_process(monkeypatch)
    with pytest.raises(Exception, match=r"train --kind type-only"):
        call_command("screen", str(path), "--name", "no prior", stdout=StringIO())
    assert ScreeningBatch.objects.get(name="no prior").status == Status.FAILED
    assert not Material.objects.exists()  # nothing stored


@pytest.mark.django_db
def test_a_bad_budget_is_a_cli_error(tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="negative"):
        call_command("screen", str(BAD_INPUTS), "--name", "x", "--feff-budget", "-2", stdout=StringIO())
    assert not ScreeningBatch.objects.exists()


@pytest.mark.django_db
def test_stage_one_of_three_hundred_structures_takes_queries_per_chunk_not_per_structure(
    models, django_assert_max_num_queries
):
    prior, _ = models
    files, _ = read_amcsd(amcsd_ids()[:320])
    summaries, rejected = stage1.summarise_files(files)
    assert len(summaries) >= 300
    batch = ScreeningBatch.objects.create(name="bulk", source="release.zip")
    with django_assert_max_num_queries(30):
        counts = stage1.store_release(batch, summaries, rejected)
        stage1.apply_prior(batch, prior)
    assert counts["new_materials"] + counts["existing_materials"] == counts["compounds"] == batch.rows.count()
    assert not batch.rows.filter(prior_probability=None).exists()


# --- Stage 2 on a real worker -------------------------------------------------------------------


def known_element(version) -> str:
    """An element the spectral model has a window for, with a K edge FEFF computes and no
    stored fcc structure: its fcc cell is stage 2's only candidate."""
    from pymatgen.core import Element

    for element in sorted(stage2.model_elements(version), key=lambda e: Element(e).Z):
        if Element(element).Z >= 3 and not Material.objects.filter(reduced_formula=element).exists():
            return element
    pytest.skip("the spectral model knows no element without a stored structure")


@pytest.mark.worker
@pytest.mark.timeout(900)
@pytest.mark.django_db(transaction=True)
def test_stage_two_on_a_real_worker_survives_a_kill_and_a_rerun_computes_nothing_twice(models, tmp_path, settings):
    import psycopg

    from materials.screening.pipeline import create_batch, screen_batch
    from materials.screening.stage2 import run_feff_jobs
    from tests.test_faults import blocked_on_lock, child_pids, kill_9, log_file
    from tests.workers import celery_worker, require_broker, test_database_url, wait_for

    require_broker()
    _, spectral = models
    element = known_element(spectral)
    fcc = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.0), [element], [[0, 0, 0]])
    path, _ = release_zip(tmp_path, {"fcc.cif": str(CifWriter(fcc))})
    batch = create_batch("budget one", str(path), feff_budget=1, feff_max_sites=4)

    jobs = screen_batch(batch.pk)  # stage 1 and the plan, here; stage 2 on the worker
    assert len(jobs) == 1
    job = Job.objects.get(pk=jobs[0])
    material = Material.objects.get(pk=job.parameters["material_id"])
    assert material.reduced_formula == element and job.parameters["element"] == element
    row = batch.rows.get(material=material)
    assert row.stage == "feff" and material.structure is not None  # parsed from the release for FEFF
    # Galena and the others have 8 sites: over this batch's limit of 4, they stay at the prior.
    assert batch.rows.get(files=["amcsd_3.cif"]).reason == "prior only: outside the FEFF budget"

    env = {"MEDIA_ROOT": str(settings.MEDIA_ROOT)}
    with psycopg.connect(test_database_url()) as gate:
        # Hold the material's row: the job computes FEFF, then blocks storing its spectrum.
        gate.execute("SELECT id FROM materials_material WHERE id = %s FOR UPDATE", [material.pk])
        with celery_worker(queues=["feff"], concurrency=1, extra_env=env) as (worker, _queue):
            log = log_file(worker)
            run_feff_jobs(jobs)
            wait_for(lambda: blocked_on_lock('UPDATE "materials_material"'), timeout=600)
            kill_9(child_pids(worker.pid))
            gate.rollback()  # the killed job's spectrum is rolled back with its transaction
            wait_for(lambda: ScreeningBatch.objects.get(pk=batch.pk).status == Status.DONE, timeout=600)
            assert worker.poll() is None, "the worker itself died"
    assert "WorkerLostError" in log.read_text(errors="replace")
    job.refresh_from_db()
    assert job.status == Status.DONE and job.result["attempts"] == 2, job.result
    assert Spectrum.objects.filter(material=material).count() == 1
    row.refresh_from_db()
    assert row.stage == "spectral" and row.spectral_probability is not None
    assert row.probability == row.spectral_probability
    stored = Prediction.objects.get(model_version=spectral, material=material).probability
    assert row.spectral_probability == pytest.approx(stored)
    assert ScreeningBatch.objects.get(pk=batch.pk).stage_counts["feff_jobs_done"] == 1

    # Re-running the screening resumes: same rows, no new job, no spectrum computed again.
    ScreeningBatch.objects.filter(pk=batch.pk).update(status=Status.PENDING)
    spectra, job_count = Spectrum.objects.count(), Job.objects.count()
    assert screen_batch(batch.pk) == []
    assert Spectrum.objects.count() == spectra and Job.objects.count() == job_count
    assert ScreeningBatch.objects.get(pk=batch.pk).status == Status.DONE
    assert batch.rows.get(material=material).stage == "spectral"


@pytest.mark.django_db
def test_resuming_an_amcsd_screening_that_never_ran_is_a_cli_error():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no AMCSD screening to resume"):
        call_command("screen_amcsd", "--resume", stdout=StringIO())
    assert not ScreeningBatch.objects.exists()
