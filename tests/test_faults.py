"""Fault injection with real processes: workers killed with -9, Redis restarted with tasks
queued and in flight, the PostgreSQL connection dropped under a running web server, and
concurrent retrains, promotions and batch classifications.

Nothing here touches the shared servers' state: the broker is a private ``redis-server``
on a free port (started per module, with an append-only file so that a restart keeps
what was queued, as production's must), the web server is a ``gunicorn`` subprocess that
reaches PostgreSQL through a TCP proxy this test can cut, and ``pg_terminate_backend``
only ever targets that server's own backend. Run them alone with ``make test-faults``
(``pytest -m faults``); the default ``make test`` includes them.

They need PostgreSQL (``DATABASE_URL``): a worker cannot share SQLite's in-memory test
database. CI sets it; without it they are skipped.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count

from materials.models import Job, Material, ModelVersion, Prediction, Spectrum, Status, TrainingRun
from tests.conftest import REPO, make_subset
from tests.workers import PrivateRedis, celery_worker, free_port, redirect_celery, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


# --- Helpers: processes, a private Redis, a cuttable TCP proxy ------------------------------------


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (the prefork pool processes of a Celery worker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def kill_9(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def log_file(process: subprocess.Popen) -> Path:
    """Where a running subprocess writes its output (tests.workers logs to var/worker-*.log)."""
    return Path(os.readlink(f"/proc/{process.pid}/fd/1"))


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    if shutil.which("redis-server") is None:
        if os.environ.get("REQUIRE_WORKER_TESTS"):
            pytest.fail("REQUIRE_WORKER_TESTS is set but redis-server is not installed")
        pytest.skip("needs the redis-server binary for a private broker")
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker(private_redis, monkeypatch):
    """Point this process's Celery app and every worker started here at the private Redis."""
    if connection.vendor != "postgresql":
        pytest.skip("a worker process cannot share SQLite's in-memory test database; set DATABASE_URL")
    private_redis.client().flushall()
    with redirect_celery(private_redis.url, monkeypatch):
        yield private_redis


@pytest.fixture
def media(tmp_path, settings):
    """One MEDIA_ROOT for this process and its workers."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def bundled(tmp_path):
    from materials.ingest.bundled import load_bundled

    load_bundled(make_subset(tmp_path / "data", n_compounds=30, n_extra_materiae=150))


def finished(model, pk):
    return model.objects.filter(pk=pk, status__in=[Status.DONE, Status.FAILED]).first()


def assert_artifacts_sound(media: Path) -> None:
    """Every trained model points to a complete artifact, and no partial file is left."""
    from materials.learning.artifacts import read_bundle

    for version in ModelVersion.objects.filter(status=ModelVersion.State.READY) | ModelVersion.objects.filter(
        is_production=True
    ):
        path = media / version.artifact.name
        assert version.artifact and path.is_file(), f"{version} points to a missing artifact"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == version.artifact_sha256, f"{version}: partial file"
        read_bundle(version.artifact.name, version.artifact_sha256)  # loads: complete and ours
        with zipfile.ZipFile(path) as bundle:  # arrays and JSON only: no pickle, no .keras/.h5 file
            names = set(bundle.namelist())
            assert "bundle.json" in names and all(name.endswith(".json") for name in names - {"model.zip"}), names
            assert set(zipfile.ZipFile(io.BytesIO(bundle.read("model.zip"))).namelist()) == {
                "manifest.json",
                "arrays.npz",
            }
    leftovers = sorted(p.name for p in (media / "models").glob(".partial-*")) if (media / "models").exists() else []
    assert leftovers == []


# --- kill -9 during training ------------------------------------------------------------------------


def test_kill_9_of_the_process_training_a_model_requeues_the_task_and_the_retry_finishes(bundled, broker, media):
    """acks_late + reject_on_worker_lost: the pool process dies mid-task (training done, its
    results not yet stored), the message goes back on the queue, a fresh pool process trains
    again from the start, and the run ends done with a complete artifact.

    The kill point is made certain, not raced: this test locks the model version's row
    before the worker starts, so the task trains every epoch and then blocks on storing
    its results (``version.save()``) until the kill. Polling for "epoch >= 1" and killing
    raced a training that could finish between two polls."""
    import psycopg

    from materials.learning.training import request_training
    from tests.workers import test_database_url

    env = {"MEDIA_ROOT": str(media)}
    run = request_training("cnn", {"epochs": 6, "patience": 100})  # queued; no worker yet
    with psycopg.connect(test_database_url()) as gate:
        gate.execute("SELECT id FROM materials_modelversion WHERE id = %s FOR UPDATE", [run.model_version_id])
        with celery_worker(queues=["train"], concurrency=1, extra_env=env) as (worker, _queue):
            log = log_file(worker)
            wait_for(lambda: blocked_on_lock('UPDATE "materials_modelversion"'), timeout=240)
            midway = TrainingRun.objects.get(pk=run.pk)
            assert midway.status == Status.RUNNING and midway.epoch >= 1, (midway.status, midway.epoch)
            assert ModelVersion.objects.get(pk=run.model_version_id).status != ModelVersion.State.READY
            pool = child_pids(worker.pid)
            assert pool, "no pool process to kill"
            kill_9(pool)
            killed_at = time.time()
            gate.rollback()  # the dead process's statement runs and its transaction is rolled back

            run = wait_for(lambda: finished(TrainingRun, run.pk), timeout=240)
            assert worker.poll() is None, "the worker itself died"
    text = log.read_text(errors="replace")
    assert "signal 9 (SIGKILL)" in text and "WorkerLostError" in text, text[-3000:]
    assert run.status == Status.DONE, run.error  # retried from the start by the new pool process
    assert run.started.timestamp() > killed_at - 1  # the second delivery restarted it
    assert [entry["epoch"] for entry in run.history][-1] >= 1
    version = ModelVersion.objects.get(pk=run.model_version_id)
    assert version.status == ModelVersion.State.READY
    assert_artifacts_sound(media)


def blocked_on_lock(statement: str) -> bool:
    """Whether a backend of the test database is waiting for a lock to run ``statement…``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE %s",
            [statement + "%"],
        )
        return cursor.fetchone()[0] > 0


