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
with ``materials.artifacts.write_bundle`` as training stores it.

Timed (set-up excluded and printed separately): the screening ``classify_all`` runs —
``unpredicted_ids``, the model bundle loaded, then ``classify_ids`` per chunk of 10,000
materials: read (``load_spectra_arrays``: one SQL query per chunk into float32 blocks),
preprocess (``SpectrumPreprocessor.transform_arrays``), infer (``predict_proba``) and
write (``write_predictions``: COPY). Then the old path on a 10,000-material sample
(``load_records`` through the ORM, per-spectrum ``transform``, ``predict_proba``,
``write_predictions`` for a second model version with the same artifact), scaled to
the release size for the speed-up; the two paths' probabilities must agree.

Prints (``name: value unit``):

    screen_read_seconds / screen_preprocess_seconds / screen_infer_seconds / screen_write_seconds
    screen_300k_seconds: X s          <- the figure (everything above plus listing ids and
                                         loading the model); target <= 30 s on 2 cores
    screen_speedup_over_orm_path: X x
    screen_cpu_seconds: X s           (this process, all threads) and PostgreSQL's

Usage: python bench/bench_screening.py [--materials 300000] [--chunk 10000] [--sample 10000] [--keep]
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
from scratch_db import REPO, catalogue_compositions, copy_rows, drop_database, recreate_database, server_urls  # noqa: E402

DATABASE = "screening_bench_screen"
SYNTHETIC = "SYNTHETIC benchmark data (bench/bench_screening.py), not real materials"
SPECTRA = REPO / "data" / "spectra" / "spectra.jsonl"
POSITIVE_FRACTION = 0.2
GENERATION_CHUNK = 25_000


class SpectrumFactory:
    """Synthetic K-edge spectra made from the bundled FEFF spectra of each element."""

    def __init__(self) -> None:
        by_element: dict[str, list[tuple[list[float], list[float]]]] = {}
        for line in SPECTRA.read_text().splitlines():
            record = json.loads(line)
            by_element.setdefault(record["element"], []).append((record["energies_ev"], record["mu"]))
        self.elements = sorted(by_element)
        self.energies = {e: np.array([pair[0] for pair in by_element[e]]) for e in self.elements}
        self.mu = {e: np.array([pair[1] for pair in by_element[e]]) for e in self.elements}
        lengths = {values.shape[1] for values in self.energies.values()}
        assert lengths == {100}, lengths

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

    from materials.chemistry import symmetry_of

    rng = np.random.default_rng(seed)
    elements, space_groups, positive = synthetic_materials(n_materials, set(factory.elements), rng)
    symmetry = {number: symmetry_of(number) for number in set(space_groups.tolist())}
    now = timezone.now()
    started = time.perf_counter()
    with connection.cursor() as cursor:

        def materials():
            for index, (symbols, number) in enumerate(zip(elements, space_groups.tolist(), strict=True), start=1):
                group = symmetry[number]
                formula = "".join(symbols)
                yield (
                    index,
                    json.dumps([3_000_000 + index]),
                    formula,
                    formula,
                    json.dumps(symbols),
                    "-" + "-".join(symbols) + "-",
                    number,
                    group.symbol,
                    group.point_group,
                    group.crystal_system,
                    "",
                    "icsd",
                    SYNTHETIC,
                    "",
                    True,
                    now,
                )

        copy_rows(
            cursor.cursor,
            "materials_material",
            [
                "id",
                "icsd_ids",
                "formula",
                "reduced_formula",
                "elements",
                "elements_key",
                "space_group_number",
                "space_group_symbol",
                "point_group",
                "crystal_system",
                "structure_source",
                "source",
                "source_release",
                "label",
                "has_spectra",
                "created",
            ],
            materials(),
        )
        cursor.execute("SELECT setval(pg_get_serial_sequence('materials_material', 'id'), %s)", [n_materials])
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


