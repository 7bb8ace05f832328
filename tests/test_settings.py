import json
import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = (
    "import django, json; django.setup(); from django.conf import settings; "
    "print(json.dumps({'engine': settings.DATABASES['default']['ENGINE'], "
    "'eager': settings.CELERY_TASK_ALWAYS_EAGER, 'debug': settings.DEBUG}))"
)


def probe(**env):
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_ENV"}}
    clean.update(env, DJANGO_SETTINGS_MODULE="screening.settings")
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=clean, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_environment_means_sqlite_and_in_process_tasks(tmp_path):
    assert probe(DATA_DIR=str(tmp_path)) == {"engine": "django.db.backends.sqlite3", "eager": True, "debug": True}


def test_database_and_broker_urls_switch_to_postgresql_and_a_real_broker(tmp_path):
    settings = probe(DATABASE_URL="postgres://u@127.0.0.1:5432/x", CELERY_BROKER_URL="redis://127.0.0.1:6379/0")
    assert settings["engine"] == "django.db.backends.postgresql"
    assert settings["eager"] is False


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    clean.update(DJANGO_ENV="production", DJANGO_SETTINGS_MODULE="screening.settings", DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=clean, capture_output=True, text=True)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_env_example_documents_every_variable_settings_read():
    text = (REPO / "screening" / "settings.py").read_text()
    import re

    read = set(re.findall(r'os\.environ\.get\("([A-Z_]+)"', text)) | set(
        re.findall(r'env_(?:bool|list)\("([A-Z_]+)"', text)
    )
    documented = {
        line.split("=")[0].lstrip("# ").strip()
        for line in (REPO / ".env.example").read_text().splitlines()
        if "=" in line
    }
    assert read - documented == set()
