"""schemathesis against the live OpenAPI schema: every operation, positive and negative
inputs, checked for server errors and for answers (status, content type, headers, body)
that the schema does not describe.

The schema is fetched from the running application (``GET /api/schema/``) and the
requests go through Django's full WSGI stack (middleware, authentication, throttling)
in this process, against a test database holding a real 40-compound subset of the
bundled data and a really trained production model (SVM-sg). Requests carry an
ordinary user's token: staff-only operations answer 403, the others do real work.

Bounded and seeded: ``SCHEMATHESIS_MAX_EXAMPLES`` examples per operation (default 100)
and Hypothesis seed ``SCHEMATHESIS_SEED`` (default 20261125).

Checks: all of schemathesis's defaults except ``positive_data_acceptance``, which
expects every schema-valid request to succeed. A classification request can satisfy
the JSON schema (ten numbers per array) and still be refused by the physics (energies
out of order, outside the element's K-edge window): such a 400 is the API working.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from django.core import signals
from django.core.cache import cache
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, seed, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.api_support import THROTTLE_OFF, trained_world_fixture  # noqa: F401

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "100"))
SEED = int(os.environ.get("SCHEMATHESIS_SEED", "20261125"))

# Generating the schema needs no database: it is loaded at collection, from the app itself.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())

pytestmark = pytest.mark.timeout(600)
CALLS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def report_calls(request):
    """After the run, say how many generated requests passed every check."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not CALLS:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(
            f"\nschemathesis: {sum(CALLS.values())} generated requests to {len(CALLS)} operations passed every check "
            f"(seed {SEED}, max_examples {MAX_EXAMPLES}, positive and negative data)"
        )


@pytest.fixture
def live_app(trained_world, db, settings, tmp_path):
    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": dict(THROTTLE_OFF)}
    # Uploaded releases land here; the test's transaction never commits, so the
    # screening pipeline (enqueued on commit) never starts.
    settings.MEDIA_ROOT = str(tmp_path / "media")
    # The WSGI handler closes "old" connections at each request's start and end; inside
    # the test's transaction that would close the connection under it (Django's test
    # client disconnects the same handler).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield {"Authorization": f"Token {trained_world.user_token}"}
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@seed(SEED)
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, live_app, report_calls):
    case.call_and_validate(headers=live_app, excluded_checks=[positive_data_acceptance])
    CALLS[case.operation.label] += 1
