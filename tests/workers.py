"""Start a real Celery worker against the test database and a real broker, and run a
private Redis server so that workers listening on the app's queue names (``train``,
``classify``, ...) never share them with another test run or a developer's worker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateRedis:
    """A throwaway ``redis-server`` that persists every write (AOF, fsync always)."""

    def __init__(self, directory: Path):
        self.directory, self.port = directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            shutil.which("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(self.directory),
        ]
        log = open(self.directory / "redis.log", "a")  # noqa: SIM115 - the server owns it until stop()
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.ping, timeout=20, interval=0.1)

    def ping(self) -> bool:
        try:
            return self.client().ping()
        except Exception:  # not up yet
            return False

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2)

    def stop(self) -> None:
        """A clean shutdown: Redis fsyncs its append-only file and exits."""
        if self.process is None:
            return
        try:
            self.client().shutdown()
        except Exception:  # redis-py raises ConnectionError as the server goes
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, down_s: float = 1.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def queue_lengths(self, *queues: str) -> dict[str, int]:
        client = self.client()
        return {queue: client.llen(queue) for queue in queues}


@contextmanager
def redirect_celery(url: str, monkeypatch):
    """Send this process's tasks to the broker at ``url``, and start workers on it."""
    from screening.celery import app

    saved = {key: app.conf[key] for key in ("broker_url", "task_always_eager")}
    monkeypatch.setenv("CELERY_BROKER_URL", url)  # celery_worker passes it to the worker

    def reset_pools() -> None:
        # kombu keeps one pool per broker URL: forget ours, the next send picks the URL's pool.
        app._pool = None
        app.amqp._producer_pool = None

    app.conf.broker_url, app.conf.task_always_eager = url, False
    reset_pools()
    try:
        yield
    finally:
        app.conf.update(saved)
        reset_pools()


@pytest.fixture
def private_broker(tmp_path, monkeypatch):
    """A fresh Redis server of this test's own, with the app and its workers pointed at it."""
    require_broker()
    if shutil.which("redis-server") is None:
        if os.environ.get("REQUIRE_WORKER_TESTS"):
            pytest.fail("REQUIRE_WORKER_TESTS is set but redis-server is not installed")
        pytest.skip("needs the redis-server binary for a private broker")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        with redirect_celery(server.url, monkeypatch):
            yield server
    finally:
        server.stop()