def test_a_bundle_write_killed_midway_leaves_no_artifact_and_its_leftovers_are_swept(tmp_path, settings):
    """The artifact is written to ``.partial-*`` and renamed: a writer killed mid-write leaves
    no file under the target name, and the next write removes the stale leftovers."""
    media = tmp_path / "media"
    script = f"""
import os, sys, time
sys.path.insert(0, {str(REPO)!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "screening.settings"
os.environ["MEDIA_ROOT"] = {str(media)!r}
import django; django.setup()
from materials.learning import artifacts

class Model:
    def save(self, path):
        open(path, "wb").write(b"half a model")

def stuck(fd):
    print("writing", flush=True)
    time.sleep(600)

artifacts.os.fsync = stuck  # stop between writing the temporary file and renaming it
artifacts.write_bundle("models/model-1.zip", artifacts.ModelBundle(kind="type-only", model=Model(), preprocessor=None))
"""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert process.stdout.readline().strip() == b"writing", process.stdout.read()
    finally:
        process.kill()
        process.wait()
    models = media / "models"
    assert not (models / "model-1.zip").exists()
    leftovers = sorted(p.name for p in models.iterdir())
    assert leftovers and all(name.startswith(".partial-") for name in leftovers), leftovers

    from materials.learning import artifacts
    from mlcore.models import make_model

    settings.MEDIA_ROOT = str(media)
    old = time.time() - artifacts.STALE_PARTIAL_S - 60
    for path in models.iterdir():
        os.utime(path, (old, old))
    model = make_model("type-only", max_iter=5)
    _fit_tiny(model)
    name, sha = artifacts.write_bundle("models/model-2.zip", artifacts.ModelBundle("type-only", model, None))
    assert sorted(p.name for p in models.iterdir()) == ["model-2.zip"]
    assert artifacts.read_bundle(name, sha).kind == "type-only"


def _fit_tiny(model) -> None:
    import numpy as np

    from mlcore.data import MaterialSpectra, composition_matrix

    compositions = [{"Bi": 0.4, "Se": 0.6}, {"Na": 0.5, "Cl": 0.5}] * 10
    data = MaterialSpectra(
        material_index=np.zeros(0, dtype=np.int64),
        element_index=np.zeros(0, dtype=np.int64),
        spectra=np.zeros((0, 200), dtype=np.float32),
        space_group=np.array([166, 225] * 10, dtype=np.int64),
        composition=composition_matrix(compositions),
    )
    model.fit(data, np.array([1, 0] * 10))


# --- kill -9 during ingestion -----------------------------------------------------------------------


