"""Screening an ICSD-size release whose spectra are already in PostgreSQL: 300,000
materials, read → preprocess → infer → write predictions, with the app's own code.

Creates a scratch database (``screening_bench_screen``, dropped afterwards, also on
failure), migrates it and COPYs in CLEARLY SYNTHETIC data (every row's
``source_release`` says so): 300,000 materials whose element sets and space groups are
resampled from the real Materiae catalogue, restricted to the 73 elements of the
bundled FEFF spectra (2.95 elements per material, as in the catalogue), with
``has_spectra`` set and one FEFF K-edge spectrum per element (~885,000 rows of 100
points, float32 ``bytea`` as the app stores them). Each spectrum is a real bundled FEFF
spectrum of that element shifted by up to ±1.5 eV, rescaled by a few percent, with
noise, so energy grids, edge positions and shapes are those of real data; a fifth of
the materials carry a planted feature (the "topological" ones).

A real CNN-sg (the production architecture and defaults) is trained for two epochs on
3,000 further synthetic materials, whose labels the planted feature decides, and stored
with ``materials.learning.artifacts.write_bundle`` as training stores it.

Timed (set-up excluded and printed separately): the screening as ``classify_all`` runs
it — ``unpredicted_ids``, then ``classify_ids`` per chunk of 10,000 materials: read
(``load_spectra_arrays``: one SQL query per chunk into float32 blocks), preprocess
(``SpectrumPreprocessor.transform_arrays``), infer (``predict_proba``) and write
(``write_predictions``: COPY). The chunks run in 2 worker processes, as the Celery
worker's prefork pool runs ``classify_chunk`` tasks on a 2-core machine (``--workers 1``:
all in this process); the workers are started, with the model loaded and its graph
traced, before the clock starts, as a running worker is. Then, in this process, both
paths on the same 10,000 materials (a contiguous id range, like a chunk): the new one
and the old one (``load_records`` through the ORM, per-spectrum ``transform``,
``predict_proba``, ``write_predictions``), each for its own model version with the same
artifact; their probabilities must agree.

Prints (``name: value unit``), among others:

    screen_read_seconds / _preprocess_ / _infer_ / _write_   (summed over the workers)
    screen_300k_seconds: X s          <- the figure (listing the ids to the last write);
                                         target <= 30 s on 2 cores
    screen_speedup_over_orm_path: X x (same sample, same process)
    screen_cpu_seconds / screen_postgres_cpu_seconds   (what the load of other work
                                         on the machine does not inflate)

Usage: python bench/bench_screening.py [--materials 300000] [--chunk 10000] [--workers 2]
       [--tf-threads 0] [--sample 10000] [--keep]
Needs PostgreSQL: DATABASE_URL (its server is used, the database name is replaced), or
the local server at 127.0.0.1:5432 (user postgres).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch_db import (  # noqa: E402
    REPO,
    catalogue_compositions,
    copy_synthetic_materials,
    drop_database,
    recreate_database,
    server_urls,
)

DATABASE = "screening_bench_screen"
SYNTHETIC = "SYNTHETIC benchmark data (bench/bench_screening.py), not real materials"
SPECTRA = REPO / "data" / "spectra" / "spectra.jsonl"
POSITIVE_FRACTION = 0.2
GENERATION_CHUNK = 25_000


class SpectrumFactory:
    """Synthetic K-edge spectra made from the bundled FEFF spectra of each element."""

    def __init__(self) -> None:
        from mlcore.elements import ABSORBING_ELEMENTS

        by_element: dict[str, list[tuple[list[float], list[float]]]] = {}
        for line in SPECTRA.read_text().splitlines():
            record = json.loads(line)
            if record["element"] in ABSORBING_ELEMENTS and len(record["energies_ev"]) == 100:
                by_element.setdefault(record["element"], []).append((record["energies_ev"], record["mu"]))
        self.elements = sorted(by_element)
        self.energies = {e: np.array([pair[0] for pair in by_element[e]]) for e in self.elements}
        self.mu = {e: np.array([pair[1] for pair in by_element[e]]) for e in self.elements}

    def make(self, elements: np.ndarray, positive: np.ndarray, rng: np.random.Generator):
        """(energies, mu) float32 (R, 100) for spectra of ``elements`` (symbols, R), with
        the planted feature where ``positive``."""
        energies = np.empty((len(elements), 100), dtype=np.float32)
        mu = np.empty((len(elements), 100), dtype=np.float32)
        for element in np.unique(elements).tolist():
            rows = np.flatnonzero(elements == element)
            template = rng.integers(0, len(self.energies[element]), rows.size)
            shift = rng.uniform(-1.5, 1.5, (rows.size, 1))
            e = self.energies[element][template] + shift
            m = self.mu[element][template] * rng.normal(1.0, 0.04, (rows.size, 1))
            m += rng.normal(0.0, 0.004, m.shape)
            relative = (e - e[:, :1]) / (e[:, -1:] - e[:, :1])
            m += 0.25 * positive[rows, None] * np.exp(-(((relative - 0.45) / 0.05) ** 2))
            energies[rows] = e
            mu[rows] = m
        return energies, mu


def synthetic_materials(n: int, vocabulary: set[str], rng: np.random.Generator):
    """Element sets and space groups resampled from the catalogue; the planted labels."""
    compositions = [(e, sg) for e, sg in catalogue_compositions() if set(e) <= vocabulary]
    picks = rng.integers(0, len(compositions), n)
    elements = [compositions[i][0] for i in picks.tolist()]
    space_groups = np.array([compositions[i][1] for i in picks.tolist()], dtype=np.int64)
    positive = rng.random(n) < POSITIVE_FRACTION
    return elements, space_groups, positive


def spectrum_rows(elements: list[list[str]]):
    """(material row, element symbol) of every spectrum, sorted by material."""
    counts = np.fromiter(map(len, elements), dtype=np.int64, count=len(elements))
    material_rows = np.repeat(np.arange(len(elements)), counts)
    symbols = np.array([symbol for symbols in elements for symbol in symbols])
    return material_rows, symbols


def fill(n_materials: int, factory: SpectrumFactory, seed: int = 0) -> dict:
    """COPY the synthetic materials and their spectra; returns counts and seconds."""
    from django.db import connection
    from django.utils import timezone
    from psycopg.types.json import Jsonb

    rng = np.random.default_rng(seed)
    elements, space_groups, positive = synthetic_materials(n_materials, set(factory.elements), rng)
    now = timezone.now()
    started = time.perf_counter()
    with connection.cursor() as cursor:
        copy_synthetic_materials(
            cursor.cursor, elements, space_groups.tolist(), [""] * n_materials, SYNTHETIC, 3_000_000
        )
    material_seconds = time.perf_counter() - started

    started = time.perf_counter()
    material_rows, symbols = spectrum_rows(elements)
    settings = Jsonb({"note": "synthetic"})
    columns = "material_id, element, edge, energies_ev, mu, source, settings, source_release, created"
    types = ["int8", "text", "text", "bytea", "bytea", "text", "jsonb", "text", "timestamptz"]
    with connection.cursor() as cursor:
        for start in range(0, len(symbols), GENERATION_CHUNK):
            rows = slice(start, start + GENERATION_CHUNK)
            energies, mu = factory.make(symbols[rows], positive[material_rows[rows]], rng)
            with cursor.cursor.copy(f"COPY materials_spectrum ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for material, symbol, e, m in zip(
                    (material_rows[rows] + 1).tolist(), symbols[rows].tolist(), energies, mu, strict=True
                ):
                    copy.write_row((material, symbol, "K", e.tobytes(), m.tobytes(), "feff", settings, SYNTHETIC, now))
        cursor.execute("VACUUM ANALYZE materials_material")
        cursor.execute("VACUUM ANALYZE materials_spectrum")
    return {
        "spectra": len(symbols),
        "materials_seconds": material_seconds,
        "spectra_seconds": time.perf_counter() - started,
    }


def train_model(factory: SpectrumFactory, n_materials: int = 3000, epochs: int = 2, seed: int = 1, **hyperparameters):
    """A real CNN-sg on synthetic labelled materials, stored as the app stores models."""
    from materials.learning.artifacts import ModelBundle, write_bundle
    from materials.models import ModelVersion
    from mlcore.data import RawSpectrum
    from mlcore.evaluate import choose_threshold
    from mlcore.models import make_model
    from mlcore.preprocess import SpectrumPreprocessor

    rng = np.random.default_rng(seed)
    elements, space_groups, positive = synthetic_materials(n_materials, set(factory.elements), rng)
    material_rows, symbols = spectrum_rows(elements)
    energies, mu = factory.make(symbols, positive[material_rows], rng)
    spectra: list[list[RawSpectrum]] = [[] for _ in range(n_materials)]
    for row, symbol, e, m in zip(material_rows.tolist(), symbols.tolist(), energies, mu, strict=True):
        spectra[row].append(RawSpectrum(symbol, e.astype(np.float64), m.astype(np.float64)))
    labels = positive.astype(np.int64)
    train, validation = (
        np.arange(n_materials) < int(0.8 * n_materials),
        np.arange(n_materials) >= int(0.8 * n_materials),
    )
    preprocessor = SpectrumPreprocessor().fit([s for s, keep in zip(spectra, train, strict=True) if keep])
    X = preprocessor.transform(spectra, space_groups)
    X_train, X_validation = X.subset(np.flatnonzero(train)), X.subset(np.flatnonzero(validation))
    model = make_model("cnn-sg", epochs=epochs, random_state=seed, **hyperparameters)
    model.fit(X_train, labels[train], validation_data=(X_validation, labels[validation]))
    threshold = float(choose_threshold(labels[validation], model.predict_proba(X_validation)))
    relative, sha256 = write_bundle(
        "models/synthetic-screening-cnn-sg.zip", ModelBundle(kind="cnn-sg", model=model, preprocessor=preprocessor)
    )
    versions = [
        ModelVersion.objects.create(
            kind="cnn-sg",
            name=name,
            status="ready",
            artifact=relative,
            artifact_sha256=sha256,
            threshold=threshold,
            metrics={"note": SYNTHETIC},
        )
        for name in ("synthetic-screening", "synthetic-screening-sample", "synthetic-screening-sample-orm-path")
    ]
    return versions, model.history_


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes (all their threads) have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def backend_pids() -> list[int]:
    """PostgreSQL backends of the scratch database (their CPU is readable on a local server)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return [pid for (pid,) in cursor.fetchall()]


