"""Start a real Celery worker against the test database and the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import REPO


def require_broker() -> str:
    broker = os.environ.get("CELERY_BROKER_URL")
    if not broker:
        pytest.skip("needs a broker: set CELERY_BROKER_URL (CI does)")
    if connection.vendor != "postgresql":
        pytest.skip("a worker process cannot share SQLite's in-memory test database; set DATABASE_URL")
    return broker


def test_database_url() -> str:
    params = settings.DATABASES["default"]
    user = params.get("USER") or "postgres"
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    host, port = params.get("HOST") or "127.0.0.1", params.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{connection.settings_dict['NAME']}"


@contextmanager
def celery_worker(queues: list[str] | None = None, concurrency: int = 1, extra_env: dict | None = None):
    """Run ``celery worker`` in a subprocess on private queues; yields (process, queue name)."""
    broker = require_broker()
    queue = f"test-{uuid.uuid4().hex[:10]}"
    env = dict(os.environ, DATABASE_URL=test_database_url(), CELERY_BROKER_URL=broker, **(extra_env or {}))
    log_path = REPO / "var" / f"worker-{queue}.log"
    log_path.parent.mkdir(exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "screening",
        "worker",
        "-Q",
        ",".join(queues or [queue]),
        "--concurrency",
        str(concurrency),
        "--pool",
        "prefork",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "INFO",
        "-n",
        f"{queue}@%h",
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, (queues or [queue])[0]
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
