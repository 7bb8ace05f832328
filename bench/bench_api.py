"""REST predictions list under load: gunicorn, 16 concurrent keep-alive connections,
300,000 predictions in PostgreSQL.

Creates a scratch database (``screening_bench_api``), migrates it, and fills it with
CLEARLY SYNTHETIC data: 300,000 materials whose element sets and space groups are
resampled from the real Materiae catalogue (data/labels/materiae_labels.csv), random
labels (a third labelled), and one production model version with one random
prediction per material (300,000 rows), all with COPY. It then starts gunicorn on a
free port of 127.0.0.1 (gthread, 2 workers x 4 threads, each worker taking at most 8
of the connections; DEBUG off; throttling off so that the load is not refused) and
loads ``GET /api/predictions/`` (anonymous, the default page of 50, the production
model, best first) from 16 threads of this process, each with its own keep-alive
HTTP connection on a raw socket (a closed loop, as wrk does), for a fixed time after
a warm-up; every
answer must be a 200 page. A second, shorter run mixes filtered queries and a
cursor page. Then it stops gunicorn and drops the scratch database.

Prints (``name: value unit``):

    api_predictions_p95_ms: X ms        <- the figure; target <= 50 ms
    api_predictions_p50_ms: X ms
    api_predictions_p99_ms: X ms
    api_predictions_requests_per_second: X req/s
    api_predictions_filtered_p95_ms: X ms   (element + probability + label filters, and page 2 by cursor)

Usage: python bench/bench_api.py [--materials 300000] [--seconds 20] [--connections 16] [--keep]
Needs PostgreSQL: DATABASE_URL (its server is used, the database name is replaced),
or the local server at 127.0.0.1:5432 (user postgres). Load stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch_db import (  # noqa: E402
    REPO,
    copy_catalogue_materials,
    copy_random_predictions,
    drop_database,
    recreate_database,
    server_urls,
)

DATABASE = "screening_bench_api"
SYNTHETIC = "SYNTHETIC benchmark data (bench/bench_api.py), not real materials"
LIST_PATH = "/api/predictions/"
FILTERED_PATHS = [
    "/api/predictions/?element=O&probability_min=0.5",
    "/api/predictions/?label=unlabelled&probability_max=0.9",
    "/api/predictions/?element=Se&label=unlabelled",
    "/api/predictions/?space_group=225",
]


def fill(n_materials: int, seed: int = 0) -> dict:
    """Synthetic materials and one production model with one prediction each."""
    from django.db import connection

    from materials.models import Dataset, ModelVersion

    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        copy_catalogue_materials(cursor.cursor, n_materials, rng, SYNTHETIC, 2_000_000)
    material_seconds = time.perf_counter() - started
    dataset = Dataset.objects.create(name="synthetic-bench-api", content_hash="0" * 64)
    version = ModelVersion.objects.create(
        kind="svm-sg",
        name="synthetic-production",
        dataset=dataset,
        status="ready",
        threshold=0.5,
        is_production=True,
        metrics={"note": SYNTHETIC},
    )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        copy_random_predictions(cursor.cursor, version.pk, n_materials, rng)
        cursor.execute("VACUUM ANALYZE materials_material")
        cursor.execute("VACUUM ANALYZE materials_prediction")
    return {"materials_s": material_seconds, "predictions_s": time.perf_counter() - started, "version": version}


def explain_list(version) -> str:
    """The plan of the list's page query (what the view runs)."""
    from django.db import connection

    from materials.api.filters import production_model_id
    from materials.api.serializers import PREDICTION_VALUES
    from materials.models import Prediction

    queryset = (
        Prediction.objects.filter(model_version_id=production_model_id())
        .values(*PREDICTION_VALUES)
        .order_by("-probability", "id")[:51]
    )
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(database_url: str, port: int, workers: int, threads: int, per_worker: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DEBUG": "false",
        "DJANGO_ENV": "development",
        "CONN_MAX_AGE": "600",
        "LOG_LEVEL": "WARNING",
        # Throttling off: the bench is one client hammering the API on purpose.
        "API_THROTTLE_ANON": "",
        "API_THROTTLE_USER": "",
        "CELERY_BROKER_URL": "",
    }
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "screening.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        # gthread workers race to accept; without a cap one worker can take 14 of the 16
        # keep-alive connections while the other idles (per-connection medians 5 vs 25 ms).
        "--worker-connections",
        str(per_worker),
        "--keep-alive",
        "30",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", LIST_PATH)
            if connection.getresponse().status == 200:
                connection.close()
                return server
        except OSError:
            time.sleep(0.3)
    stop(server)
    raise RuntimeError("gunicorn did not answer within 60 s")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


