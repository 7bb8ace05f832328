"""Shared fixtures.

Tests run on whatever ``DATABASE_URL`` names (PostgreSQL in CI, SQLite otherwise)
and, where ``CELERY_BROKER_URL`` is set, against a real Redis broker.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


def pytest_collection_modifyitems(config, items):
    # CI sets REQUIRE_WORKER_TESTS=1: a missing broker must fail loudly, not skip.
    if os.environ.get("REQUIRE_WORKER_TESTS") and not os.environ.get("CELERY_BROKER_URL"):
        raise pytest.UsageError("REQUIRE_WORKER_TESTS is set but CELERY_BROKER_URL is not")


def make_subset(target: Path, n_compounds: int = 6, n_extra_materiae: int = 40, n_arsenal: int = 30) -> Path:
    """A small, self-consistent copy of data/: a few spectra compounds and the
    catalogue rows they (and the reference spectra and structures) refer to."""
    for folder in ("labels", "spectra", "reference", "measured", "structures"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    spectra_lines = (DATA / "spectra" / "spectra.jsonl").read_text().splitlines()
    chosen, kept = [], []
    for line in spectra_lines:
        record = json.loads(line)
        if record["amcsd_id"] not in chosen:
            if len(chosen) == n_compounds:
                continue
            chosen.append(record["amcsd_id"])
        kept.append(line)
    (target / "spectra" / "spectra.jsonl").write_text("\n".join(kept) + "\n")
    with open(DATA / "spectra" / "selection.csv") as handle:
        rows = list(csv.DictReader(handle))
    selection = [row for row in rows if int(row["amcsd_id"]) in chosen]
    with open(target / "spectra" / "selection.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(selection)
    wanted_materiae = {row["materiae_id"] for row in selection}
    wanted_mp = {"mp-10734", "mp-1215", "mp-1840", "mp-2657", "mp-2664", "mp-390", "mp-430", "mp-458", "mp-24850"}
    with open(DATA / "labels" / "materiae_labels.csv") as handle:
        reader = csv.DictReader(handle)
        fieldnames, materiae = reader.fieldnames, list(reader)
    subset = [
        row
        for index, row in enumerate(materiae)
        if index < n_extra_materiae or row["materiae_id"] in wanted_materiae or row["mp_id"] in wanted_mp
    ]
    with open(target / "labels" / "materiae_labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(subset)
    for path in (DATA / "labels").glob("arsenal_*.txt"):
        (target / "labels" / path.name).write_text("\n".join(path.read_text().splitlines()[:n_arsenal]) + "\n")
    for folder in ("reference", "measured", "structures"):
        for path in (DATA / folder).iterdir():
            shutil.copy(path, target / folder / path.name)
    # Structures matched to Materiae entries: only those of materials the subset holds.
    matches = target / "structures" / "prototype_matches.jsonl"
    if matches.exists():
        kept_ids = {row["materiae_id"] for row in subset}
        lines = [line for line in matches.read_text().splitlines() if json.loads(line)["materiae_id"] in kept_ids]
        matches.write_text("".join(line + "\n" for line in lines))
    return target


@pytest.fixture
def data_subset(tmp_path) -> Path:
    return make_subset(tmp_path / "data")


@pytest.fixture
def loaded_subset(db, data_subset):
    from materials.ingest.bundled import load_bundled

    load_bundled(data_subset)
    return data_subset


@pytest.fixture
def eager_tasks(monkeypatch):
    """Tasks run in-process, as ``make demo`` runs them with no broker, even when the suite
    has one (CI): a command that queues work and waits would otherwise wait for a worker."""
    from screening.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)
    return app


@pytest.fixture
def bundled_subset(transactional_db, tmp_path) -> Path:
    """The bundled subset loaded for tests that commit (on_commit work runs, as in production)."""
    from materials.ingest.bundled import load_bundled

    data = make_subset(tmp_path / "data", n_compounds=30, n_extra_materiae=150)
    load_bundled(data)
    return data
