"""Server time of /candidates/ with 300,000 predictions in PostgreSQL.

Creates a scratch database (``screening_bench_web``), migrates it, and fills it with
CLEARLY SYNTHETIC data: 300,000 materials whose element sets and space groups are
resampled from the real Materiae catalogue (data/labels/materiae_labels.csv), so
element filters select realistic fractions, with random labels (a third labelled)
and random probabilities. Two ready model versions get one prediction per material
each (600,000 rows; the production one is what /candidates/ ranks), plus
per-element validation metrics for the trust hints. Rows go in with COPY.

It then times GET /candidates/ in-process with Django's test client (URL routing,
middleware, the form, the queries, template rendering: the whole server side, no
network), for the first page and several filter combinations, and prints:

    candidates_p50_ms: X ms
    candidates_p95_ms: X ms
    candidates_<case>_p95_ms: X ms   (one per case)

Usage: python bench/bench_web.py [--materials 300000] [--requests 240] [--keep]
Needs PostgreSQL: DATABASE_URL (its server is used, the database name is replaced),
or the local server at 127.0.0.1:5432 (user postgres).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch_db import (  # noqa: E402
    REPO,
    catalogue_compositions,
    copy_catalogue_materials,
    copy_random_predictions,
    drop_database,
    recreate_database,
    server_urls,
)

DATABASE = "screening_bench_web"
SYNTHETIC = "SYNTHETIC benchmark data (bench/bench_web.py), not real materials"
CASES = {
    "first_page": {},
    "page_5": {"page": "5"},
    "include_O": {"include": "O"},
    "include_Bi_Se_p_min": {"include": "Bi, Se", "p_min": "0.5"},
    "exclude_O_cubic": {"exclude": "O", "crystal_system": "cubic"},
    "unlabelled_p_range": {"label": "unlabelled", "p_min": "0.3", "p_max": "0.9"},
    "space_group_225": {"space_group": "225"},
    "include_Te_exclude_O_topological": {"include": "Te", "exclude": "O", "label": "topological"},
}


def fill(n_materials: int, seed: int = 0) -> dict:
    """Synthetic materials, two models with predictions, and element metrics."""
    from django.db import connection

    from materials.models import Dataset, ElementMetric, ModelVersion

    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        copy_catalogue_materials(cursor.cursor, n_materials, rng, SYNTHETIC, 1_000_000)
    material_seconds = time.perf_counter() - started

    dataset = Dataset.objects.create(name="synthetic-bench", content_hash="0" * 64, counts={"train": 0})
    versions = []
    for name, production in (("synthetic-production", True), ("synthetic-other", False)):
        versions.append(
            ModelVersion.objects.create(
                kind="cnn-sg",
                name=name,
                dataset=dataset,
                status="ready",
                threshold=0.5,
                is_production=production,
                split_hash="0" * 64,
                metrics={"note": SYNTHETIC},
            )
        )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for version in versions:
            copy_random_predictions(cursor.cursor, version.pk, n_materials, rng)
        cursor.execute("VACUUM ANALYZE materials_material")
        cursor.execute("VACUUM ANALYZE materials_prediction")
    prediction_seconds = time.perf_counter() - started
    elements = sorted({e for composition, _ in catalogue_compositions() for e in composition})
    ElementMetric.objects.bulk_create(
        ElementMetric(
            model_version=versions[0],
            element=element,
            subset="validation",
            target_class=target,
            recall=float(rng.uniform(0.3, 1.0)),
            precision=float(rng.uniform(0.3, 1.0)),
            f1=float(rng.uniform(0.3, 1.0)),
            support=int(rng.integers(0, 60)),
        )
        for element in elements
        for target in ("topological", "trivial")
    )
    return {
        "materials_copy_s": material_seconds,
        "predictions_copy_s": prediction_seconds,
        "production": versions[0],
    }


def time_requests(n_requests: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    from django.test import Client
    from django.urls import reverse

    client = Client()
    url = reverse("materials:candidate-list")
    rows: dict[str, int] = {}
    for name, params in CASES.items():  # warm up: connections, template cache, plans
        for _ in range(3):
            response = client.get(url, params)
            assert response.status_code == 200
            assert b'name="include"' in response.content and b"errorlist" not in response.content, name
        rows[name] = response.content.count(b'data-label="Rank"')
    per_case = max(1, n_requests // len(CASES))
    timings: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(per_case):
        for name, params in CASES.items():
            started = time.perf_counter()
            response = client.get(url, params)
            timings[name].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
    return timings, rows


SELECTIVE = ("include_Bi_Se_p_min", "include_Te_exclude_O_topological")


def time_without_element_keys(n_requests: int) -> dict[str, list[float]]:
    """The selective element filters again with ElementKeys off (plain LIKE filters): the baseline."""
    from django.test import Client
    from django.urls import reverse

    from materials.web import candidates

    client = Client()
    url = reverse("materials:candidate-list")
    saved = candidates.ElementKeys.MIN_TABLE_ID
    candidates.ElementKeys.MIN_TABLE_ID = 10**12
    timings: dict[str, list[float]] = {name: [] for name in SELECTIVE}
    try:
        for name in SELECTIVE:
            client.get(url, CASES[name])
        for _ in range(n_requests):
            for name in SELECTIVE:
                started = time.perf_counter()
                assert client.get(url, CASES[name]).status_code == 200
                timings[name].append((time.perf_counter() - started) * 1000)
    finally:
        candidates.ElementKeys.MIN_TABLE_ID = saved
    return timings


def explain_first_page(version) -> str:
    from django.db import connection

    from materials.learning.ranking import RankFilter, RankQuery

    sql, params = RankQuery.for_model(version, RankFilter(label="all")).sql(limit=51)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materials", type=int, default=300_000)
    parser.add_argument("--requests", type=int, default=240, help="timed requests over all cases")
    parser.add_argument("--keep", action="store_true", help=f"keep the {DATABASE} database afterwards")
    args = parser.parse_args()

    admin_url, bench_url = server_urls(DATABASE, "bench_web")
    recreate_database(admin_url, DATABASE)
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "screening.settings")
    os.environ["DEBUG"] = "false"  # no query log, production-like template rendering
    sys.path.insert(0, str(REPO))
    warnings.filterwarnings("ignore", message="No directory at")  # WhiteNoise: no collectstatic in a bench
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        filled = fill(args.materials)
        plan = explain_first_page(filled["production"])
        timings, rows = time_requests(args.requests)
        baseline = time_without_element_keys(max(5, args.requests // 16))
        from django.db import connections

        connections.close_all()
    finally:
        if not args.keep:
            drop_database(admin_url, DATABASE)

    everything = [t for values in timings.values() for t in values]
    print(f"candidates_materials: {args.materials} materials")
    print(f"candidates_predictions: {2 * args.materials} rows (two models)")
    print(f"candidates_copy_materials: {args.materials / filled['materials_copy_s']:.0f} rows/s")
    print(f"candidates_copy_predictions: {2 * args.materials / filled['predictions_copy_s']:.0f} rows/s")
    print(f"candidates_requests: {len(everything)} requests")
    for name, values in timings.items():
        print(f"candidates_{name}_rows_shown: {rows[name]} rows")
        print(f"candidates_{name}_p50_ms: {statistics.median(values):.1f} ms")
        print(f"candidates_{name}_p95_ms: {percentile(values, 95):.1f} ms")
    print(f"candidates_p50_ms: {statistics.median(everything):.1f} ms")
    print(f"candidates_p95_ms: {percentile(everything, 95):.1f} ms")
    for name, values in baseline.items():
        print(f"candidates_{name}_without_element_keys_p50_ms: {statistics.median(values):.1f} ms")
        speedup = statistics.median(values) / statistics.median(timings[name])
        print(f"candidates_{name}_element_keys_speedup: {speedup:.1f}x")
    uses_index = "prediction_rank" in plan
    print(f"candidates_first_page_uses_rank_index: {'yes' if uses_index else 'no'}")
    if os.environ.get("BENCH_VERBOSE"):
        print(plan, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
