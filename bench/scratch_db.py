"""Scratch PostgreSQL databases for the benchmarks that need one (bench_web, bench_api,
bench_screening): each creates its own database on the configured server, migrates it,
fills it with COPY and drops it afterwards.

The server is the one ``DATABASE_URL`` names (its database name is replaced), or the
local server at 127.0.0.1:5432 (user postgres).
"""

from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

REPO = Path(__file__).resolve().parent.parent


def server_urls(database: str, bench: str) -> tuple[str, str]:
    """(maintenance database URL, scratch database URL) on the configured server."""
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    parts = urlsplit(base)
    if not parts.scheme.startswith("postgres"):
        sys.exit(f"{bench} needs PostgreSQL; DATABASE_URL is {base!r}")
    admin = urlunsplit(parts._replace(path="/postgres"))
    return admin, urlunsplit(parts._replace(path=f"/{database}"))


def recreate_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {database}")


def drop_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def catalogue_compositions() -> list[tuple[list[str], int]]:
    """(sorted element symbols, space group) of every real Materiae entry."""
    rows = []
    with open(REPO / "data" / "labels" / "materiae_labels.csv") as handle:
        for row in csv.DictReader(handle):
            elements = sorted(set(re.findall(r"[A-Z][a-z]?", row["formula"])))
            if elements and row["spacegroup"].isdigit():
                rows.append((elements, int(row["spacegroup"])))
    return rows


def copy_rows(cursor, table: str, columns: list[str], rows) -> None:
    """COPY ``rows`` (tuples in ``columns`` order) into ``table`` with a psycopg cursor."""
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


MATERIAL_COLUMNS = [
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
]


def copy_synthetic_materials(
    cursor, element_sets: list[list[str]], space_groups: list[int], labels, source_release: str, first_icsd_id: int
) -> None:
    """COPY synthetic ``Material`` rows with ids 1..N (needs Django set up).

    Row i has the sorted ``element_sets[i]`` as its formula, ``space_groups[i]`` with its
    point group and crystal system, ``labels[i]`` ("" for none), ``has_spectra`` set, and
    ``source_release`` naming the benchmark that made it; the id sequence is moved past N.
    """
    import json

    from django.utils import timezone

    from materials.chemistry import symmetry_of

    symmetry = {number: symmetry_of(number) for number in set(space_groups)}
    now = timezone.now()

    def rows():
        for index, (symbols, number, label) in enumerate(zip(element_sets, space_groups, labels, strict=True), start=1):
            group = symmetry[number]
            formula = "".join(symbols)
            yield (
                index,
                json.dumps([first_icsd_id + index]),
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
                source_release,
                label,
                True,
                now,
            )

    copy_rows(cursor, "materials_material", MATERIAL_COLUMNS, rows())
    cursor.execute("SELECT setval(pg_get_serial_sequence('materials_material', 'id'), %s)", [len(element_sets)])


def copy_catalogue_materials(cursor, n_materials: int, rng, source_release: str, first_icsd_id: int) -> None:
    """COPY ``n_materials`` synthetic materials whose element sets and space groups are
    resampled from the real Materiae catalogue, a third of them labelled at random."""
    compositions = catalogue_compositions()
    picks = rng.integers(0, len(compositions), size=n_materials).tolist()
    labels = rng.choice(["", "topological", "trivial"], size=n_materials, p=[0.67, 0.13, 0.20]).tolist()
    element_sets = [compositions[pick][0] for pick in picks]
    space_groups = [compositions[pick][1] for pick in picks]
    copy_synthetic_materials(cursor, element_sets, space_groups, labels, source_release, first_icsd_id)


def copy_random_predictions(cursor, model_version_id: int, n_materials: int, rng) -> None:
    """COPY one prediction per material 1..N for the model, P(topological) ~ Beta(0.6, 1.4)."""
    from django.utils import timezone

    now = timezone.now()
    probabilities = rng.beta(0.6, 1.4, size=n_materials).tolist()
    copy_rows(
        cursor,
        "materials_prediction",
        ["material_id", "model_version_id", "probability", "predicted_class", "created"],
        (
            (index, model_version_id, p, "topological" if p >= 0.5 else "trivial", now)
            for index, p in enumerate(probabilities, start=1)
        ),
    )