def test_killing_the_whole_worker_during_ingestion_a_new_worker_finishes_it_without_duplicates(broker):
    """The worker (main and pool processes) dies with -9 halfway through an MP ingestion.
    The unacknowledged message stays in Redis; a new worker restores it once the
    visibility timeout has passed (5 s here, 7200 s in production) and the re-run skips
    what was stored: the result equals an uninterrupted run, with no duplicate rows
    (unique constraints on mp_id and on (material, element, edge, source)).
    ``tests/test_ingest_mp.py`` kills the *command* the same way."""
    from materials.ingest.mp import MPIngestion
    from materials.ingest.mp_http import IngestConfig
    from tests.mp_server import ALL_MP_IDS, API_KEY, MPTestServer, documents
    from tests.test_ingest_mp import FAST, snapshot

    documents()
    with MPTestServer() as server:
        MPIngestion(IngestConfig(api_key=API_KEY, endpoint=server.url, **FAST)).run(list(ALL_MP_IDS))
        uninterrupted = snapshot()
        Material.objects.all().delete()

        # One material per chunk, the third summary request held: the worker is killed while it
        # waits for it, with exactly two materials stored.
        server.faults.hold_after = {"summary": 2}
        env = {"MP_API_KEY": API_KEY, "MP_API_ENDPOINT": server.url}
        job = Job.objects.create(
            kind=Job.Kind.INGEST_MP, parameters={"mp_ids": list(ALL_MP_IDS), "options": {**FAST, "chunk_size": 1}}
        )
        from materials.tasks.base import enqueue_on_commit
        from materials.tasks.ingest import ingest_mp

        enqueue_on_commit(ingest_mp, job.pk)
        with celery_worker(queues=["ingest"], extra_env=env) as (worker, _queue):
            wait_for(server.held, timeout=120)
            kill_9([*child_pids(worker.pid), worker.pid])
            worker.wait(timeout=10)
        stored = Material.objects.count()
        assert stored == 2
        assert Job.objects.get(pk=job.pk).status == Status.RUNNING  # nobody is left to say otherwise
        assert broker.client().hlen("unacked") == 1  # the message is not lost: Redis holds it

        server.release()  # the message was delivered seconds ago: older than the new worker's visibility timeout
        with celery_worker(queues=["ingest"], extra_env={**env, "CELERY_VISIBILITY_TIMEOUT": "5"}):
            job = wait_for(lambda: finished(Job, job.pk), timeout=120)
    assert job.status == Status.DONE, job.error
    assert job.result["already_stored"] == stored
    assert snapshot() == uninterrupted
    assert not Material.objects.values("mp_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert not (
        Spectrum.objects.values("material", "element", "edge", "source").annotate(n=Count("id")).filter(n__gt=1)
    ).exists()


# --- Redis restarts ---------------------------------------------------------------------------------


def test_redis_restarting_with_tasks_queued_and_in_flight_loses_none_and_runs_each_once_in_effect(broker):
    """Tasks queued before a Redis restart are still there after it (append-only file,
    fsync always: production's Redis must persist too); a restart while a task runs
    makes the worker reconnect, the task finishes, and its unacknowledged message, if
    redelivered, finds the job done and changes nothing (acks_late, tasks re-runnable)."""
    from materials.tasks.base import enqueue_on_commit
    from materials.tasks.ingest import ingest_mp
    from materials.tasks.maintenance import refresh_material_labels
    from tests.mp_server import ALL_MP_IDS, API_KEY, COMPLETE, MPTestServer, documents
    from tests.test_ingest_mp import FAST

    documents()
    quick = [Job.objects.create(kind=Job.Kind.MAINTENANCE) for _ in range(4)]
    for job in quick:
        enqueue_on_commit(refresh_material_labels, job.pk)
    slow = Job.objects.create(
        kind=Job.Kind.INGEST_MP, parameters={"mp_ids": list(ALL_MP_IDS), "options": {**FAST, "chunk_size": 1}}
    )
    enqueue_on_commit(ingest_mp, slow.pk)
    assert broker.queue_lengths("default", "ingest") == {"default": 4, "ingest": 1}

    broker.restart()  # with nothing consuming: every queued message must survive
    assert broker.queue_lengths("default", "ingest") == {"default": 4, "ingest": 1}

    with MPTestServer() as server:
        server.faults.hold_after = {"summary": 1}  # the ingestion stops after its first material
        env = {"MP_API_KEY": API_KEY, "MP_API_ENDPOINT": server.url}
        with celery_worker(queues=["default", "ingest"], concurrency=1, extra_env=env) as (worker, _queue):
            log = log_file(worker)
            wait_for(server.held, timeout=120)  # the ingestion is in flight, for certain
            broker.restart(down_s=2.0)
            server.release()
            for job in [*quick, slow]:
                wait_for(lambda job=job: finished(Job, job.pk), timeout=180)
            assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
        runs = {job.pk: Job.objects.get(pk=job.pk) for job in [*quick, slow]}
        assert {pk: job.status for pk, job in runs.items()} == {pk: Status.DONE for pk in runs}, [
            job.error for job in runs.values()
        ]
        assert runs[slow.pk].result["materials_stored"] == len(COMPLETE) == Material.objects.count()

        # Whatever the restart left unacknowledged is delivered again to a new worker, and
        # changes nothing: every job is already done.
        leftovers = broker.client().hlen("unacked") + sum(broker.queue_lengths("default", "ingest").values())
        if leftovers:  # depends on where the restart fell; the ack after reconnecting usually succeeds
            time.sleep(2)
            with celery_worker(queues=["default", "ingest"], extra_env={**env, "CELERY_VISIBILITY_TIMEOUT": "1"}):
                wait_for(
                    lambda: (
                        broker.client().hlen("unacked") == 0
                        and sum(broker.queue_lengths("default", "ingest").values()) == 0
                    ),
                    timeout=60,
                )
                time.sleep(1)
    for pk, before in runs.items():
        after = Job.objects.get(pk=pk)
        assert (after.status, after.started, after.finished) == (before.status, before.started, before.finished)
    assert Material.objects.count() == len(COMPLETE)
    print(f"messages redelivered after the in-flight restart: {leftovers}")


