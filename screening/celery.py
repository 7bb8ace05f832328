"""The Celery application.

Configuration lives in ``screening/settings.py`` under the ``CELERY_`` prefix, so
there is one place to read it. Without ``CELERY_BROKER_URL`` the settings make every
task run in-process (``task_always_eager``), which is how the embedded default and
the SQLite test run work with no server installed.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "screening.settings")

app = Celery("screening")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
