"""Answer 503 while the database is unreachable, instead of a 500 page.

With ``CONN_HEALTH_CHECKS`` Django drops a dead connection at the start of the next
request, so once PostgreSQL is back the following request simply reconnects.
"""

import logging

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpResponse

logger = logging.getLogger(__name__)


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, (OperationalError, InterfaceError)) or (
            isinstance(exception, DatabaseError) and "connection" in str(exception).lower()
        ):
            logger.warning("database unavailable: %s", exception)
            response = HttpResponse(
                "The database is unavailable right now; please retry in a few seconds.\n",
                status=503,
                content_type="text/plain",
            )
            response["Retry-After"] = "5"
            return response
        return None