def screen(version, chunk_size: int, workers: int, tf_threads: int = 0) -> dict:
    """Classify every unpredicted material as ``classify_all`` does: list the ids, cut
    them into chunks and ``classify_ids`` each chunk, in this process (``workers`` = 1)
    or in ``workers`` processes as the Celery worker's prefork pool runs the chunk tasks.
    The model is loaded and its graph traced before the clock starts, as in a worker
    that is already running. Stage times are summed over chunks (over all workers)."""
    from materials.learning.inference import chunked, classify_ids, unpredicted_ids

    timings: dict[str, float] = {}
    warm_up = time.perf_counter()
    pool = _start_workers(version.pk, workers, tf_threads) if workers > 1 else None
    if pool is None:
        _warm_up(version)
    timings["warm_up"] = time.perf_counter() - warm_up
    try:
        processes = [os.getpid()] + ([process.pid for process in pool._pool] if pool is not None else [])
        backends = backend_pids()
        cpu_before, backend_before = cpu_seconds(processes), cpu_seconds(backends)
        started = time.perf_counter()
        ids = unpredicted_ids(version)
        timings["list"] = time.perf_counter() - started
        chunks = chunked(ids, chunk_size)
        written = 0
        if pool is None:
            for chunk in chunks:
                written += classify_ids(version, chunk, timings)
        else:
            for count, chunk_timings in pool.imap_unordered(_classify_chunk, chunks):
                written += count
                for stage, seconds in chunk_timings.items():
                    timings[stage] = timings.get(stage, 0.0) + seconds
        timings["total"] = time.perf_counter() - started
        timings["cpu"] = cpu_seconds(processes) - cpu_before
        timings["postgres_cpu"] = cpu_seconds(backends) - backend_before
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    timings["materials"] = len(ids)
    timings["written"] = written
    return timings