# --- The PostgreSQL connection drops -----------------------------------------------------------------


class CuttableProxy:
    """A TCP proxy to PostgreSQL that can cut every connection and refuse new ones."""

    def __init__(self, target: tuple[str, int]):
        self.target, self.port = target, free_port()
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """An outage: the listening socket closes (refused) and live connections drop."""
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        with self.lock:
            for sock in self.connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self.connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@contextmanager
def web_server(database_url: str):
    """gunicorn, one sync worker (so one persistent database connection), on a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER_URL", "DJANGO_ENV"}}
    env.update(DATABASE_URL=database_url, CONN_MAX_AGE="600", DEBUG="0", ALLOWED_HOSTS="127.0.0.1")
    command = [sys.executable, "-m", "gunicorn", "screening.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"]
    log_path = REPO / "var" / f"gunicorn-{port}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:

        def answering() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return process.poll() is not None

        wait_for(answering, timeout=60)
        assert process.poll() is None, log_path.read_text()
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_dropped_database_connection_answers_503_briefly_then_recovers():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL)")
    params = connection.settings_dict
    proxy = CuttableProxy((params["HOST"] or "127.0.0.1", int(params["PORT"] or 5432)))
    proxy.up()
    user = params["USER"] or "postgres"
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    url = f"postgres://{user}{password}@127.0.0.1:{proxy.port}/{params['NAME']}?application_name=fault-web"

    def backend() -> int | None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'fault-web'")
            rows = cursor.fetchall()
        return rows[0][0] if rows else None

    with web_server(url) as base:
        assert get(f"{base}/healthz")[0] == 200
        first = backend()
        assert first is not None  # the persistent connection (CONN_MAX_AGE)

        # PostgreSQL ends the idle connection (a restart, an admin, a failover): the health
        # check at the next request notices and reconnects, so no request fails at all.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [first])
        wait_for(lambda: backend() != first, timeout=10)
        status, _, body = get(f"{base}/healthz")
        assert status == 200, body
        assert backend() not in (None, first)

        # The database is unreachable for a while: 503 with Retry-After, not a 500 page.
        proxy.down()
        for path in ("/healthz", "/api/materials/", "/"):
            status, headers, body = get(f"{base}{path}")
            assert status == 503, (path, status, body[:500])
            assert headers.get("Retry-After") == "5" and b"database is unavailable" in body

        # Back: the very next request reconnects.
        proxy.up()
        status, _, body = get(f"{base}/healthz")
        assert status == 200, body
        assert get(f"{base}/api/materials/")[0] == 200
    proxy.down()


# --- Concurrency: retrains, promotions, batch classification ---------------------------------------


def test_two_trainings_of_one_split_at_once_run_one_after_the_other(bundled, broker, media):
    """Two retrains queued together on a worker that could run both: the second waits
    (still pending, with a "queued" message) while the first trains. The lock is a
    PostgreSQL advisory lock, which this test also holds itself for a while."""
    from materials.learning.training import TRAINING_LOCK_NAMESPACE, get_or_create_split, request_training

    dataset = get_or_create_split()
    lock_id = (TRAINING_LOCK_NAMESPACE << 32) | dataset.pk
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [lock_id])  # a training "in progress" elsewhere
    env = {"MEDIA_ROOT": str(media)}
    with celery_worker(queues=["train"], concurrency=2, extra_env=env) as (worker, queue):
        runs = [request_training("type-only", {"max_iter": 100}, dataset=dataset) for _ in range(2)]
        for run in runs:
            wait_for(lambda run=run: "queued" in TrainingRun.objects.get(pk=run.pk).progress_message, timeout=120)
        time.sleep(2)
        assert [TrainingRun.objects.get(pk=run.pk).status for run in runs] == [Status.PENDING] * 2
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_id])
        done = [wait_for(lambda run=run: finished(TrainingRun, run.pk), timeout=180) for run in runs]
    assert [run.status for run in done] == [Status.DONE, Status.DONE], [run.error for run in done]
    first, second = sorted(done, key=lambda run: run.started)
    assert first.finished <= second.started, "the two trainings overlapped"
    assert_artifacts_sound(media)


def test_concurrent_promotions_leave_exactly_one_production_model():
    if connection.vendor != "postgresql":
        pytest.skip("row locks and concurrent transactions need PostgreSQL")
    from django.db import connections

    from materials.learning.training import promote

    versions = [
        ModelVersion.objects.create(kind="type-only", status=ModelVersion.State.READY, artifact=f"models/m{i}.zip")
        for i in range(4)
    ]
    for round_ in range(5):
        if round_ % 2:  # alternate: from no production model, and from an existing one
            ModelVersion.objects.update(is_production=False)
        barrier = threading.Barrier(len(versions))
        errors: list[BaseException] = []

        def promote_one(pk: int, barrier=barrier, errors=errors) -> None:
            try:
                barrier.wait()
                promote(pk)
            except BaseException as error:  # reported below
                errors.append(error)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=promote_one, args=(v.pk,)) for v in versions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == [], errors
        assert ModelVersion.objects.filter(is_production=True).count() == 1


def test_two_workers_classifying_the_same_materials_write_each_prediction_once(bundled, broker, media):
    """Two jobs classify the same materials in the same chunks on two workers at once: the
    unique constraint on (material, model_version) and ``ON CONFLICT DO NOTHING`` keep one
    prediction per material, and the jobs' counts add up to exactly that."""
    from materials.learning.inference import chunked, classifiable_materials, unpredicted_ids
    from materials.learning.training import request_training, train_model_version
    from materials.tasks.classify import classify_chunk

    run = request_training("type-only", {"max_iter": 30})
    train_model_version(run.pk)  # here, in-process: no train worker in this test
    version = ModelVersion.objects.get(pk=run.model_version_id)
    expected = classifiable_materials(version).count()
    assert expected > 100
    chunks = chunked(unpredicted_ids(version), 20)

    env = {"MEDIA_ROOT": str(media)}
    with (
        celery_worker(queues=["classify"], extra_env=env) as (first, _),
        celery_worker(queues=["classify"], extra_env=env) as (second, _),
    ):
        logs = [log_file(first), log_file(second)]
        wait_for(lambda: all(" ready." in log.read_text(errors="replace") for log in logs), timeout=120)
        jobs = [Job.objects.create(kind=Job.Kind.CLASSIFY) for _ in range(2)]
        for job in jobs:
            job.mark_running()
            Job.objects.filter(pk=job.pk).update(result={"chunks": len(chunks), "chunks_done": 0, "predicted": 0})
        for ids in chunks:  # each chunk twice, back to back: the two workers take one copy each
            for job in jobs:
                classify_chunk.apply_async(args=[job.pk, version.pk, ids])
        jobs = [wait_for(lambda job=job: finished(Job, job.pk), timeout=180) for job in jobs]
    assert [job.status for job in jobs] == [Status.DONE, Status.DONE], [job.error for job in jobs]
    predictions = Prediction.objects.filter(model_version=version)
    assert predictions.count() == expected
    assert predictions.values("material_id").distinct().count() == expected
    assert sum(job.result["predicted"] for job in jobs) == expected  # each row written by exactly one worker
    chunks_run = [log.read_text(errors="replace").count("classify_chunk[") for log in logs]
    assert all(chunks_run), f"one worker did nothing: {chunks_run}"