def train_model(factory: SpectrumFactory, n_materials: int = 3000, epochs: int = 2, seed: int = 1):
    """A real CNN-sg on synthetic labelled materials, stored as the app stores models."""
    from materials.artifacts import ModelBundle, write_bundle
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
    model = make_model("cnn-sg", epochs=epochs, random_state=seed)
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
        for name in ("synthetic-screening", "synthetic-screening-orm-baseline")
    ]
    return versions, model.history_


def backend_cpu_seconds() -> float | None:
    """CPU seconds used so far by this connection's PostgreSQL backend (a local server only)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def screen(version, chunk_size: int, workers: int) -> dict:
    """Classify every unpredicted material as ``classify_all`` does: list the ids, cut
    them into chunks, ``classify_ids`` each chunk (in ``workers`` processes, as the
    Celery worker's prefork pool runs the chunk tasks), timed per stage."""
    from materials.inference import chunked, classify_ids, load_bundle, unpredicted_ids

    timings: dict[str, float] = {}
    pool = _start_workers(version.pk, workers) if workers > 1 else None
    backend_before, cpu_before = backend_cpu_seconds(), time.process_time()
    started = time.perf_counter()
    ids = unpredicted_ids(version)
    timings["list"] = time.perf_counter() - started
    written = 0
    if pool is None:
        loaded = time.perf_counter()
        load_bundle(version)
        timings["model_load"] = time.perf_counter() - loaded
        for chunk in chunked(ids, chunk_size):
            written += classify_ids(version, chunk, timings)
    else:
        timings["model_load"] = 0.0  # loaded by each worker at start, as a running worker has it
        with pool:
            for count, chunk_timings in pool.imap_unordered(_classify_chunk, chunked(ids, chunk_size)):
                written += count
                for stage, seconds in chunk_timings.items():
                    timings[stage] = timings.get(stage, 0.0) + seconds
            worker_cpu = sum(pool.map(_worker_cpu, range(workers), chunksize=1))
    timings["total"] = time.perf_counter() - started
    timings["cpu"] = time.process_time() - cpu_before + (worker_cpu if pool is not None else 0.0)
    backend_after = backend_cpu_seconds()
    if pool is None and backend_before is not None and backend_after is not None:
        timings["postgres_cpu"] = backend_after - backend_before
    timings["materials"] = len(ids)
    timings["written"] = written
    return timings


# --- Worker processes (spawned: TensorFlow does not survive fork) -----------------------

_WORKER: dict = {}


def _start_workers(version_id: int, workers: int):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(workers + 1)
    pool = context.Pool(workers, initializer=_worker_init, initargs=(version_id, ready))
    ready.wait()  # every worker has Django, the model and a traced network, as a warm worker has
    return pool


def _worker_init(version_id: int, ready) -> None:
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from materials.inference import load_bundle, transform_arrays
    from materials.models import Material, ModelVersion

    version = ModelVersion.objects.get(pk=version_id)
    bundle = load_bundle(version)
    from materials.arrays import load_spectra_arrays

    first = list(Material.objects.order_by("id").values_list("id", flat=True)[:50])
    bundle.model.predict_proba(transform_arrays(bundle.preprocessor, load_spectra_arrays(first)))
    _WORKER.update(version=version, cpu=time.process_time())
    ready.wait()


def _classify_chunk(material_ids: list[int]) -> tuple[int, dict[str, float]]:
    from materials.inference import classify_ids

    timings: dict[str, float] = {}
    return classify_ids(_WORKER["version"], material_ids, timings), timings


def _worker_cpu(_index: int) -> float:
    time.sleep(0.2)  # one call per worker: the pool hands each a task while the other sleeps
    return time.process_time() - _WORKER["cpu"]


def orm_baseline(version, fast_version, sample_ids: list[int]) -> dict:
    """The pre-array path on a sample: ORM records, per-spectrum transform, predict, write."""
    from materials.arrays import load_records
    from materials.inference import load_bundle, write_predictions
    from materials.models import Prediction
    from materials.training import transform_records

    bundle = load_bundle(version)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    records = load_records(sample_ids, with_spectra=True)
    timings["read"] = time.perf_counter() - started
    step = time.perf_counter()
    inputs = transform_records(bundle.preprocessor, records)
    timings["preprocess"] = time.perf_counter() - step
    step = time.perf_counter()
    probabilities = bundle.model.predict_proba(inputs)
    timings["infer"] = time.perf_counter() - step
    step = time.perf_counter()
    write_predictions(version, records.material_ids, probabilities)
    timings["write"] = time.perf_counter() - step
    timings["total"] = time.perf_counter() - started
    fast = dict(
        Prediction.objects.filter(model_version=fast_version, material_id__in=sample_ids).values_list(
            "material_id", "probability"
        )
    )
    timings["max_abs_difference"] = float(
        np.max(np.abs(np.array([fast[pk] for pk in records.material_ids.tolist()]) - probabilities))
    )
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materials", type=int, default=300_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="materials per classify_ids call (classify_all's)")
    parser.add_argument("--sample", type=int, default=10_000, help="materials for the old-path baseline")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes for the chunks (the Celery worker's default: 2 cores)"
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
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        factory = SpectrumFactory()
        filled = fill(args.materials, factory)
        trained_started = time.perf_counter()
        (version, baseline_version), history = train_model(factory)
        training_seconds = time.perf_counter() - trained_started
        setup_seconds = time.perf_counter() - setup_started

        load_start = os.getloadavg()
        fast = screen(version, args.chunk, args.workers)
        load_end = os.getloadavg()
        sample_ids = list(range(1, args.materials + 1))[:: max(1, args.materials // args.sample)][: args.sample]
        baseline = orm_baseline(baseline_version, version, sample_ids)
        from django.db import connections

        connections.close_all()
    finally:
        if not args.keep:
            drop_database(admin_url, DATABASE)
        media.cleanup()

    n, scale = fast["materials"], args.materials / len(sample_ids)
    print(f"screen_materials: {n} materials (synthetic)")
    print(f"screen_spectra: {filled['spectra']} spectra")
    print(f"screen_setup_seconds: {setup_seconds:.1f} s (excluded: database, COPY, training)")
    print(f"screen_setup_copy_spectra_per_second: {filled['spectra'] / filled['spectra_seconds']:.0f} rows/s")
    print(f"screen_setup_training_seconds: {training_seconds:.1f} s (CNN-sg, {len(history)} epochs)")
    print(f"screen_chunk_materials: {args.chunk} materials")
    print(f"screen_list_seconds: {fast['list']:.2f} s")
    print(f"screen_model_load_seconds: {fast['model_load']:.2f} s")
    for stage in ("read", "preprocess", "infer", "write"):
        print(f"screen_{stage}_seconds: {fast.get(stage, 0.0):.2f} s")
    print(f"screen_300k_seconds: {fast['total']:.2f} s")
    print(f"screen_materials_per_second: {n / fast['total']:.0f} materials/s")
    print(f"screen_predictions_written: {fast['written']} rows")
    print(f"screen_cpu_seconds: {fast['cpu']:.1f} s (this process, all threads)")
    if "postgres_cpu" in fast:
        print(f"screen_postgres_cpu_seconds: {fast['postgres_cpu']:.1f} s")
    print(f"screen_orm_path_sample: {len(sample_ids)} materials")
    for stage in ("read", "preprocess", "infer", "write", "total"):
        print(f"screen_orm_path_{stage}_seconds_scaled: {baseline[stage] * scale:.1f} s")
    print(f"screen_speedup_over_orm_path: {baseline['total'] * scale / fast['total']:.1f} x")
    print(f"screen_max_abs_probability_difference_vs_orm_path: {baseline['max_abs_difference']:.2e}")
    print(
        f"screen_load_average: {load_before[0]:.1f} before set-up, {load_start[0]:.1f} / {load_end[0]:.1f} "
        "at start / end of the timed screening (1-minute)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