def _warm_up(version) -> None:
    """Load the model and trace its graph on a few materials (nothing is written)."""
    from materials.learning.arrays import load_spectra_arrays
    from materials.learning.inference import load_bundle, transform_arrays
    from materials.models import Material

    bundle = load_bundle(version)
    first = list(Material.objects.order_by("id").values_list("id", flat=True)[:50])
    bundle.model.predict_proba(transform_arrays(bundle.preprocessor, load_spectra_arrays(first)))


def set_tf_threads(threads: int) -> None:
    """TensorFlow's intra- and inter-op thread pools (0: TensorFlow's default, one per core)."""
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


# --- Worker processes (spawned: TensorFlow does not survive fork) -----------------------

_WORKER: dict = {}


def _start_workers(version_id: int, workers: int, tf_threads: int):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(workers + 1)
    pool = context.Pool(workers, initializer=_worker_init, initargs=(version_id, ready, tf_threads))
    ready.wait(timeout=600)  # every worker has Django, the model and a traced network, as a warm worker has
    return pool


def _worker_init(version_id: int, ready, tf_threads: int) -> None:
    sys.path.insert(0, str(REPO))
    set_tf_threads(tf_threads)
    import django

    django.setup()
    from materials.models import ModelVersion

    version = ModelVersion.objects.get(pk=version_id)
    _warm_up(version)
    _WORKER["version"] = version
    ready.wait(timeout=600)


