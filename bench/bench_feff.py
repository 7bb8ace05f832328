"""FEFF throughput through Celery: sites per minute with 1 and with 2 worker processes.

Usage: python bench/bench_feff.py [--tasks N]      (or: make bench ONLY=feff)

The same workload runs twice, through a real ``celery worker --concurrency 1`` and then
``--concurrency 2`` on a private queue: ``compute_spectra`` jobs (one per material and
element, ``fast`` preset, every inequivalent site) for small real minerals. The clock
runs from the first enqueue to the last finished job, so it includes everything a
deployment pays per task: the broker, Django, symmetry analysis, input writing and
FEFF's 18 stage processes. Prints::

    feff_sites_per_minute_1_worker: 20.1 sites/min
    feff_sites_per_minute_2_workers: 37.5 sites/min
    feff_speedup_2_over_1_workers: 1.87 x

Needs Redis (``CELERY_BROKER_URL``, default ``redis://127.0.0.1:6379/0``). The jobs live
in a throw-away SQLite database under ``var/`` that the workers share, so no server
database is touched. FEFF is single-threaded, so two workers can at best double the
rate on a machine with two idle cores; the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DB_PATH = REPO / "var" / "bench_feff.sqlite3"
LOG_DIR = REPO / "var"
# Small real minerals (AMCSD ids): elements and binaries whose FEFF runs at the fast
# preset take seconds, so one benchmark finishes in minutes.
WORKLOAD_AMCSD_IDS = [9168, 11193, 12942, 9182, 11166, 9180, 9174, 11816, 11659, 17415, 11258, 10515]

sys.path.insert(0, str(REPO))
os.environ["DATABASE_URL"] = f"sqlite:///{DB_PATH}"
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "screening.settings")


def broker_reachable(url: str) -> bool:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=2):
            return True
    except OSError:
        return False


def fresh_database() -> None:
    import django
    from django.core.management import call_command

    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB_PATH}{suffix}").unlink(missing_ok=True)
    DB_PATH.parent.mkdir(parents=True, exist_ok=True)
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def create_materials(amcsd_ids: list[int]) -> list[tuple[int, str]]:
    """Materials for the workload; returns the (material, element) pairs to compute."""
    from larixite.amcsd import get_amcsd
    from pymatgen.io.cif import CifParser

    from materials.models import Material

    database, pairs = get_amcsd(), []
    for amcsd_id in amcsd_ids:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = CifParser.from_str(database.get_cif(amcsd_id).ciftext).parse_structures(primitive=True)[0]
        elements = sorted({el.symbol for el in structure.composition.elements})
        material = Material.objects.create(
            formula=structure.composition.reduced_formula,
            reduced_formula=structure.composition.reduced_formula,
            elements=elements,
            structure=json.loads(json.dumps(structure.as_dict())),
            nsites=len(structure),
            amcsd_id=amcsd_id,
            source="amcsd",
        )
        pairs.extend((material.pk, element) for element in elements)
    return pairs


def start_worker(concurrency: int, queue: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "screening",
        "worker",
        "-Q",
        queue,
        "--concurrency",
        str(concurrency),
        "--pool",
        "prefork",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "WARNING",
        "-n",
        f"{queue}@%h",
    ]
    log = open(LOG_DIR / f"bench-feff-worker-{concurrency}.log", "w")  # noqa: SIM115 (lives as long as the worker)
    return subprocess.Popen(command, cwd=REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)


def wait_until_ready(queue: str, process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    from screening.celery import app

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with status {process.returncode}; see var/bench-feff-worker-*.log")
        if app.control.ping(destination=[f"{queue}@{socket.gethostname()}"], timeout=1.0):
            return
    raise RuntimeError(f"the worker did not answer within {timeout_s:.0f} s")


def run_once(pairs: list[tuple[int, str]], concurrency: int) -> dict:
    """Compute every pair with a fresh worker of ``concurrency`` processes."""
    from materials.models import Job, Spectrum, Status
    from materials.tasks.feff import compute_spectrum

    Spectrum.objects.all().delete()
    Job.objects.all().delete()
    queue = f"bench-feff-{uuid.uuid4().hex[:8]}"
    process = start_worker(concurrency, queue)
    try:
        wait_until_ready(queue, process)
        jobs = [
            Job.objects.create(
                kind=Job.Kind.COMPUTE_SPECTRA,
                parameters={"material_id": material_id, "element": element, "preset": "fast"},
            )
            for material_id, element in pairs
        ]
        started = time.perf_counter()
        for job in jobs:
            compute_spectrum.apply_async(args=[job.pk], queue=queue)
        ids = [job.pk for job in jobs]
        while Job.objects.filter(pk__in=ids, status__in=[Status.PENDING, Status.RUNNING]).exists():
            if process.poll() is not None:
                raise RuntimeError("the worker died during the benchmark")
            time.sleep(0.2)
        wall_s = time.perf_counter() - started
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    finished = list(Job.objects.filter(pk__in=ids))
    failed = [job for job in finished if job.status == Status.FAILED]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs failed, e.g. {failed[0].parameters}: {failed[0].error}")
    sites = sum(job.result["sites_computed"] for job in finished)
    feff_s = sum(job.result["feff_seconds"] for job in finished)
    return {"sites": sites, "wall_s": wall_s, "feff_s": feff_s, "sites_per_minute": sites / (wall_s / 60)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=None, help="use only the first N materials of the workload")
    args = parser.parse_args(argv)
    broker = os.environ["CELERY_BROKER_URL"]
    if not broker_reachable(broker):
        print(f"feff benchmark needs a Redis broker; none at {broker} (set CELERY_BROKER_URL)", file=sys.stderr)
        return 1
    fresh_database()
    pairs = create_materials(WORKLOAD_AMCSD_IDS[: args.tasks] if args.tasks else WORKLOAD_AMCSD_IDS)
    results = {}
    for concurrency in (1, 2):
        load_before = os.getloadavg()[0]
        results[concurrency] = result = run_once(pairs, concurrency)
        label = "1_worker" if concurrency == 1 else f"{concurrency}_workers"
        print(f"feff_sites_per_minute_{label}: {result['sites_per_minute']:.1f} sites/min", flush=True)
        print(
            f"# {concurrency} worker(s): {result['sites']} sites in {result['wall_s']:.1f} s wall "
            f"({result['feff_s']:.1f} s inside FEFF runs); load average before {load_before:.2f}, "
            f"{os.cpu_count()} CPUs",
            flush=True,
        )
    ratio = results[2]["sites_per_minute"] / results[1]["sites_per_minute"]
    print(f"feff_speedup_2_over_1_workers: {ratio:.2f} x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
