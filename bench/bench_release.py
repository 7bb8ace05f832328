"""Screening a whole release: the 9,275 AMCSD CIFs inside larixite, on PostgreSQL.

Creates a scratch database (``screening_bench_release``, dropped afterwards, also on
failure), migrates it, loads the bundled data (``load_bundled``: the catalogues' labels
and the 1,323 mineral structures some AMCSD entries match), trains the catalogue
type-only prior and an SVM-sg (promoted: the spectral model of stage 2). Set-up is not
timed.

Timed: stage 1 of ``screen_amcsd`` as the command runs it (``pipeline.screen_batch``
with a budget of 0): read every entry from larixite's database, parse it
(``summarise_cif``: composition, space group, order) in ``--processes`` spawned
processes, store the new materials and one row per compound in bulk, predict every
compound with the prior and write the probabilities (plus the stage-2 bookkeeping a
budget of 0 leaves: classifying the matched materials whose spectra are stored).
``release_queries`` counts this process's SQL statements during it (the parse processes
touch no database).

Then stage 2 twice on the same release, as the command runs it without a broker
(``run_feff_jobs``: each job is the ``screening_spectrum`` task, run in
``SCREEN_FEFF_PROCESSES`` spawned processes): a screening with ``--feff-budget`` materials
of at most ``--max-sites`` sites with 1 process, then another with 2 processes (the
next materials by the same rule: the first screening's are no longer candidates, their
spectra being stored). Throughput is FEFF absorber sites computed (``Job.result
["sites_computed"]``) per wall minute, planning excluded.

Prints ``name: value unit``:

    release_cifs, release_parsed, release_compounds
    release_prior_seconds        <- target <= 60 s for the 9,275 entries on 2 cores
    release_cifs_per_second, release_queries
    release_prior_cpu_seconds    (this process and the parse processes; not PostgreSQL's): what
                                 the load of other work on the machine does not inflate
    release_feff_sites_per_minute_1_worker, release_feff_sites_per_minute_2_workers

With ``--repeat N`` stage 1 runs N times from the same start (each run's batch and new
materials are deleted before the next) and the fastest is printed.

Usage: python bench/bench_release.py [--processes 2] [--repeat 1] [--feff-budget 2] [--max-sites 4]
       [--skip-feff] [--keep]
Needs PostgreSQL: DATABASE_URL (its server is used, the database name is replaced), or
the local server at 127.0.0.1:5432 (user postgres).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch_db import REPO, drop_database, recreate_database, server_urls  # noqa: E402

sys.path.insert(0, str(REPO))

DATABASE = "screening_bench_release"


def set_up() -> None:
    from unittest import mock

    from materials.ingest.bundled import load_bundled
    from materials.learning import training

    load_bundled(REPO / "data")
    for kind, promote in (("type-only", False), ("svm-sg", True)):
        with mock.patch("materials.tasks.base.enqueue_on_commit"):
            run = training.request_training(kind)
        training.train_model_version(run.pk)
        if promote:
            training.promote(run.model_version_id)


def stage_one(processes: int) -> dict:
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from materials.screening.pipeline import create_amcsd_batch, screen_batch

    settings.SCREEN_PARSE_PROCESSES = processes
    batch = create_amcsd_batch("bench: stage 1", feff_budget=0)
    with CaptureQueriesContext(connection) as queries:
        cpu = _cpu_seconds()
        started = time.perf_counter()
        jobs = screen_batch(batch.pk)
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu
    batch.refresh_from_db()
    if batch.status != "done" or jobs:
        sys.exit(f"stage 1 did not finish: {batch.status} {batch.error}")
    counts = batch.stage_counts
    return {
        "cifs": counts["files"],
        "parsed": counts["parsed"],
        "compounds": counts["compounds"],
        "seconds": seconds,
        "cpu_seconds": cpu,
        "queries": len(queries.captured_queries),
    }


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the parse processes)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def forget_stage_one() -> None:
    """Undo stage 1 (its batches and the materials they created), for a repeat on the same start."""
    from materials.models import Material, ScreeningBatch

    first = ScreeningBatch.objects.order_by("created").first()
    Material.objects.filter(created__gte=first.created).delete()
    ScreeningBatch.objects.all().delete()


def stage_two(budget: int, max_sites: int, processes: int) -> tuple[float, int, int]:
    """(sites per minute, sites, jobs) of one screening's FEFF jobs in ``processes`` processes."""
    from django.conf import settings

    from materials.models import Job
    from materials.screening.pipeline import create_amcsd_batch, screen_batch
    from materials.screening.stage2 import run_feff_jobs

    settings.SCREEN_FEFF_PROCESSES = processes
    batch = create_amcsd_batch(f"bench: stage 2, {processes} process(es)", feff_budget=budget, feff_max_sites=max_sites)
    jobs = screen_batch(batch.pk)
    started = time.perf_counter()
    run_feff_jobs(jobs)
    minutes = (time.perf_counter() - started) / 60
    done = Job.objects.filter(pk__in=jobs, status="done")
    sites = sum(int(job.result.get("sites_computed") or 0) for job in done)
    failed = len(jobs) - done.count()
    if failed:
        print(f"# {failed} of {len(jobs)} FEFF jobs failed", flush=True)
    return sites / minutes if minutes else 0.0, sites, len(jobs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="stage-1 parse processes (default 2)")
    parser.add_argument("--feff-budget", type=int, default=2, help="materials per stage-2 run (default 2)")
    parser.add_argument("--max-sites", type=int, default=4, help="largest cell given FEFF (default 4)")
    parser.add_argument("--skip-feff", action="store_true", help="stage 1 only")
    parser.add_argument("--repeat", type=int, default=1, help="stage 1 runs from the same start; the best is printed")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    arguments = parser.parse_args()

    admin_url, bench_url = server_urls(DATABASE, "bench_release")
    recreate_database(admin_url, DATABASE)
    media = tempfile.TemporaryDirectory(prefix="bench-release-")
    os.environ.pop("CELERY_BROKER_URL", None)  # stage 2 in-process, as the command without a broker
    os.environ["DATABASE_URL"] = bench_url
    os.environ["MEDIA_ROOT"] = media.name
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "screening.settings")
    os.environ["DEBUG"] = "false"
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        set_up()
        print(f"# set-up (load bundled data, train type-only and SVM-sg): {time.perf_counter() - started:.1f} s")
        runs = []
        for repeat in range(arguments.repeat):
            if repeat:
                forget_stage_one()
            runs.append(stage_one(arguments.processes))
            last = runs[-1]
            print(f"# stage 1, run {repeat + 1}: {last['seconds']:.1f} s, {last['cpu_seconds']:.1f} CPU s", flush=True)
        one = min(runs, key=lambda run: run["seconds"])
        print(f"release_cifs: {one['cifs']} files")
        print(f"release_parsed: {one['parsed']} structures")
        print(f"release_compounds: {one['compounds']} compounds")
        print(f"release_prior_seconds: {one['seconds']:.1f} s")
        print(f"release_cifs_per_second: {one['cifs'] / one['seconds']:.0f} files/s")
        print(f"release_queries: {one['queries']} queries")
        print(f"release_prior_cpu_seconds: {one['cpu_seconds']:.1f} s")
        print(f"# load average before stage 1 ended: {os.getloadavg()[0]:.1f}", flush=True)
        print(f"# stage 1 in {arguments.processes} parse processes on {os.cpu_count()} CPUs", flush=True)
        if not arguments.skip_feff:
            for processes, name in ((1, "1_worker"), (2, "2_workers")):
                rate, sites, jobs = stage_two(arguments.feff_budget, arguments.max_sites, processes)
                print(f"# stage 2, {processes} process(es): {jobs} jobs, {sites} sites", flush=True)
                print(f"release_feff_sites_per_minute_{name}: {rate:.2f} sites/min", flush=True)
    finally:
        from django.db import connections

        connections.close_all()
        if not arguments.keep:
            drop_database(admin_url, DATABASE)
        media.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