def _classify_chunk(material_ids: list[int]) -> tuple[int, dict[str, float]]:
    from materials.learning.inference import classify_ids

    timings: dict[str, float] = {}
    return classify_ids(_WORKER["version"], material_ids, timings), timings


# --- The old path, on a sample -----------------------------------------------------------


def compare_on_sample(fast_version, orm_version, sample_ids: list[int], rounds: int = 3) -> dict:
    """Both paths on the same sample in this process, stage by stage: the array path
    (``classify_ids``) for one model version, the record path (ORM ``load_records``,
    per-spectrum ``transform``, ``predict_proba``, ``write_predictions``) for another,
    both with the same artifact; the fastest of ``rounds`` rounds of each (the
    predictions are deleted between rounds, untimed), and the largest difference of
    their probabilities."""
    from materials.learning.arrays import load_records, load_spectra_arrays
    from materials.learning.inference import classify_ids, load_bundle, transform_arrays, write_predictions
    from materials.learning.training import transform_records
    from materials.models import Prediction

    bundle = load_bundle(orm_version)
    # Untimed, once: the sample's pages into the caches and TensorFlow's graph and kernels
    # for these batch shapes, so that neither timed path pays for them.
    bundle.model.predict_proba(transform_arrays(bundle.preprocessor, load_spectra_arrays(sample_ids)))
    best: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        Prediction.objects.filter(model_version__in=[fast_version, orm_version]).delete()
        fast: dict[str, float] = {}
        started = time.perf_counter()
        classify_ids(fast_version, sample_ids, fast)
        fast["total"] = time.perf_counter() - started
        orm: dict[str, float] = {}
        started = time.perf_counter()
        records = load_records(sample_ids, with_spectra=True)
        orm["read"] = time.perf_counter() - started
        step = time.perf_counter()
        inputs = transform_records(bundle.preprocessor, records)
        orm["preprocess"] = time.perf_counter() - step
        step = time.perf_counter()
        probabilities = bundle.model.predict_proba(inputs)
        orm["infer"] = time.perf_counter() - step
        step = time.perf_counter()
        write_predictions(orm_version, records.material_ids, probabilities)
        orm["write"] = time.perf_counter() - step
        orm["total"] = time.perf_counter() - started
        for name, timings in (("fast", fast), ("orm", orm)):
            if name not in best or timings["total"] < best[name]["total"]:
                best[name] = timings
    stored = dict(
        Prediction.objects.filter(model_version=fast_version, material_id__in=sample_ids).values_list(
            "material_id", "probability"
        )
    )
    difference = np.abs(np.array([stored[pk] for pk in records.material_ids.tolist()]) - probabilities)
    return {**best, "max_abs_difference": float(np.max(difference)), "rounds": rounds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materials", type=int, default=300_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="materials per classify_ids call (classify_all's)")
    parser.add_argument("--sample", type=int, default=10_000, help="materials for the old-path baseline")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes for the chunks (the Celery worker's default: 2 cores)"
    )
    parser.add_argument(
        "--tf-threads", type=int, default=0, help="TensorFlow intra/inter-op threads per process (0: its default)"
    )
    parser.add_argument(
        "--predict-batch", type=int, default=0, help="the CNN's predict_batch_size hyperparameter (0: its default)"
    )
    parser.add_argument("--keep", action="store_true", help=f"keep the {DATABASE} database afterwards")
    args = parser.parse_args()

    admin_url, bench_url = server_urls(DATABASE, "bench_screening")
    load_before = os.getloadavg()
    setup_started = time.perf_counter()
    recreate_database(admin_url, DATABASE)
    media = tempfile.TemporaryDirectory(prefix="bench-screening-media-")
    os.environ["DATABASE_URL"] = bench_url
    os.environ["MEDIA_ROOT"] = media.name
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "screening.settings")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["DEBUG"] = "false"
    sys.path.insert(0, str(REPO))
    warnings.filterwarnings("ignore", message="No directory at")
    try:
        import django

        django.setup()
        set_tf_threads(args.tf_threads)
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        factory = SpectrumFactory()
        filled = fill(args.materials, factory)
        trained_started = time.perf_counter()
        extra = {"predict_batch_size": args.predict_batch} if args.predict_batch else {}
        versions, history = train_model(factory, **extra)
        training_seconds = time.perf_counter() - trained_started
        setup_seconds = time.perf_counter() - setup_started

        load_start = os.getloadavg()
        screened = screen(versions[0], args.chunk, args.workers, args.tf_threads)
        load_end = os.getloadavg()
        first = max(0, args.materials // 2 - args.sample // 2)  # a chunk-like range of ids, mid-table
        sample_ids = list(range(first + 1, min(first + args.sample, args.materials) + 1))
        sample = compare_on_sample(versions[1], versions[2], sample_ids)
        from django.db import connections

        connections.close_all()
    finally:
        if not args.keep:
            drop_database(admin_url, DATABASE)
        media.cleanup()

    n, scale = screened["materials"], args.materials / len(sample_ids)
    summed = f" (summed over the {args.workers} workers)" if args.workers > 1 else ""
    print(f"screen_materials: {n} materials (synthetic)")
    print(f"screen_spectra: {filled['spectra']} spectra")
    print(f"screen_setup_seconds: {setup_seconds:.1f} s (excluded: database, COPY, training)")
    print(f"screen_setup_copy_spectra_per_second: {filled['spectra'] / filled['spectra_seconds']:.0f} rows/s")
    print(f"screen_setup_training_seconds: {training_seconds:.1f} s (CNN-sg, {len(history)} epochs)")
    print(f"screen_workers: {args.workers} processes, chunks of {args.chunk} materials")
    print(f"screen_tf_threads: {args.tf_threads or 'default'}")
    print(f"screen_predict_batch_size: {args.predict_batch or 'default (2048)'}")
    print(f"screen_warm_up_seconds: {screened['warm_up']:.1f} s (excluded: start workers, load the model, trace it)")
    print(f"screen_list_seconds: {screened['list']:.2f} s")
    for stage in ("read", "preprocess", "infer", "write"):
        print(f"screen_{stage}_seconds: {screened.get(stage, 0.0):.2f} s{summed}")
    print(f"screen_300k_seconds: {screened['total']:.2f} s")
    print(f"screen_materials_per_second: {n / screened['total']:.0f} materials/s")
    print(f"screen_predictions_written: {screened['written']} rows")
    print(f"screen_cpu_seconds: {screened['cpu']:.1f} s (bench and worker processes, all threads)")
    print(f"screen_postgres_cpu_seconds: {screened['postgres_cpu']:.1f} s")
    fast, orm = sample["fast"], sample["orm"]
    print(f"screen_sample: {len(sample_ids)} materials, both paths in one process, best of {sample['rounds']} rounds")
    for stage in ("read", "preprocess", "infer", "write", "total"):
        print(f"screen_sample_{stage}_seconds: {fast.get(stage, 0.0):.2f} s new path, {orm[stage]:.2f} s ORM path")
    print(f"screen_orm_path_seconds_scaled: {orm['total'] * scale:.1f} s for {args.materials} materials, one process")
    print(f"screen_speedup_over_orm_path: {orm['total'] / fast['total']:.1f} x (same sample, same process)")
    print(f"screen_speedup_over_orm_path_end_to_end: {orm['total'] * scale / screened['total']:.1f} x")
    print(f"screen_max_abs_probability_difference_vs_orm_path: {sample['max_abs_difference']:.2e}")
    print(
        f"screen_load_average: {load_before[0]:.1f} before set-up, {load_start[0]:.1f} / {load_end[0]:.1f} "
        "at start / end of the timed screening (1-minute)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
