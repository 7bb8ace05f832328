"""Computing missing spectra of stored materials: the function, the ``feff`` task on a
``Job``, and ``manage.py compute_spectra`` in-process and through a real worker.

The materials are tiny real minerals (two-atom primitive cells, a few seconds of FEFF
each at the ``fast`` preset).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from django.core.management import call_command
from pymatgen.core import Lattice, Structure

from materials.models import Job, Material, Spectrum, Status
from materials.spectra.feff import FeffError
from materials.spectra.spectra_compute import (
    compute_material_spectra,
    materials_lacking_spectra,
    missing_spectra,
    plan_missing_spectra,
)
from materials.tasks.feff import MAX_ATTEMPTS, compute_spectrum
from tests.workers import celery_worker

# AMCSD ids of elemental minerals whose FEFF run takes about two seconds.
LANTHANUM, STRONTIUM, ANTIMONY, SODIUM = 9168, 11193, 12942, 9182


def mineral(amcsd_id: int) -> Structure:
    from larixite.amcsd import get_amcsd
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CifParser.from_str(get_amcsd().get_cif(amcsd_id).ciftext).parse_structures(primitive=True)[0]


def make_material(structure: Structure | None, elements: list[str] | None = None, **fields) -> Material:
    formula = structure.composition.reduced_formula if structure is not None else "".join(elements or [])
    return Material.objects.create(
        formula=formula,
        reduced_formula=formula,
        elements=sorted(elements or {el.symbol for el in structure.composition.elements}),
        structure=json.loads(json.dumps(structure.as_dict())) if structure is not None else None,
        nsites=len(structure) if structure is not None else None,
        source="user",
        **fields,
    )


def partially_occupied() -> Structure:
    return Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def too_large() -> Structure:
    rng = np.random.default_rng(1)
    grid = rng.choice(10**3, size=70, replace=False)
    coords = np.stack([grid // 100, (grid // 10) % 10, grid % 10], axis=1) / 10 + rng.uniform(0, 0.02, (70, 3))
    return Structure(Lattice.cubic(25.0), ["Ti", "O"] * 35, coords)


def with_hydrogen() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.1), ["Li", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def spectrum_job(material: Material, element: str, preset: str = "fast") -> Job:
    return Job.objects.create(
        kind=Job.Kind.COMPUTE_SPECTRA, parameters={"material_id": material.pk, "element": element, "preset": preset}
    )


@pytest.fixture
def scratch(tmp_path, settings):
    root = tmp_path / "scratch"
    settings.FEFF_SCRATCH_DIR = str(root)
    return root


@pytest.fixture
def eager(monkeypatch):
    """Run tasks in-process, as with no broker configured, even when the suite has one."""
    from screening.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)
    return app


# --- The function ------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_stores_one_spectrum_with_its_settings_versions_and_seconds():
    material = make_material(mineral(LANTHANUM))
    outcome = compute_material_spectra(material.pk, "La", "fast")
    spectrum = outcome.spectrum
    assert outcome.created and spectrum.source == Spectrum.Source.FEFF and spectrum.edge == "K"
    stored = Spectrum.objects.get(pk=spectrum.pk)
    assert stored.npoints == 100 and np.all(np.diff(stored.energies_ev) > 0) and stored.mu.max() > 0.5
    assert stored.settings["preset"] == "fast" and stored.settings["site_policy"] == "all"
    [site] = stored.settings["sites"]
    assert (site["site_index"], site["multiplicity"]) == (0, 2) and site["seconds"] > 0
    assert stored.settings["library_versions"]["feff10-rs"] == "0.2.4"
    assert stored.settings["seconds"] > 0
    assert stored.source_release == "computed in-app: FEFF10 (feff10-rs 0.2.4), preset fast"
    # Every element now has a spectrum: the material became a usable sample.
    assert Material.objects.get(pk=material.pk).has_spectra


@pytest.mark.django_db
def test_it_skips_a_spectrum_that_already_exists():
    material = make_material(mineral(LANTHANUM))
    first = compute_material_spectra(material.pk, "La", "fast")
    again = compute_material_spectra(material.pk, "La", "mp")  # would take minutes if it ran
    assert not again.created and again.spectrum.pk == first.spectrum.pk
    assert Spectrum.objects.filter(material=material).count() == 1


@pytest.mark.django_db
def test_a_material_without_structure_fails_with_a_clear_reason():
    material = make_material(None, elements=["Co", "O"])
    with pytest.raises(FeffError, match="has no structure"):
        compute_material_spectra(material.pk, "Co")


@pytest.mark.django_db
def test_materials_lacking_spectra_filters_by_ids_and_elements_smallest_first():
    la, zn_i = make_material(mineral(LANTHANUM)), make_material(mineral(11816))  # La (2 sites), ZnI2 (3)
    no_structure = make_material(None, elements=["Co", "O"])
    complete = make_material(mineral(STRONTIUM))
    Spectrum.objects.create(material=complete, element="Sr", energies_ev=[1, 2], mu=[1, 2], source="feff")
    Material.objects.filter(pk=complete.pk).refresh_has_spectra()
    Spectrum.objects.create(material=zn_i, element="I", energies_ev=[1, 2], mu=[1, 2], source="materials_project")

    assert list(materials_lacking_spectra()) == [la, zn_i]
    assert list(materials_lacking_spectra(ids=[zn_i.pk, no_structure.pk])) == [zn_i]
    assert list(materials_lacking_spectra(elements=["Zn", "O"])) == [zn_i]
    # A spectrum of any source counts: ZnI2 lacks only Zn.
    assert missing_spectra(materials_lacking_spectra()) == [(la.pk, "La"), (zn_i.pk, "Zn")]
    assert plan_missing_spectra(elements=["I"]) == []
    assert plan_missing_spectra(limit=1) == [(la.pk, "La")]


# --- The task ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "structure, element, reason",
    [
        (partially_occupied, "Co", "FeffError: partial occupancy at site 0 (Fe:0.5, Co:0.5)"),
        (too_large, "Ti", "FeffError: too many sites: the primitive cell has 70 sites, over the limit of 64"),
        (with_hydrogen, "H", "FeffError: no K-edge data for H (Z=1)"),
    ],
    ids=["partial-occupancy", "too-many-sites", "no-k-edge-data"],
)
def test_a_bad_structure_fails_the_job_with_a_clear_reason_and_leaves_no_spectrum(structure, element, reason, scratch):
    material = make_material(structure())
    job = spectrum_job(material, element)
    compute_spectrum.apply(args=[job.pk])
    job.refresh_from_db()
    assert job.status == Status.FAILED and job.error.startswith(reason), job.error
    assert job.finished is not None
    assert not Spectrum.objects.filter(material=material).exists()
    assert not Material.objects.get(pk=material.pk).has_spectra
    assert list(scratch.glob("feff-*")) == []


@pytest.mark.django_db
def test_the_task_records_its_result_and_removes_its_scratch_directory(scratch):
    material = make_material(mineral(SODIUM))
    job = spectrum_job(material, "Na")
    compute_spectrum.apply(args=[job.pk])
    job.refresh_from_db()
    assert job.status == Status.DONE, job.error
    assert job.progress == 1.0 and job.started <= job.finished
    assert job.result["created"] and job.result["sites_computed"] == 1 and job.result["attempts"] == 1
    assert job.result["spectrum_id"] == Spectrum.objects.get(material=material, element="Na").pk
    assert list(scratch.glob("feff-*")) == []
    # Running a finished job again changes nothing.
    compute_spectrum.apply(args=[job.pk])
    assert Job.objects.get(pk=job.pk).result == job.result


@pytest.mark.django_db
def test_a_redelivered_task_after_a_lost_worker_runs_again_and_counts_the_attempt(scratch):
    material = make_material(mineral(SODIUM))
    job = spectrum_job(material, "Na")
    # What a worker killed mid-run leaves: the job running, one attempt counted.
    Job.objects.filter(pk=job.pk).update(status=Status.RUNNING, result={"attempts": 1})
    compute_spectrum.apply(args=[job.pk])
    job.refresh_from_db()
    assert job.status == Status.DONE and job.result["attempts"] == 2


@pytest.mark.django_db
def test_it_gives_up_when_the_worker_was_lost_on_every_attempt(scratch):
    material = make_material(mineral(SODIUM))
    job = spectrum_job(material, "Na")
    Job.objects.filter(pk=job.pk).update(status=Status.RUNNING, result={"attempts": MAX_ATTEMPTS})
    compute_spectrum.apply(args=[job.pk])
    job.refresh_from_db()
    assert job.status == Status.FAILED and f"gave up after {MAX_ATTEMPTS} attempts" in job.error
    assert not Spectrum.objects.filter(material=material).exists()


# --- The command ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_compute_spectra_limit_3_runs_in_process_without_a_broker(eager, scratch, capsys):
    materials = [make_material(mineral(amcsd_id)) for amcsd_id in (LANTHANUM, STRONTIUM, ANTIMONY, SODIUM)]
    call_command("compute_spectra", "--limit", "3", "--preset", "fast", "--no-progress")
    out = capsys.readouterr().out
    assert "Computing 3 spectra of 3 materials (preset fast)" in out
    assert "3 spectra computed, 0 already present, 0 failed" in out
    assert sorted(Spectrum.objects.values_list("material_id", flat=True)) == [m.pk for m in materials[:3]]
    assert Job.objects.filter(kind=Job.Kind.COMPUTE_SPECTRA, status=Status.DONE).count() == 3
    assert Material.objects.filter(has_spectra=True).count() == 3
    # A second run finds only the fourth material left.
    call_command("compute_spectra", "--ids", str(materials[3].pk), "--no-progress")
    assert Spectrum.objects.count() == 4
    call_command("compute_spectra", "--no-progress")
    assert "Nothing to compute" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_compute_spectra_reports_failures_with_their_reasons(eager, scratch, capsys):
    bad = make_material(partially_occupied())
    call_command("compute_spectra", "--ids", str(bad.pk), "--elements", "Co", "--no-progress")
    out = capsys.readouterr().out
    assert "0 spectra computed, 0 already present, 1 failed" in out
    assert f"material {bad.pk} Co: FeffError: partial occupancy" in out
    assert not Spectrum.objects.exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_compute_spectra_limit_3_runs_through_a_real_celery_worker(capsys, tmp_path):
    materials = [make_material(mineral(amcsd_id)) for amcsd_id in (LANTHANUM, STRONTIUM, ANTIMONY, SODIUM)]
    with celery_worker(extra_env={"FEFF_SCRATCH_DIR": str(tmp_path / "scratch")}) as (process, queue):
        call_command("compute_spectra", "--limit", "3", "--queue", queue, "--timeout", "600", "--poll-interval", "0.5")
        assert process.poll() is None, "the worker died"
    out = capsys.readouterr().out
    assert "Enqueued 3 tasks" in out and f"on queue {queue}" in out
    assert "3 spectra computed, 0 already present, 0 failed" in out
    assert sorted(Spectrum.objects.values_list("material_id", flat=True)) == [m.pk for m in materials[:3]]
    assert Job.objects.filter(kind=Job.Kind.COMPUTE_SPECTRA, status=Status.DONE).count() == 3
    assert list((tmp_path / "scratch").glob("feff-*")) == []


@pytest.mark.django_db
def test_waiting_marks_a_job_failed_when_its_worker_never_finished_within_the_hard_limit():
    from datetime import timedelta

    from django.utils import timezone

    from materials.management.commands.compute_spectra import fail_lost_jobs
    from materials.tasks.feff import TIME_LIMIT_S

    material = make_material(mineral(SODIUM))
    lost, running, queued = (spectrum_job(material, "Na") for _ in range(3))
    long_ago = timezone.now() - timedelta(seconds=TIME_LIMIT_S + 60)
    Job.objects.filter(pk=lost.pk).update(status=Status.RUNNING, started=long_ago)
    Job.objects.filter(pk=running.pk).update(status=Status.RUNNING, started=timezone.now())
    Job.objects.filter(pk=queued.pk).update(created=long_ago)  # waiting for a worker is not lost
    assert fail_lost_jobs([lost.pk, running.pk, queued.pk]) == 1
    statuses = dict(Job.objects.values_list("pk", "status"))
    assert statuses == {lost.pk: Status.FAILED, running.pk: Status.RUNNING, queued.pk: Status.PENDING}
    assert "hard time limit" in Job.objects.get(pk=lost.pk).error