class KeepAliveClient:
    """A minimal HTTP/1.1 keep-alive client on a raw socket: one pre-built GET, the
    headers read up to Content-Length, the body read in full. It costs the machine a
    third of what http.client does per request, and the load generator shares the
    server's two cores."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def get(self, request: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(request)
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the headers")
            buffer += chunk
        head, _, body = buffer.partition(b"\r\n\r\n")
        status = int(head[9:12])
        length = CONTENT_LENGTH.search(head)
        if length is None:
            raise ConnectionError("no Content-Length in the answer")
        size = int(length.group(1))
        while len(body) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed inside the body")
            body += chunk
        if CLOSE.search(head):
            self.close()
        return status, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
CLOSE = re.compile(rb"(?i)\r\nconnection:\s*close")


def load(port: int, paths: list[str], connections: int, seconds: float, warmup: float) -> tuple[list[float], int]:
    """``connections`` threads, one keep-alive connection each, requesting ``paths`` in
    turn for ``warmup + seconds``; returns the latencies (ms) after the warm-up and the
    number of failed responses."""
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\r\n".encode() for path in paths
    ]
    latencies: list[list[float]] = [[] for _ in range(connections)]
    failures = [0] * connections
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    def worker(slot: int) -> None:
        client = KeepAliveClient(port)
        turn = slot
        while True:
            now = time.monotonic()
            if now >= stop_at:
                break
            request = requests[turn % len(requests)]
            turn += 1
            began = time.perf_counter()
            try:
                status, body = client.get(request)
                ok = status == 200 and body.startswith(b'{"next":')
            except (OSError, ValueError):
                ok = False
                client.close()
            elapsed_ms = (time.perf_counter() - began) * 1000
            if now >= measure_from:
                latencies[slot].append(elapsed_ms)
                failures[slot] += 0 if ok else 1
        client.close()

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [value for values in latencies for value in values], sum(failures)


def cpu_ms(pids: list[int]) -> float:
    """User + system CPU time (ms) the processes have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total * 1000 / os.sysconf("SC_CLK_TCK")


def worker_pids(server: subprocess.Popen) -> list[int]:
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def backend_pids(admin_url: str) -> list[int]:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        rows = connection.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [DATABASE]).fetchall()
    return [pid for (pid,) in rows]


def check_page(port: int) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", LIST_PATH)
    body = json.loads(connection.getresponse().read())
    connection.close()
    return len(body["results"]), urlsplit(body["next"]).path + "?" + urlsplit(body["next"]).query


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materials", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured load time per scenario")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--keep", action="store_true", help=f"keep the {DATABASE} database afterwards")
    args = parser.parse_args()

    admin_url, bench_url = server_urls(DATABASE, "bench_api")
    recreate_database(admin_url, DATABASE)
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "screening.settings")
    os.environ["DEBUG"] = "false"
    sys.path.insert(0, str(REPO))
    server = None
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0, interactive=False)
        filled = fill(args.materials)
        plan = explain_list(filled["version"])
        connections.close_all()

        port = free_port()
        per_worker = -(-args.connections // args.workers)
        server = start_gunicorn(bench_url, port, args.workers, args.threads, per_worker)
        rows, second_page = check_page(port)
        assert rows == 50, rows
        load_before = os.getloadavg()[0]  # what else the machine is running
        load(port, [LIST_PATH], args.connections, args.warmup, 0.0)  # warm-up: connections, plans, caches
        server_pids, postgres_pids = worker_pids(server), backend_pids(admin_url)
        before = cpu_ms(server_pids), cpu_ms(postgres_pids), time.process_time()
        plain, plain_failures = load(port, [LIST_PATH], args.connections, args.seconds, 0.0)
        after = cpu_ms(server_pids), cpu_ms(postgres_pids), time.process_time()
        cpu_per_request = [(b - a) / max(len(plain), 1) for a, b in zip(before, after, strict=True)]
        cpu_per_request[2] *= 1000  # process_time is in seconds
        filtered, filtered_failures = load(
            port, [*FILTERED_PATHS, second_page], args.connections, args.seconds / 2, args.warmup
        )
    finally:
        if server is not None:
            stop(server)
        if not args.keep:
            drop_database(admin_url, DATABASE)

    print(f"api_predictions_rows: {args.materials} predictions")
    print(f"api_predictions_copy_rows_per_second: {args.materials / filled['predictions_s']:.0f} rows/s")
    print(f"api_predictions_connections: {args.connections} connections")
    print(f"api_predictions_server: gunicorn gthread, {args.workers} workers x {args.threads} threads")
    print(f"api_predictions_requests: {len(plain)} requests")
    print(f"api_predictions_failures: {plain_failures} responses")
    print(f"api_predictions_requests_per_second: {len(plain) / args.seconds:.0f} req/s")
    print(f"api_predictions_p50_ms: {np.percentile(plain, 50):.1f} ms")
    print(f"api_predictions_p95_ms: {np.percentile(plain, 95):.1f} ms")
    print(f"api_predictions_p99_ms: {np.percentile(plain, 99):.1f} ms")
    # CPU per request, which other work on the machine does not inflate as it does latency.
    print(f"api_predictions_cpu_gunicorn_ms_per_request: {cpu_per_request[0]:.2f} ms")
    print(f"api_predictions_cpu_postgres_ms_per_request: {cpu_per_request[1]:.2f} ms")
    print(f"api_predictions_cpu_client_ms_per_request: {cpu_per_request[2]:.2f} ms")
    print(f"api_predictions_machine_load_before: {load_before:.1f} (1-minute load average)")
    print(f"api_predictions_filtered_failures: {filtered_failures} responses")
    print(f"api_predictions_filtered_p50_ms: {np.percentile(filtered, 50):.1f} ms")
    print(f"api_predictions_filtered_p95_ms: {np.percentile(filtered, 95):.1f} ms")
    uses_index = "prediction_rank" in plan
    print(f"api_predictions_uses_rank_index: {'yes' if uses_index else 'no'}")
    if os.environ.get("BENCH_VERBOSE"):
        print(plan, file=sys.stderr)
    return 0 if plain_failures == 0 and filtered_failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
